"""The Compare page's pieces: run names, one colour per run, the measures table with each row's
best value marked, and the figures, all keyed by run id."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ui import figures
from ui.data_views import display_name as dataset_name
from ui.run_views import run_accuracy_text

try:  # names come from the runs' admin module once it exists; status.json's "name" until then
    from engine.run_admin import display_name as _engine_display_name
except ImportError:
    _engine_display_name = None

BEST_MARK = " ★"
SHORT_NAME = 28  # characters of a run name in a column header; the whole name is in its help


def run_name(run: dict) -> str:
    """A run's readable name: its "name" in status.json when it has one, else its run id."""
    if _engine_display_name is not None:
        return str(_engine_display_name(run))
    status = run.get("status") or {}
    return str(run.get("name") or status.get("name") or run.get("run_id") or status.get("run_id"))


def short_names(runs: list[dict]) -> dict[str, str]:
    """run id -> a short name for headers and legends, unique among the runs given."""
    names: dict[str, str] = {}
    for run in runs:
        name = run_name(run)
        if len(name) > SHORT_NAME:  # its start and end: a run id's date and its unique suffix
            name = name[: SHORT_NAME - 11] + "…" + name[-10:]
        unique, number = name, 2
        while unique in names.values():
            unique, number = f"{name} ({number})", number + 1
        names[run["run_id"]] = unique
    return names


# measure -> (the number compared, how the cell shows it, "max" or "min" is best; None: unmarked)
def _measures(run: dict) -> dict[str, tuple[float | None, str, str | None]]:
    status, config = run["status"], run["config"]

    def number(value) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) else None

    def shown(value, template: str) -> str:
        return "—" if number(value) is None else template.format(value)

    parameters = (status.get("parameters") or {}).get("total")
    return {
        "model": (None, str((config.get("model") or {}).get("name") or "—"), None),
        "dataset": (None, dataset_name(str((config.get("data") or {}).get("spec") or "—")), None),
        "accuracy": (number(run.get("accuracy")), run_accuracy_text(run), "max"),
        "macro F1": (number(run.get("macro_f1")), shown(run.get("macro_f1"), "{:.3f}"), "max"),
        "best validation loss": (
            number(status.get("best_val_loss")),
            shown(status.get("best_val_loss"), "{:.4f}"),
            "min",
        ),
        "parameters": (number(parameters), shown(parameters, "{:,}"), None),
        "training time": (
            number(status.get("train_seconds")),
            shown(status.get("train_seconds"), "{:,.1f} s"),
            "min",
        ),
        "images/s": (
            number(status.get("images_per_second")),
            shown(status.get("images_per_second"), "{:,.0f}"),
            "max",
        ),
        "epochs": (None, shown(status.get("epochs_done"), "{}"), None),
        "best epoch": (None, shown(status.get("best_epoch"), "{}"), None),
    }


def best_runs(runs: list[dict]) -> dict[str, set[str]]:
    """measure -> the run ids holding its best value (the highest, the lowest for a loss or a
    time); only measures where at least two runs have a number and they differ."""
    measures = {run["run_id"]: _measures(run) for run in runs}
    best: dict[str, set[str]] = {}
    for measure, (_, _, better) in next(iter(measures.values()), {}).items():
        values = {
            run_id: rows[measure][0]
            for run_id, rows in measures.items()
            if rows[measure][0] is not None
        }
        if better is None or len(values) < 2 or len(set(values.values())) < 2:
            continue
        target = max(values.values()) if better == "max" else min(values.values())
        best[measure] = {run_id for run_id, value in values.items() if value == target}
    return best


def comparison_table(runs: list[dict], names: dict[str, str]) -> pd.DataFrame:
    """One row per measure, one column per run (its short name); the best value of a row ends in ★."""
    best = best_runs(runs)
    columns = {}
    for run in runs:
        cells = {}
        for measure, (_, text, _) in _measures(run).items():
            marked = run["run_id"] in best.get(measure, ())
            cells[measure] = text + BEST_MARK if marked else text
        columns[names[run["run_id"]]] = cells
    return pd.DataFrame(columns).rename_axis("measure")


def highlight_best(table: pd.DataFrame):
    """The table as a Styler whose marked cells have a green background."""

    def colour(cell: object) -> str:
        marked = isinstance(cell, str) and cell.endswith(BEST_MARK)
        return "background-color: rgba(44, 160, 44, 0.22)" if marked else ""

    return table.style.map(colour)


def config_differences(table: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """ui.run_views.config_differences with its run-id columns renamed to the runs' short names."""
    return table.rename(columns=names)


def curves_figure(
    series: list[tuple[str, list[dict], list[dict]]],
    steps_per_epoch: dict[str, int],
    colours: dict[str, str],
    names: dict[str, str],
) -> go.Figure:
    return figures.training_curves(series, steps_per_epoch, colours=colours, labels=names)


def per_class_figure(
    evaluations: dict[str, dict], colours: dict[str, str], names: dict[str, str]
) -> go.Figure:
    """Per-class F1 bars of runs that classify the same classes."""
    per_run = {
        run_id: {row["class"]: row["f1"] for row in evaluation["per_class"]}
        for run_id, evaluation in evaluations.items()
    }
    return figures.per_class_bars(per_run, colours=colours, labels=names)
