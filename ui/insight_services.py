"""Cached engine calls behind the paired comparison (Compare page) and the export (Evaluate page).

Keys carry the modification times of the files a result is read from, so a new evaluation or
export is read once. A UserError (runs that cannot be paired) is never cached: the next call asks
again.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import streamlit as st

from engine import compare_stats, export
from engine.jsonio import DamagedFile, read_json_object


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(max_entries=16, show_spinner=False)
def _compare(run_a: str, run_b: str, stamps: tuple[float, ...]) -> dict:
    return compare_stats.compare_runs(run_a, run_b)


def compare(run_a: Path, run_b: Path) -> dict:
    """engine.compare_stats.compare_runs of two run folders; a UserError when they cannot pair."""
    files = ("evaluation.json", "predictions.npz", "data_manifest.json", "status.json")
    stamps = tuple(_mtime(Path(run) / file) for run in (run_a, run_b) for file in files)
    return _compare(str(run_a), str(run_b), stamps)


def export_model(run_dir: Path, format: str, progress: export.Progress) -> dict:
    """Export the run's model into its exports/<format> folder (TensorFlow runs in this process)."""
    return export.export(run_dir, format, progress=progress)


def existing_export(run_dir: Path, format: str) -> dict | None:
    """The run's earlier export in this format (export.json, plus "folder"), or None."""
    folder = export.default_folder(run_dir, format)
    try:
        info = read_json_object(folder / "export.json")
    except DamagedFile:
        return None
    return None if info is None else {**info, "folder": str(folder)}


@st.cache_data(max_entries=4, show_spinner=False)
def _zip(folder: str, name: str, mtime: float) -> bytes:
    folder_path = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder_path.rglob("*")):
            if file.is_file():
                archive.write(file, Path(name) / file.relative_to(folder_path))
    return buffer.getvalue()


def export_zip(folder: str | Path, name: str) -> bytes:
    """The export folder as a zip archive, its files in a folder called name; built once."""
    return _zip(str(folder), name, _mtime(Path(folder) / "export.json"))
