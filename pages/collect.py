"""Collect: make a dataset Teachable Machine's way: name classes, add photos from the camera or
from files, then train on them like any folder of class folders."""

from __future__ import annotations

import streamlit as st

from engine.data import collect
from engine.errors import UserError
from ui import collect_views
from ui.state import data_config, init_state
from ui.text import plain

init_state()
st.title("Collect")
st.caption(
    "Name a class for each kind of thing to recognise, add photos of each from the camera or "
    "from files, then use them as the dataset. Photos are saved in "
    f"{plain(collect.collections_root())}, one folder per class."
)

collection = collect_views.collection_picker()
if collection is None:
    collect_views.show_messages()
    st.stop()
try:
    classes = collect.list_classes(collection)
except UserError as error:
    st.error(plain(error))
    st.stop()

st.subheader("Classes")
collect_views.class_adder(collection)
collect_views.show_messages()  # what the last change did, beside the inputs that made it
if not classes:
    st.info("Add a class for each kind of thing to recognise, such as cat and dog.")
    st.stop()

st.subheader("Add photos")
collect_views.photo_inputs(collection, list(classes))

st.subheader("Photos")
for number, (name, photos) in enumerate(classes.items()):
    collect_views.class_section(collection, number, name, photos)

st.subheader("Train on these photos")
collect_views.load_section(collection, data_config().spec)
