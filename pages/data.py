"""Data: choose a dataset, then see its classes and splits, sample images, its health (files you
exclude or relabel), image sizes and load report."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.config import RESIZE_MODES, DataConfig
from engine.errors import UserError
from ui import data_views, edits_services, figures, services, uploads
from ui.data_views import SOURCES
from ui.state import data_config, init_state, runs_dir, set_data_config
from ui.text import plain

init_state()

st.title("Data")
st.caption(
    "Every other page works on the dataset loaded here. Loading reads file names and headers; "
    "images are decoded only when they are shown or when training starts."
)

# ----- choose a source -------------------------------------------------------------------
# The form opens on the loaded dataset: widget values are dropped when the user leaves the page.
current = data_config()
current_source = data_views.source_of(current.spec)
for key, value in {
    "data_source": current_source,
    "data_tfds_name": current.spec.removeprefix("tfds:") if current_source == SOURCES[1] else "",
    "data_tfds_train": current.train_split,
    "data_tfds_validation": current.validation_split,
    "data_tfds_test": current.test_split,
    "data_tfds_dir": current.data_dir,
    "data_folder": current.spec if current_source == SOURCES[2] else "",
    "data_image_size": current.image_size,
    "data_resize": current.resize,
    "data_validation_fraction": current.validation_fraction,
    "data_test_fraction": current.test_fraction,
    "data_split_seed": current.split_seed,
}.items():
    st.session_state.setdefault(key, value)

source = st.radio("Source", SOURCES, horizontal=True, key="data_source")
spec, missing, tfds_fields, upload = "", "", {}, None
if source == SOURCES[0]:
    spec = "digits"
    st.caption("scikit-learn's 1,797 handwritten digits: 8 × 8 pixels, 10 classes, works offline.")
elif source == SOURCES[1]:
    name = st.text_input(
        "Dataset name",
        key="data_tfds_name",
        placeholder="tf_flowers, eurosat/rgb, beans, cats_vs_dogs",
        help="Any image classification dataset of TensorFlow Datasets; the first load downloads it.",
    )
    spec = f"tfds:{name.strip().removeprefix('tfds:')}" if name.strip() else ""
    missing = "Type a TensorFlow Datasets name such as tf_flowers or eurosat/rgb."
    train_column, validation_column, test_column = st.columns(3)
    tfds_fields = {
        "train_split": train_column.text_input(
            "Train split",
            key="data_tfds_train",
            placeholder="train[:80%]",
            help="Empty picks the dataset's own train split.",
        ),
        "validation_split": validation_column.text_input(
            "Validation split",
            key="data_tfds_validation",
            placeholder="train[80%:90%]",
            help="Empty uses the dataset's own, or carves it out of train.",
        ),
        "test_split": test_column.text_input(
            "Test split",
            key="data_tfds_test",
            placeholder="train[90%:]",
            help="Empty uses the dataset's own, or carves it out of train.",
        ),
        "data_dir": st.text_input(
            "Data folder",
            key="data_tfds_dir",
            placeholder="~/tensorflow_datasets",
            help="Where TensorFlow Datasets keeps its files; empty is its default.",
        ),
    }
    tfds_fields = {field: value.strip() for field, value in tfds_fields.items()}
elif source == SOURCES[2]:
    path = st.text_input(
        "Folder",
        key="data_folder",
        placeholder="/home/me/pictures/animals",
        help="A folder with one subfolder of images per class; a path to a .zip or .npz works too.",
    )
    spec = path.strip()
    missing = "Type the path of a folder that holds one subfolder of images per class."
else:
    upload = st.file_uploader(
        "Archive",
        type=["zip", "npz"],
        key="data_upload",
        help="A .zip of class folders, or a .npz with X_train and y_train arrays (X_test, y_test optional).",
    )
    missing = "Choose a .zip or .npz file to upload first."

with st.expander("Image size and splits"):
    size_column, resize_column = st.columns(2)
    image_size = size_column.number_input(
        "Image size in pixels (0 = auto)",
        min_value=0,
        max_value=512,
        step=8,
        key="data_image_size",
        help="The square side the model sees; auto takes the median side, within 32..128.",
    )
    resize = resize_column.radio(
        "Resize",
        list(RESIZE_MODES),
        horizontal=True,
        key="data_resize",
        help="squash stretches to a square; crop cuts the centre square first.",
    )
    validation_column, test_column, seed_column = st.columns(3)
    validation_fraction = validation_column.number_input(
        "Validation fraction",
        min_value=0.0,
        max_value=0.45,
        step=0.05,
        format="%.2f",
        key="data_validation_fraction",
        help="Taken from train, stratified, when the source has no validation split.",
    )
    test_fraction = test_column.number_input(
        "Test fraction",
        min_value=0.0,
        max_value=0.45,
        step=0.05,
        format="%.2f",
        key="data_test_fraction",
        help="Taken from train, stratified, when the source has no test split.",
    )
    split_seed = seed_column.number_input(
        "Split seed",
        min_value=0,
        step=1,
        key="data_split_seed",
        help="The same seed gives the same split.",
    )

if st.button("Load", key="data_load", type="primary", icon=":material/download:"):
    if upload is not None:
        in_use = uploads.uploads_in_use(data_config().spec, runs_dir())
        spec = str(uploads.save_upload(upload.name, upload.getvalue(), in_use))
    if not spec:
        st.error(missing)
        st.stop()
    candidate = DataConfig(
        spec=spec,
        image_size=int(image_size),
        resize=resize,
        validation_fraction=float(validation_fraction),
        test_fraction=float(test_fraction),
        split_seed=int(split_seed),
        **tfds_fields,
    )
    candidate = edits_services.saved_edits(candidate)[0]  # the choices saved for this dataset
    # Load indexes the source again every time, so files added or removed since show.
    bar = st.progress(0.0, text=f"Indexing {plain(data_views.display_name(spec))}...")
    try:
        if spec.startswith("tfds:"):
            with st.spinner(
                f"Loading {plain(spec)}: the first time, TensorFlow Datasets downloads and prepares it, which can take minutes..."
            ):
                services.reload_dataset(candidate, data_views.progress_reporter(bar, "Indexing"))
        else:
            services.reload_dataset(candidate, data_views.progress_reporter(bar, "Reading headers"))
    except UserError as error:
        message = str(error)
        if upload is not None:  # name the file as the user knows it, not its cached copy
            message = message.replace(Path(spec).name, upload.name)
        st.error(plain(message))
        st.stop()
    finally:
        bar.empty()
    set_data_config(candidate)  # the sample filters are keyed on the dataset, so they start afresh

# ----- the current dataset ---------------------------------------------------------------
# With the exclusions and relabels saved for it, which another tab or the CLI may have changed.
config, edits_problem = edits_services.sync_working_config()
try:
    dataset = services.get_dataset(config)
    summary = services.dataset_summary(config)
except UserError as error:
    st.error(plain(error))
    st.stop()

st.divider()
st.header(plain(data_views.display_name(config.spec)))
images_column, classes_column, size_column, skipped_column = st.columns(4)
images_column.metric("Images", f"{summary['images']:,}")
classes_column.metric("Classes", dataset.num_classes)
size_column.metric(
    "Training image size",
    f"{dataset.image_size} × {dataset.image_size}",
    help="Chosen from the data (median side, within 32..128)."
    if config.image_size == 0
    else "Set above.",
)
skipped_column.metric("Skipped files", len(summary["skipped"]))

st.subheader("Images per class and split")
counts_figure = figures.class_counts_bar(summary["counts"])
st.plotly_chart(counts_figure, key="data_counts")
train_counts = summary["counts"]["train"]
if summary["imbalance"] > 1.5:
    largest = max(train_counts, key=train_counts.get)
    smallest = min(train_counts, key=train_counts.get)
    st.warning(
        f"The classes are imbalanced: in train, {plain(largest)} has {train_counts[largest]:,} images and "
        f"{plain(smallest)} has {train_counts[smallest]:,} ({summary['imbalance']:.1f} times fewer). "
        "Consider class weights on the Train page, or more images of the small classes."
    )

# ----- sample images ---------------------------------------------------------------------
st.subheader("Sample images")
shown = data_views.sample_section(config, dataset, summary)

# ----- health: the audit, and the files you exclude or relabel ------------------------------
st.subheader("Health")
try:
    from ui.health_views import health_section
except ModuleNotFoundError as missing:  # a build without the audit view
    if missing.name != "ui.health_views":
        raise
    health_section = None
if health_section is not None:
    health_section(config, runs_dir())
data_views.edits_section(config, dataset, summary, shown, edits_problem)

# ----- image sizes and load report -------------------------------------------------------
st.subheader("Original image sizes")
statistics = summary["statistics"]
if statistics.get("images"):
    table_column, chart_column = st.columns([2, 3])
    table_column.dataframe(data_views.statistics_rows(statistics), hide_index=True)
    modes = ", ".join(f"{plain(mode)} ({count:,})" for mode, count in statistics["modes"].items())
    table_column.caption(
        f"Colour modes: {modes}. Distinct sizes: {statistics['distinct_sizes']:,}."
    )
    if statistics["distinct_sizes"] > 1:
        chart_column.plotly_chart(data_views.original_sizes_figure(config), key="data_sizes")
    else:
        width, height = int(statistics["width"]["min"]), int(statistics["height"]["min"])
        chart_column.info(f"Every image is {width} × {height} pixels.")
else:
    st.info("This source tells nothing about the original sizes.")

st.subheader("Load report")
for warning in summary["warnings"]:
    st.warning(plain(warning))
if summary["edits"]["excluded"] or summary["edits"]["relabelled"]:
    st.info(plain(summary["edits"]["summary"]))
if summary["skipped"]:
    st.caption("Files left out and why.")
    st.dataframe(summary["skipped"], hide_index=True)
else:
    st.success("No files were skipped.")
if not summary["cached"]:
    st.caption(
        "Files that fail to decode are listed here too once training has decoded the dataset."
    )
