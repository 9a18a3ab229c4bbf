"""Compare: several completed runs side by side: scores, speed, a paired test of two of them,
curves, per-class F1, config changes."""

import streamlit as st

from engine.errors import UserError
from ui import compare_stats_views, compare_views, figures, insight_services, run_services
from ui.run_views import (
    completed_runs,
    config_differences,
    no_runs_message,
    run_accuracy_text,
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
    format_func=lambda run_id: (
        f"{compare_views.run_name(by_id[run_id])} · {run_accuracy_text(by_id[run_id])}"
    ),
    key="compare_runs",
    help="Completed runs, newest first; the two newest are picked to start with.",
)
if not chosen:
    st.info("Pick two or more runs to compare.")
    st.stop()
if len(chosen) == 1:
    st.caption("One run picked; add another to compare.")
selected = [by_id[run_id] for run_id in chosen]
# Every figure and table below names a run by its short name and draws it in its one colour.
names = compare_views.short_names(selected)
colours = figures.run_colours(chosen)
for run in selected:
    problem = run.get("damaged") or run_services.evaluation_problem(run["path"])
    if problem:
        st.warning(f"Run {plain(compare_views.run_name(run))} is damaged: {plain(problem)}.")

# ----- the side-by-side table ------------------------------------------------------------------
table = compare_views.comparison_table(selected, names)
st.dataframe(
    compare_views.highlight_best(table),
    column_config={
        names[run["run_id"]]: st.column_config.TextColumn(
            names[run["run_id"]], help=f"{compare_views.run_name(run)} (run {run['run_id']})"
        )
        for run in selected
    },
)
if len(selected) > 1:
    st.caption(
        "★ marks the best value of a row: the highest accuracy, F1 and speed, the lowest loss "
        "and training time."
    )

# ----- a paired test: is one run really better, or is it chance? -------------------------------
st.subheader("Is one run really better?")
if len(selected) < 2:
    st.caption("Pick a second run to test whether their accuracies really differ.")
else:
    run_a, run_b = compare_stats_views.pick_pair(selected, names)
    try:
        result = insight_services.compare(run_a["path"], run_b["path"])
    except UserError as error:
        st.warning(plain(error))
    else:
        compare_stats_views.show_comparison(result, names, colours)

# ----- curves ----------------------------------------------------------------------------------
st.subheader("Training curves")
series = [(run["run_id"], *run_services.history(run["path"])) for run in selected]
steps_per_epoch = {run["run_id"]: run["status"].get("steps_per_epoch") for run in selected}
st.plotly_chart(
    compare_views.curves_figure(series, steps_per_epoch, colours, names), key="compare_curves"
)

# ----- per-class F1, when the runs classify the same classes -----------------------------------
st.subheader("Per-class F1")
evaluations = {run["run_id"]: run_services.evaluation(run["path"]) for run in selected}
class_lists = {tuple(e["class_names"]) for e in evaluations.values() if e}
if all(evaluations.values()) and len(class_lists) == 1:
    figure = compare_views.per_class_figure(evaluations, colours, names)
    st.plotly_chart(figure, key="compare_per_class")
elif not all(evaluations.values()):
    missing = ", ".join(plain(names[run_id]) for run_id, e in evaluations.items() if not e)
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
    st.dataframe(compare_views.config_differences(differences, names))
