"""Evaluate: a completed run's metrics on its test split (or validation), per-class scores,
confusion matrix, mistakes (with Grad-CAM heatmaps on request), the embedding of its features and
the export of its model with a parity check."""

import html

import streamlit as st

from engine.errors import UserError
from engine.runs import load_config
from ui import explain_views, run_services, state
from ui.export_views import export_section
from ui.run_views import (
    ALL_PAIRS,
    accuracy_interval_text,
    completed_runs,
    evaluation_accuracy_text,
    no_runs_message,
    pair_label,
    pair_options,
    per_class_table,
    percent,
    percent_column,
    pick_run,
    selectable_confusion_heatmap,
)
from ui.state import init_state
from ui.text import plain

init_state()


def pick_pair_from_matrix(options: list[str]) -> None:
    """A clicked heatmap cell filters the gallery to that true → predicted pair."""
    points = st.session_state["eval_matrix"].selection.get("points") or []
    pair = ALL_PAIRS
    if points:  # the cell's class names as Plotly showed them (escaped), back to the names
        pair = pair_label(html.unescape(str(points[0]["y"])), html.unescape(str(points[0]["x"])))
    st.session_state["eval_pair"] = pair if pair in options else ALL_PAIRS


st.title("Evaluate")
runs = completed_runs()
if not runs:
    no_runs_message("evaluate it")
    st.stop()

# ----- inputs ----------------------------------------------------------------------------------
run = pick_run(runs, "eval_run", state.EVAL_RUN, help="Completed runs, newest first.")
run_id = run["run_id"]
run_dir = run["path"]

# ----- the evaluation, computed once at the end of training --------------------------------------
evaluation = run_services.evaluation(run_dir)
if evaluation is None:
    problem = run_services.evaluation_problem(run_dir)
    if problem:
        st.error(f"This run's evaluation cannot be shown: {plain(problem)}. Evaluate it again.")
    else:
        st.info("This run has no evaluation yet.")
    if st.button(
        "Evaluate",
        key="eval_compute",
        type="primary",
        help="On the run's test split, or on its validation split when it has none.",
    ):
        try:
            with st.spinner("Evaluating the model..."):
                evaluation = run_services.evaluate(run_dir)
        except UserError as error:
            st.error(plain(error))
    if evaluation is None:
        st.stop()

# ----- metrics -----------------------------------------------------------------------------------
top_k = evaluation["top_k"]
split = evaluation["split"]
# The labels name the split, so a validation number never reads as a test one. Two rows of three:
# six cards in one row cut "62.50 %" to "62.5…" in a 1400 px window.
columns = [*st.columns(3), *st.columns(3)]
columns[0].metric(
    f"{split.capitalize()} accuracy",
    percent(evaluation["accuracy"]),
    help=evaluation_accuracy_text(evaluation),
    border=True,
)
if top_k > 1:
    columns[1].metric(
        f"{split.capitalize()} top-{top_k} accuracy",
        percent(evaluation["top_k_accuracy"]),
        border=True,
    )
else:  # two classes: top-1 is the accuracy again, so the card shows how sure that number is
    columns[1].metric(
        f"{split.capitalize()} accuracy, 95 % interval",
        accuracy_interval_text(evaluation),
        help=(
            f"Where the accuracy on all such images likely lies, from {evaluation['count']:,} "
            "images (Wilson score interval): runs whose intervals overlap widely may not differ. "
            "Compare tests two runs on the same images."
        ),
        border=True,
    )
columns[2].metric("Macro F1", evaluation["macro_avg"]["f1-score"], format="%.3f", border=True)
columns[3].metric("Weighted F1", evaluation["weighted_avg"]["f1-score"], format="%.3f", border=True)
columns[4].metric("Images evaluated", evaluation["count"], format="localized", border=True)
columns[5].metric("Split", plain(split), border=True)
tta = evaluation.get("tta", "none")
st.caption(
    f"{evaluation_accuracy_text(evaluation)} · model {plain(evaluation.get('model_file', 'best.keras'))}"
    + (" · flip test-time augmentation" if tta == "horizontal_flip" else "")
)
for warning in evaluation.get("warnings", []):
    st.warning(plain(warning))

st.subheader("Per class")
st.dataframe(
    per_class_table(evaluation),
    hide_index=True,
    column_config={
        "precision": percent_column(
            "precision", "Of the images predicted as this class, the share that is."
        ),
        "recall": percent_column("recall", "Of the images of this class, the share found."),
        "f1": percent_column("F1", "Harmonic mean of precision and recall."),
        "support": st.column_config.NumberColumn("images", format="%d"),
    },
)

st.subheader("Confusion matrix")
normalize = st.toggle(
    "Row-normalised (share of each true class)",
    key="eval_normalize",
    help="Off: image counts. On: each row sums to 1, so small classes read as clearly as large ones.",
)
options = pair_options(evaluation)
st.plotly_chart(
    selectable_confusion_heatmap(
        evaluation["confusion_matrix"], evaluation["class_names"], normalize
    ),
    key="eval_matrix",
    on_select=lambda: pick_pair_from_matrix(options),
    selection_mode="points",
)
st.caption("Click a cell off the diagonal to show its images in the gallery below.")

st.subheader("Most confused pairs")
if evaluation["most_confused"]:
    st.dataframe(
        evaluation["most_confused"],
        hide_index=True,
        column_config={
            "true": "true class",
            "predicted": "predicted as",
            "count": st.column_config.NumberColumn("images", format="%d"),
            "share_of_true": percent_column("share of the true class"),
        },
    )
else:
    st.success("No class is confused with another on this split.")

# ----- galleries ---------------------------------------------------------------------------------
try:
    data_config = load_config(run_dir).data
except UserError as error:
    st.error(plain(error))
    st.stop()

show_cam = explain_views.gradcam_toggle("eval_gradcam")
st.subheader(f"Misclassified images ({evaluation['misclassified_count']:,})")
pair = st.selectbox("Class pair (true → predicted)", options, key="eval_pair")
misclassified = [
    item
    for item in evaluation["misclassified"]
    if pair == ALL_PAIRS or pair_label(item["true"], item["predicted"]) == pair
]
if misclassified:
    st.caption(
        "Most confident mistakes first; captions read true → predicted (confidence) · file; "
        "Enlarge shows an image larger."
    )
    explain_views.evaluation_gallery(
        run_dir,
        data_config,
        misclassified,
        lambda item: f"{pair_label(item['true'], item['predicted'])} ({item['confidence']:.0%})",
        limit=48,
        key="eval_misclassified_enlarge",
        show_cam=show_cam,
    )
else:
    st.success("No misclassified images.")

st.subheader("Highest loss")
st.caption(
    "The images the model found hardest, right or wrong; captions read true → predicted (loss) "
    "· file."
)
explain_views.evaluation_gallery(
    run_dir,
    data_config,
    evaluation["highest_loss"],
    lambda item: f"{pair_label(item['true'], item['predicted'])} ({item['loss']:.2f})",
    limit=24,
    key="eval_highest_loss_enlarge",
    show_cam=show_cam,
)

explain_views.embedding_section(run_dir, data_config, show_cam)

export_section(run_dir)
