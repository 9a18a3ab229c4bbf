"""What every comparison shares: scratch folders, data subsets, alternating timing, result rows, reports.

A comparison module exposes `run(data_root, quick, repeats) -> list[dict]`; each dict is a row made
by `result_row()`. `write_reports()` turns the rows and `machine_info()` into bench/results/latest.*.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = PROJECT_ROOT.parent / "shared" / "data"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

T = TypeVar("T")


class BenchError(Exception):
    """A problem the person running the benchmarks can fix; the message is one sentence."""


# ----- folders and data ------------------------------------------------------------------
def require_folder(data_root: Path, name: str) -> Path:
    """The dataset folder data_root/name, or a BenchError saying what to pass instead."""
    folder = Path(data_root) / name
    if not folder.is_dir():
        raise BenchError(
            f"The dataset folder {folder} does not exist; pass --data-root with a folder that "
            f"holds {name}/ (the layout is in bench/README.md)."
        )
    return folder


@contextlib.contextmanager
def scratch_space(prefix: str) -> Iterator[Path]:
    """A temporary folder whose cache/ and runs/ the engine uses (STUDIO_*_DIR), removed afterwards.

    A fresh cache folder means a "first pass" really decodes, and nothing a benchmark writes ever
    lands in the user's own cache or runs folder.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    saved = {key: os.environ.get(key) for key in ("STUDIO_CACHE_DIR", "STUDIO_RUNS_DIR")}
    os.environ["STUDIO_CACHE_DIR"] = str(folder / "cache")
    os.environ["STUDIO_RUNS_DIR"] = str(folder / "runs")
    try:
        yield folder
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)


def image_files(folder: Path) -> list[Path]:
    """Every image file under folder, sorted (symbolic links to files count)."""
    return sorted(path for path in Path(folder).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def subset_folder(
    source: Path, target: Path, per_class: int | None, splits: tuple[str, ...] | None = None
) -> Path:
    """A copy of source's class layout made of symbolic links to its first per_class files per class.

    With per_class None and no split filter, source itself is returned. `splits` keeps only those
    split folders (train, test) of a split layout; the engine then carves the missing ones.
    """
    if per_class is None and splits is None:
        return Path(source)
    children = sorted(d for d in Path(source).iterdir() if d.is_dir())
    split_layout = any(d.name in ("train", "test", "validation", "val") for d in children)
    groups = (
        [(d.name, d) for d in children if splits is None or d.name in splits]
        if split_layout
        else [("", Path(source))]
    )
    for split_name, split_dir in groups:
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            destination = target / split_name / class_dir.name
            destination.mkdir(parents=True, exist_ok=True)
            for file in image_files(class_dir)[:per_class]:
                (destination / file.name).symlink_to(file.resolve())
    return target


def warm_file_cache(files: list[Path]) -> None:
    """Read every file once, so no contender pays for the disk and all see the same page cache."""
    for file in files:
        file.read_bytes()


def subprocess_environment(**extra: str) -> dict[str, str]:
    """The environment for `python -m engine ...` children: the project importable, TF quiet."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), environment.get("PYTHONPATH")])
    )
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    environment.update(extra)
    return environment


def run_engine_train(arguments: list[str], environment: dict[str, str]) -> tuple[dict, Path]:
    """Run `python -m engine train ARGS` in a child process; (its summary JSON, its run directory)."""
    completed = subprocess.run(
        [sys.executable, "-m", "engine", "train", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    lines = completed.stdout.strip().splitlines()
    summaries = [line for line in lines if line.startswith("{")]
    if completed.returncode != 0 or not summaries:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"python -m engine train {' '.join(arguments)} failed: {tail}")
    return json.loads(summaries[-1]), Path(lines[-1])


# ----- timing ----------------------------------------------------------------------------
def alternate(contenders: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Run each contender once per repeat, rotating who goes first, so drift hits all alike."""
    names = list(contenders)
    measured: dict[str, list[T]] = {name: [] for name in names}
    for repeat in range(max(1, repeats)):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            print(f"  {name} (repeat {repeat + 1}/{max(1, repeats)})", flush=True)
            measured[name].append(contenders[name]())
    return measured


def seconds_of(action: Callable[[], object]) -> float:
    """Wall-clock seconds one call of action takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# ----- result rows -----------------------------------------------------------------------
def result_row(
    name: str,
    metric: str,
    value: float | None,
    *,
    baseline: float | None = None,
    higher_is_better: bool = True,
    goal: str = "report only",
    met: bool | None = None,
    notes: str = "",
) -> dict:
    """One comparison. ratio says how many times better value is than baseline (>1 is better)."""
    ratio = None
    if value is not None and baseline:
        ratio = value / baseline if higher_is_better else baseline / max(value, 1e-12)
    return {
        "name": name,
        "metric": metric,
        "value": _rounded(value),
        "baseline": _rounded(baseline),
        "ratio": None if ratio is None else round(ratio, 2),
        "goal": goal,
        "met": met,
        "notes": notes,
    }


def _rounded(value: float | None) -> float | None:
    if value is None:
        return None
    return round(float(value), 1 if abs(value) >= 100 else 3)


def machine_info() -> dict:
    """Cores, memory, TensorFlow and device, date and load: what the numbers depend on."""
    import psutil
    import tensorflow as tf

    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "tensorflow": tf.__version__,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def markdown_table(rows: list[dict], machine: dict) -> str:
    """The rows as a markdown table under a line describing the machine."""
    head = (
        f"Machine: {machine.get('cores')} cores, {machine.get('memory_gb')} GB, "
        f"{machine.get('device')}, TensorFlow {machine.get('tensorflow')}, {machine.get('date')}, "
        f"load average {machine.get('load_average_at_start')} at start, "
        f"{machine.get('load_average_at_end')} at end; "
        f"`{machine.get('command')}` took {machine.get('seconds')} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in machine.get("seconds_per_comparison", {}).items())
        + ")."
    )
    columns = ("name", "metric", "value", "baseline", "ratio", "goal", "met", "notes")
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        cells = [
            "–" if row[key] is None else str(row[key]).replace("|", "/") for key in columns[:6]
        ]
        lines.append("| " + " | ".join([*cells, met, row["notes"].replace("|", "/")]) + " |")
    return "\n".join(lines) + "\n"


def write_reports(rows: list[dict], machine: dict, folder: Path = RESULTS_DIR) -> str:
    """Write latest.json and latest.md into folder; return the markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    markdown = markdown_table(rows, machine)
    for name, text in (
        ("latest.json", json.dumps({"machine": machine, "results": rows}, indent=2) + "\n"),
        ("latest.md", markdown),
    ):
        temporary = folder / f"{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, folder / name)
    return markdown
