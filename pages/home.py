"""Home: what the studio does, what TensorFlow sees, the current dataset and the recent runs."""

from __future__ import annotations

import streamlit as st

from engine.errors import UserError
from ui import data_views, run_services, services
from ui.run_views import recent_runs_rows
from ui.state import data_config, init_state, runs_dir
from ui.text import plain

init_state()

st.title("Image Classification Studio")
st.write(
    "Load an image dataset, look at it, choose augmentations, train Keras classifiers and "
    "compare, evaluate and try them, all on this machine."
)

st.subheader("What TensorFlow sees")
devices = services.devices()
tensorflow_column, cores_column, gpus_column = st.columns(3)
tensorflow_column.metric("TensorFlow", devices["tensorflow"])
cores_column.metric("CPU cores", devices["cpu_cores"])
gpus_column.metric("GPUs", len(devices["gpus"]))
if devices["gpus"]:
    st.success(
        "Training runs on "
        + ", ".join(f"{gpu['model']} ({gpu['name']})" for gpu in devices["gpus"])
    )
else:
    st.info("No GPU: training runs on the CPU.")

st.subheader("Current dataset")
config = data_config()
try:
    dataset = services.get_dataset(config)
    st.markdown(
        f"**{plain(data_views.display_name(config.spec))}**: {dataset.num_classes} classes, "
        f"{len(dataset.labels):,} images."
    )
except UserError as error:
    st.markdown(f"**{plain(data_views.display_name(config.spec))}**")
    st.warning(f"It cannot be loaded: {plain(error)}")
data_views.page_link("pages/data.py", "Change it on the Data page", ":material/photo_library:")

st.subheader("Recent runs")
rows = recent_runs_rows(run_services.list_runs(runs_dir()))
if rows:
    st.dataframe(rows[:20], hide_index=True)
    data_views.page_link("pages/runs.py", "Manage runs on the Runs page", ":material/list_alt:")
    damaged = [row for row in rows[:20] if row["damaged"]]
    if damaged:
        st.caption(
            f"{len(damaged)} of these runs {'is' if len(damaged) == 1 else 'are'} damaged; the "
            "table's last column says which file and why."
        )
else:
    st.info(f"No runs in {plain(runs_dir())} yet: train one on the Train page.")

st.subheader("Pages")
with st.grid(3, min_column_width=220):
    for label, icon, description in (
        (
            "Data",
            ":material/photo_library:",
            "Choose a dataset; see its classes, samples, sizes and health.",
        ),
        ("Collect", ":material/photo_camera:", "Make classes from camera photos or uploads."),
        ("Augment", ":material/auto_fix_high:", "Choose augmentations and preview them."),
        ("Train", ":material/model_training:", "Train a model and watch it learn."),
        ("Runs", ":material/list_alt:", "Name, annotate, continue or delete runs."),
        ("Evaluate", ":material/fact_check:", "Metrics, confusion matrix and mistakes."),
        ("Compare", ":material/compare:", "Runs side by side, and whether one is really better."),
        ("Predict", ":material/center_focus_strong:", "Classify your own images, with Grad-CAM."),
    ):
        with st.container(border=True):
            data_views.page_link(f"pages/{label.lower()}.py", f"**{label}**", icon, description)
