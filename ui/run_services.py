"""Cached engine calls about runs: the listing, evaluations, training histories and predictors.

Keys are run paths with the file's modification time, so a new evaluation or model is read once.
A damaged evaluation.json reads as none, and evaluation_problem() says why.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine import runs
from engine.jsonio import DamagedFile, read_json_object


def list_runs(runs_dir: Path) -> list[dict]:
    """Every run with its state; cheap (a few small JSON files each), so not cached."""
    return runs.list_runs(runs_dir)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


# What the pages read of an evaluation without .get(): one without them cannot be shown.
EVALUATION_KEYS = [
    "accuracy",
    "top_k",
    "top_k_accuracy",
    "split",
    "count",
    "class_names",
    "per_class",
    "confusion_matrix",
    "macro_avg",
    "weighted_avg",
    "most_confused",
    "misclassified",
    "misclassified_count",
    "highest_loss",
]


@st.cache_data(max_entries=32, show_spinner=False)
def _evaluation(run_dir: str, mtime: float) -> dict | None:
    path = Path(run_dir) / "evaluation.json"
    evaluation = read_json_object(path)  # DamagedFile is not cached: the next call reads again
    missing = [key for key in EVALUATION_KEYS if evaluation is not None and key not in evaluation]
    if missing:
        raise DamagedFile(path, f"evaluation.json lacks {', '.join(missing[:3])}")
    return evaluation


def evaluation(run_dir: Path) -> dict | None:
    """The run's evaluation.json; None when there is none or it is damaged (evaluation_problem)."""
    try:
        return _evaluation(str(run_dir), _mtime(Path(run_dir) / "evaluation.json"))
    except DamagedFile:
        return None


def evaluation_problem(run_dir: Path) -> str | None:
    """Why the run's evaluation.json cannot be used (a clause naming it), or None."""
    try:
        _evaluation(str(run_dir), _mtime(Path(run_dir) / "evaluation.json"))
    except DamagedFile as error:
        return error.reason
    return None


@st.cache_data(max_entries=64, show_spinner=False)
def _history(run_dir: str, mtime: float) -> tuple[list[dict], list[dict]]:
    return runs.read_history(Path(run_dir))


def history(run_dir: Path) -> tuple[list[dict], list[dict]]:
    return _history(str(run_dir), _mtime(Path(run_dir) / "history.jsonl"))


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _predictor(run_dir: str, mtime: float):
    from engine.predict import Predictor

    return Predictor(run_dir)


def predictor(run_dir: Path):
    """The run's best model with its preprocessing, loaded once per model file version."""
    from engine.predict import run_model_path

    return _predictor(str(run_dir), _mtime(run_model_path(run_dir)))


def evaluate(run_dir: Path) -> dict:
    """Evaluate a run now (for runs whose evaluation is missing)."""
    from engine.evaluation import evaluate_run

    return evaluate_run(run_dir)
