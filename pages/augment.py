"""Augment: choose the random augmentations of the next training run and preview them on samples."""

from __future__ import annotations

import dataclasses

import streamlit as st

from engine.config import AugmentConfig
from engine.errors import UserError
from ui import data_views, services
from ui.state import (
    AUGMENT_CONFIG,
    augment_config,
    data_config,
    init_state,
    set_augment_config,
)
from ui.text import plain

init_state()
SLIDERS = {  # field: (label, largest value, what it does)
    "rotation": ("Rotation", 0.5, "Largest turn, as a fraction of a full turn (0.1 is 36°)."),
    "zoom": ("Zoom", 0.5, "Largest zoom in or out, as a fraction of the side."),
    "translation": ("Translation", 0.5, "Largest shift, as a fraction of the height and width."),
    "brightness": ("Brightness", 0.5, "Largest change, as a fraction of the 0..255 range."),
    "contrast": ("Contrast", 0.9, "Largest contrast change factor."),
    "resized_crop": (
        "Random resized crop",
        0.9,
        "Largest share of the area cut away by a crop of any place and shape (3:4 to 4:3), "
        "resized back: zoom and shift in one.",
    ),
    "mixup": (
        "Mixup",
        1.0,
        "Blend each training image and its label with another one of its batch (the strength "
        "of the Beta distribution of the weights; 0.2 is typical). Not shown in the preview.",
    ),
    "random_crop": (
        "Random crop",
        0.5,
        "Fraction of the side cropped away at random, then resized back.",
    ),
}

st.title("Augment")
st.caption(
    "These settings go into the next training run (the Train page uses them). They change the "
    "training images only, differently in every epoch; validation and test images stay as they are."
)
if st.session_state.get(AUGMENT_CONFIG) is None:
    st.caption(
        "They start from the recipe the engine chose for this dataset (photos get flips, zoom, "
        "shifts and contrast, or a random resized crop under 1,000 training images; small colour "
        "images get flips and shifts; grey images such as digits get small shifts and zoom, no "
        "flips)."
    )

# Widgets open on the saved settings: their values are dropped when the user leaves the page.
for field, value in dataclasses.asdict(augment_config()).items():
    st.session_state.setdefault(f"augment_{field}", value)


def reset() -> None:
    for field, value in dataclasses.asdict(AugmentConfig()).items():
        st.session_state[f"augment_{field}"] = value


flips_column, *slider_columns = st.columns([1, 2, 2])
with flips_column:
    st.checkbox(
        "Horizontal flip", key="augment_horizontal_flip", help="Mirror left to right at random."
    )
    st.checkbox(
        "Vertical flip", key="augment_vertical_flip", help="Mirror top to bottom at random."
    )
    st.button("Turn all off", key="augment_reset", icon=":material/restart_alt:", on_click=reset)
for number, (field, (label, largest, help)) in enumerate(SLIDERS.items()):
    slider_columns[number % 2].slider(
        label, 0.0, largest, step=0.01, key=f"augment_{field}", help=help
    )
augment = AugmentConfig(
    **{
        field.name: st.session_state[f"augment_{field.name}"]
        for field in dataclasses.fields(AugmentConfig)
    }
)
set_augment_config(augment)

# ----- preview -----------------------------------------------------------------------------
st.subheader("Preview")
st.caption(
    "Made by the same Keras preprocessing layers that training uses (engine.augment), on train "
    "images at the size the model sees."
)
config = data_config()
st.session_state.setdefault("augment_seed", 0)


def reshuffle() -> None:
    st.session_state["augment_seed"] += 1


count_column, shuffle_column = st.columns([3, 1], vertical_alignment="bottom")
count = count_column.slider("Augmented versions per image", 4, 12, 6, key="augment_count")
shuffle_column.button(
    "Other samples", key="augment_shuffle", icon=":material/shuffle:", on_click=reshuffle
)
seed = st.session_state["augment_seed"]

try:
    dataset = services.get_dataset(config)
    samples = services.samples(config, "train", 3, seed=seed)
except UserError as error:
    st.error(plain(error))
    st.stop()

if not augment.enabled:
    st.info(
        "Augmentation is off: training sees the images as they are. Turn on a control above to preview it."
    )
for sample in samples:
    st.markdown(f"**{plain(sample['label'])}** · {plain(sample['name'])}")
    try:
        if augment.enabled:
            images = services.augment_preview(config, sample["index"], augment, count, seed)
        else:
            images = services.item_images(config, [sample["index"]], size=dataset.image_size)
    except UserError as error:
        st.error(plain(error))
        continue
    if images[0] is None:
        st.warning("This image cannot be decoded; see the load report on the Data page.")
        continue
    captions = ["original", *(f"version {number}" for number in range(1, len(images)))]
    # Nearest-neighbour enlargement keeps small images (digits are 32 pixels) sharp on screen.
    st.image([data_views.enlarge(image, 112) for image in images], caption=captions, width=112)
