"""Temporaries named after their writer: a killed writer's are removed by the next, a live one's
never (engine/staging.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from engine import staging
from engine.data.cache import DecodedCache
from engine.data.folders import load_folder_source
from engine.processes import process_start_time


def ended_process() -> tuple[int, int]:
    """The pid and start time of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    started = process_start_time(child.pid)
    child.wait()
    assert started is not None
    return child.pid, started


def test_a_killed_writers_temporaries_go_and_a_live_ones_stay(tmp_path):
    target = tmp_path / "images.npy"
    pid, started = ended_process()
    me = os.getpid()
    dead_folder = tmp_path / f".images.npy.{pid}-{started}.abc.tmp"
    dead_folder.mkdir()
    (dead_folder / "part").write_bytes(b"x" * 100)
    dead_file = tmp_path / f".images.npy.{pid}-{started}.def.tmp"
    dead_file.write_bytes(b"half")
    # A live pid with another start time is a reused pid: its writer is gone too.
    reused = tmp_path / f".images.npy.{me}-{process_start_time(me) + 1}.ghi.tmp"
    reused.write_bytes(b"half")
    live = tmp_path / f".images.npy.{me}-{process_start_time(me)}.jkl.tmp"
    live.write_bytes(b"in progress")
    untagged = tmp_path / ".images.npy.mno.tmp"  # not made by engine.staging
    untagged.write_bytes(b"someone else's")
    other_target = tmp_path / f".labels.npy.{pid}-{started}.pqr.tmp"
    other_target.write_bytes(b"another target's")

    made = staging.staging_file(target)

    assert not dead_folder.exists() and not dead_file.exists() and not reused.exists()
    assert live.read_bytes() == b"in progress"
    assert untagged.read_bytes() == b"someone else's"
    assert other_target.read_bytes() == b"another target's"
    assert made.is_file() and made.stat().st_size == 0
    assert made.name.startswith(f".images.npy.{staging.owner_tag()}.") and made.name.endswith(
        ".tmp"
    )
    # This process's own temporary is never a leftover to itself.
    assert staging.remove_leftovers(target) == []
    assert made.exists()


def test_a_staging_folder_is_new_and_empty(tmp_path):
    target = tmp_path / "deeper" / "export"
    first, second = staging.staging_folder(target), staging.staging_folder(target)
    assert first != second and first.parent == target.parent
    assert list(first.iterdir()) == [] and first.is_dir()


def test_a_decode_killed_midway_leaves_nothing_after_the_next_build(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for number in range(3):
            image = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "photos" / name / f"{number}.png")
    source = load_folder_source(str(tmp_path / "photos"))
    cache = DecodedCache(source, tmp_path / "cache", 16)
    pid, started = ended_process()
    cache.directory.mkdir(parents=True)
    leftover = cache.directory / f".{cache.path.name}.{pid}-{started}.x.tmp"
    leftover.write_bytes(bytes(4096))  # what a decode killed with SIGKILL leaves

    cache.build()

    assert not leftover.exists()
    assert [p.name for p in cache.directory.iterdir() if p.name.endswith(".tmp")] == []
    cache.open()
    assert cache.images().shape == (6, 16, 16, 3)
