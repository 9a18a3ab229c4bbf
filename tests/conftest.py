"""Shared fixtures: an isolated cache and runs folder per test, and small image folders made on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("STUDIO_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(cache))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    # The dashboard's saved settings (ui/settings_store.py): never the user's own file.
    monkeypatch.setenv(
        "STUDIO_SETTINGS_FILE", str(tmp_path_factory.mktemp("config") / "settings.json")
    )
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    return cache


def pattern_image(class_id: int, seed: int, size: int = 24) -> np.ndarray:
    """A class-dependent picture: class 0 bright on the left, class 1 on the right, 2 at the top..."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    half = size // 2
    regions = [
        (slice(None), slice(0, half)),
        (slice(None), slice(half, None)),
        (slice(0, half), slice(None)),
        (slice(half, None), slice(None)),
    ]
    rows, cols = regions[class_id % 4]
    image[rows, cols, class_id % 3] = 220
    return image


def write_class_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "fox"),
    per_class: int = 12,
    size: int = 24,
    suffix: str = ".png",
) -> Path:
    for class_id, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(pattern_image(class_id, seed=class_id * 1000 + i, size=size)).save(
                folder / f"{name}_{i:03d}{suffix}"
            )
    return root


@pytest.fixture
def class_folder(tmp_path) -> Path:
    return write_class_folder(tmp_path / "animals")


PROJECT = Path(__file__).resolve().parent.parent


def engine_cli(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m engine ARGS` from the project folder, with env on top of this process's."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
