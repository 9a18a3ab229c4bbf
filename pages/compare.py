"""Compare: several completed runs side by side: scores, speed, curves, per-class F1, config changes."""

import streamlit as st

from ui import figures, run_services
from ui.run_views import (
    comparison_table,
    completed_runs,
    config_differences,
    no_runs_message,
    run_label,
)
from ui.state import init_state
from ui.text import plain

init_state()

st.title("Compare runs")
runs = completed_runs()
if not runs:
    no_runs_message("compare runs")
    st.stop()

# ----- inputs ----------------------------------------------------------------------------------
by_id = {run["run_id"]: run for run in runs}
chosen = st.multiselect(
    "Runs",
    list(by_id),
    default=list(by_id)[:2],
    format_func=lambda run_id: run_label(by_id[run_id]),
    key="compare_runs",
    help="Completed runs, newest first; the two newest are picked to start with.",
)
if not chosen:
    st.info("Pick two or more runs to compare.")
    st.stop()
if len(chosen) == 1:
    st.caption("One run picked; add another to compare.")
selected = [by_id[run_id] for run_id in chosen]
for run in selected:
    problem = run.get("damaged") or run_services.evaluation_problem(run["path"])
    if problem:
        st.warning(f"Run {plain(run['run_id'])} is damaged: {plain(problem)}.")

# ----- the side-by-side table ------------------------------------------------------------------
st.dataframe(comparison_table(selected))

# ----- curves ----------------------------------------------------------------------------------
st.subheader("Training curves")
series = [(run["run_id"], *run_services.history(run["path"])) for run in selected]
steps_per_epoch = {run["run_id"]: run["status"].get("steps_per_epoch") for run in selected}
st.plotly_chart(figures.training_curves(series, steps_per_epoch), key="compare_curves")

# ----- per-class F1, when the runs classify the same classes -----------------------------------
st.subheader("Per-class F1")
evaluations = {run["run_id"]: run_services.evaluation(run["path"]) for run in selected}
class_lists = {tuple(e["class_names"]) for e in evaluations.values() if e}
if all(evaluations.values()) and len(class_lists) == 1:
    per_run = {
        run_id: {row["class"]: row["f1"] for row in e["per_class"]}
        for run_id, e in evaluations.items()
    }
    figure = figures.per_class_bars(per_run)
    st.plotly_chart(figure, key="compare_per_class")
elif not all(evaluations.values()):
    missing = ", ".join(plain(run_id) for run_id, e in evaluations.items() if not e)
    st.caption(f"Not every run has an evaluation ({missing}); evaluate it on the Evaluate page.")
else:
    st.caption(
        "These runs classify different classes, so their per-class scores are not comparable."
    )

# ----- config differences ----------------------------------------------------------------------
st.subheader("Config differences")
differences = config_differences({run["run_id"]: run["config"] for run in selected})
if len(selected) < 2:
    st.caption("Pick a second run to see which settings differ.")
elif differences.empty:
    st.caption("The runs were trained with identical configs.")
else:
    st.dataframe(differences)
