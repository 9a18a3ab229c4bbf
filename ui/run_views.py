"""Pieces shared by the pages that show runs: pickers, accuracy wording, tables, galleries."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from engine import run_admin
from ui import figures, run_services, state
from ui.data_views import display_name
from ui.text import plain

ALL_PAIRS = "all"


def completed_runs() -> list[dict]:
    """Completed runs of the runs folder, newest first (as engine.runs.list_runs gives them)."""
    return [run for run in run_services.list_runs(state.runs_dir()) if run["state"] == "completed"]


def pick_run(runs: list[dict], key: str, remembered_key: str, help: str) -> dict:
    """A run selectbox that remembers its choice across pages under remembered_key."""
    by_id = {run["run_id"]: run for run in runs}
    remembered = st.session_state.get(remembered_key)
    run_id = st.selectbox(
        "Run",
        list(by_id),
        index=list(by_id).index(remembered) if remembered in by_id else 0,
        format_func=lambda run_id: run_label(by_id[run_id]),
        key=key,
        help=help,
    )
    st.session_state[remembered_key] = run_id
    return by_id[run_id]


def percent(value: float) -> str:
    """The one way the pages write an accuracy: 0.98888 -> "98.89 %"."""
    return f"{value * 100:.2f} %"


def accuracy_text(accuracy: float | None, label: str = "accuracy") -> str:
    """ "98.89 % test accuracy": the number and the split it comes from, side by side."""
    return "not evaluated" if accuracy is None else f"{percent(accuracy)} {label}"


def run_accuracy_text(run: dict) -> str:
    """A listed run's headline (engine.runs.list_runs); runs from before the split was recorded
    say only "accuracy"."""
    split = run.get("accuracy_split")
    return accuracy_text(run.get("accuracy"), f"{split} accuracy" if split else "accuracy")


def evaluation_accuracy_text(evaluation: dict) -> str:
    """An evaluation's accuracy with its split label, such as "97.50 % validation accuracy, the
    split that chose the model" (the Evaluate page, and the Train page's final line)."""
    # Evaluations from before split_label existed name only their split.
    label = evaluation.get("split_label") or f"{evaluation.get('split', 'evaluated')} accuracy"
    return accuracy_text(evaluation.get("accuracy"), label)


def accuracy_interval_text(evaluation: dict) -> str:
    """The accuracy's 95 % interval, such as "82.5-88.6 %" ("-" without a count); evaluations
    from before the interval was stored get it from their accuracy and count."""
    interval, count = evaluation.get("accuracy_interval"), evaluation.get("count")
    if not (isinstance(interval, list) and len(interval) == 2):
        if not isinstance(count, int) or not isinstance(evaluation.get("accuracy"), float):
            return "-"
        from engine.evaluation import accuracy_interval

        interval = accuracy_interval(round(evaluation["accuracy"] * count), count)
    return f"{interval[0] * 100:.1f}-{interval[1] * 100:.1f} %"


def run_label(run: dict) -> str:
    return f"{run_admin.display_name(run)} · {run_accuracy_text(run)}"


def no_runs_message(purpose: str) -> None:
    """Say there is nothing to work on yet and point to the Train page."""
    st.info(
        f"No completed runs in {plain(state.runs_dir())} yet; train a model first to {purpose}."
    )
    try:
        st.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
    except StreamlitPageNotFoundError:  # the page runs alone (AppTest), without the router's pages
        st.caption("Open **Train** in the sidebar to start a run.")


def pair_label(true: str, predicted: str) -> str:
    return f"{true} → {predicted}"


def pair_options(evaluation: dict) -> list[str]:
    """The gallery filter: all, the most-confused pairs, then other pairs with mistakes."""
    pairs = [
        pair_label(row["true"], row["predicted"]) for row in evaluation.get("most_confused", [])
    ]
    for item in evaluation.get("misclassified", []):
        label = pair_label(item["true"], item["predicted"])
        if label not in pairs:
            pairs.append(label)
    return [ALL_PAIRS, *pairs]


def percent_column(label: str, help: str | None = None):
    return st.column_config.ProgressColumn(
        label, help=help, format="percent", min_value=0.0, max_value=1.0
    )


