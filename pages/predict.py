"""Predict: classify uploaded or camera images with a completed run's best model, say which look
unlike its training images, and show where the model looked (Grad-CAM)."""

import streamlit as st

from engine.errors import UserError
from ui import explain_views, figures, run_services, state
from ui.run_views import completed_runs, no_runs_message, pick_run, prediction_table
from ui.state import init_state
from ui.text import csv_text, plain

init_state()

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
WHAT_TO_UPLOAD = "Upload a JPEG, PNG, GIF, BMP, WebP or TIFF image."
DETAILED = 24  # images drawn with their own chart; the table below holds them all

st.title("Predict")
runs = completed_runs()
if not runs:
    no_runs_message("predict with it")
    st.stop()

# ----- inputs ----------------------------------------------------------------------------------
run = pick_run(
    runs,
    "predict_run",
    state.PREDICT_RUN,
    help="Completed runs, newest first; predictions use the run's best model.",
)
run_id = run["run_id"]

try:
    predictor = run_services.predictor(run["path"])
except UserError as error:
    st.error(plain(error))
    st.stop()

uploads = st.file_uploader(
    "Images",
    type=IMAGE_TYPES,
    accept_multiple_files=True,
    key="predict_files",
    help="One or many images; each is resized the way the run's training images were.",
)
sources = [(upload.name, upload.getvalue()) for upload in uploads or []]
if st.toggle("Use the camera", key="predict_use_camera", help="Asks the browser for the camera."):
    photo = st.camera_input("Take a photo", key="predict_camera")
    if photo is not None:
        sources.append(("camera photo", photo.getvalue()))

classes = len(predictor.class_names)
top_k = st.slider(
    "Top-k",
    1,
    min(10, classes),
    min(3, classes),
    key="predict_top_k",
    help="How many of the most likely classes to show per image.",
)
show_cam = explain_views.gradcam_toggle("predict_gradcam")
if not sources:
    st.info(f"Upload images to classify them into the run's {classes} classes.")
    st.stop()

# ----- predictions -----------------------------------------------------------------------------
try:
    with st.spinner("Predicting..."):
        results = predictor.predict(sources, top_k, with_images=True)
except UserError as error:
    st.error(plain(error))
    st.stop()
explain_views.familiarity_caption(predictor.familiarity_problem)
overlays = explain_views.prediction_overlays(run["path"], results[:DETAILED]) if show_cam else {}

for position, result in enumerate(results[:DETAILED]):
    name = result["file"]
    if "error" in result:
        advice = "" if "allowed format" in result["error"] else f" {WHAT_TO_UPLOAD}"
        st.error(f"{plain(name)}: {plain(result['error'])}.{advice}")
        continue
    best = result["top_k"][0]
    with st.container(border=True):
        picture, chart = st.columns([1, 3], vertical_alignment="center")
        # The decoded image the model saw, never the upload's bytes: a browser or st.image cannot
        # draw every file the engine reads (a 16-bit PNG, a TIFF).
        if position in overlays:
            picture.image(overlays[position], caption=f"{plain(name)} · Grad-CAM", width=160)
        else:
            picture.image(result["image"], caption=plain(name), width=160)
        chart.markdown(f"**{plain(best['label'])}** · {best['probability']:.1%}")
        explain_views.familiarity_note(result, chart)
        bars = figures.probability_bars(result["top_k"])
        chart.plotly_chart(bars, key=f"predict_bars_{position}")
if len(sources) > DETAILED:
    st.caption(f"The first {DETAILED} images are drawn above; the table holds all {len(sources)}.")
for result in results[DETAILED:]:
    if "error" in result:
        st.error(f"{plain(result['file'])}: {plain(result['error'])}.")

st.subheader("Results")
table = explain_views.with_familiarity(prediction_table(results), results)
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "probability": st.column_config.ProgressColumn(
            "probability", format="percent", min_value=0.0, max_value=1.0
        )
    },
)
st.download_button(
    "Download CSV",
    csv_text(table),  # cells such as =cmd() are prefixed with ' so a spreadsheet shows them
    file_name=f"predictions-{run_id}.csv",
    mime="text/csv",
    key="predict_download",
    icon=":material/download:",
)
