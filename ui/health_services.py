"""The data health audit for the Data page: run with a progress callback, kept per dataset.

The audit runs only when the user asks (it decodes the dataset and can take a minute); its report
is kept for every session under the dataset's key (with the load generation, so Load audits
anew), the run and the label-issue choice. The engine keeps its measurements on disk, so an
audit run again after a restart reads them instead of measuring again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from engine.config import DataConfig
from ui import services

KEPT_REPORTS = 8  # audit reports kept in memory, the oldest dropped first


@st.cache_resource(show_spinner=False)
def _reports() -> dict[str, dict]:
    """Audit reports by report_key, shared by every session alike."""
    return {}


def report_key(config: DataConfig, run_dir: Path | None, label_issues: bool) -> str:
    return json.dumps(
        {
            "dataset": services.dataset_key(config),
            "run": str(run_dir) if run_dir else "",
            "label_issues": bool(label_issues or run_dir),
        }
    )


def stored_report(config: DataConfig, run_dir: Path | None, label_issues: bool) -> dict | None:
    """The report of an audit already run with these choices, or None."""
    return _reports().get(report_key(config, run_dir, label_issues))


def run_audit(
    config: DataConfig,
    run_dir: Path | None,
    label_issues: bool,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Audit the current dataset now (engine.data.health.audit) and keep its report.

    Raises the engine's UserError (a wrong run, an undecodable split) with its sentence.
    """
    from engine.data.health import audit

    dataset = services.get_dataset(config)
    # A run's features import Keras, which must not be imported by two threads at once.
    importing = services.TENSORFLOW_IMPORT if run_dir else contextlib.nullcontext()
    with importing:
        if run_dir:
            import keras  # noqa: F401
    report = audit(dataset, run_dir=run_dir, label_issues=label_issues, progress=progress)
    reports = _reports()
    reports[report_key(config, run_dir, label_issues)] = report
    while len(reports) > KEPT_REPORTS:
        reports.pop(next(iter(reports)))
    return report


def feature_runs(config: DataConfig, runs_dir: Path) -> list[dict]:
    """Completed runs trained on this dataset's spec, newest first: {"name", "path"} each."""
    from engine.runs import list_runs

    found = []
    for run in list_runs(runs_dir):
        data = (run.get("config") or {}).get("data") or {}
        if run["state"] == "completed" and not run["damaged"] and data.get("spec") == config.spec:
            found.append({"name": run["name"], "path": run["path"]})
    return found