def per_class_table(evaluation: dict) -> pd.DataFrame:
    return pd.DataFrame(evaluation["per_class"])[["class", "precision", "recall", "f1", "support"]]


def recent_runs_rows(runs: list[dict]) -> list[dict]:
    """The Home page's table: one row per run, newest first, its accuracy named by split."""
    rows = []
    for run in runs:
        config = run.get("config") or {}
        rows.append(
            {
                "name": run_admin.display_name(run),
                "model": (config.get("model") or {}).get("name"),
                "dataset": display_name((config.get("data") or {}).get("spec") or ""),
                "state": run.get("state"),
                "accuracy": run_accuracy_text(run) if run.get("accuracy") is not None else None,
                "created (UTC)": (run.get("created_at") or "")[:19].replace("T", " "),
                "run": run["run_id"],  # the folder's name, which the command line takes
                "damaged": run.get("damaged"),
            }
        )
    return rows


def runs_table_rows(runs: list[dict]) -> list[dict]:
    """The Runs page's table: name, state, dataset, model, accuracy with its split, date, notes."""
    return [
        {
            "name": row["name"],
            "state": row["state"],
            "dataset": row["dataset"],
            "model": row["model"],
            "accuracy": row["accuracy"] or "—",
            "created (UTC)": row["created (UTC)"],
            "notes": run_notes(run),
            "folder": run["run_id"],
        }
        for run, row in zip(runs, recent_runs_rows(runs), strict=True)
    ]


def run_notes(run: dict) -> str:
    """A listed run's notes ("" without any)."""
    notes = run.get("notes")
    return notes if isinstance(notes, str) else ""


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"epochs": 3}} -> {"train.epochs": 3}."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(configs: dict[str, dict]) -> pd.DataFrame:
    """The config keys whose values differ between runs: one row per key, one column per run."""
    flat = {run_id: flatten(config) for run_id, config in configs.items()}
    keys = sorted({key for values in flat.values() for key in values})
    differing = [
        key for key in keys if len({repr(values.get(key)) for values in flat.values()}) > 1
    ]
    # Strings keep mixed values (numbers, booleans, missing keys) readable in one column.
    table = {
        run_id: ["—" if key not in values else str(values[key]) for key in differing]
        for run_id, values in flat.items()
    }
    return pd.DataFrame(table, index=pd.Index(differing, name="setting"))


def prediction_table(results: list[dict]) -> pd.DataFrame:
    """One row per file: its top-1 label and probability, all top-k labels, or why it failed."""
    rows = []
    for result in results:
        top_k = result.get("top_k") or []
        rows.append(
            {
                "file": result["file"],
                "top-1 label": top_k[0]["label"] if top_k else "",
                "probability": top_k[0]["probability"] if top_k else None,
                "top-k": ", ".join(
                    f"{item['label']} ({item['probability']:.1%})" for item in top_k
                ),
                "error": result.get("error", ""),
            }
        )
    table = pd.DataFrame(rows, columns=["file", "top-1 label", "probability", "top-k", "error"])
    return table if table["error"].any() else table.drop(columns="error")


def selectable_confusion_heatmap(matrix: list[list[int]], class_names: list[str], normalize: bool):
    """ui.figures.confusion_heatmap with a transparent marker on every cell.

    Streamlit reports no selection for clicks on a Plotly heatmap (streamlit/streamlit#8760), but
    it does for scatter points, so the markers make a clicked cell come back as (x, y): the class
    names as Plotly shows them (figures.plot_text), which html.unescape turns back into names.
    """
    figure = figures.confusion_heatmap(matrix, class_names, normalize)
    heatmap = figure.data[0]
    names = list(heatmap.x)  # the class names as the heatmap shows them
    figure.add_scatter(
        x=[predicted for _ in names for predicted in names],
        y=[true for true in names for _ in names],
        text=[value for row in heatmap.text for value in row],
        mode="markers",
        marker=dict(symbol="square", size=18, color="rgba(0,0,0,0)"),
        hovertemplate=heatmap.hovertemplate,
        showlegend=False,
    )
    heatmap.update(hoverinfo="skip", hovertemplate=None)
    return figure
