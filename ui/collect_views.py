"""The Collect page's pieces: the collection picker, classes, photo inputs, thumbnails, loading.

Every change is a widget callback that calls engine.data.collect and leaves what it did in
MESSAGES, shown once after the rerun. Class names are the user's text: they reach Markdown only
through plain(). Every widget key starts with `collect_`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from engine.config import DataConfig
from engine.data import collect
from engine.data.images import IMAGE_SUFFIXES
from engine.errors import UserError
from ui import data_views, services
from ui.state import set_data_config
from ui.text import plain

COLLECTION = "collect_collection"  # the collection's name (the picker's key)
NEW_NAME = "collect_new_name"
CLASS_NAME = "collect_class_name"
TARGET = "collect_target"  # the class new photos go to
ROUND = "collect_round"  # bumped after photos are added: new, empty photo inputs
CONFIRM_REMOVE = "collect_confirm_remove"  # the class whose removal waits for a confirmation
MESSAGES = "collect_messages"  # [(kind, text)] of the last change, shown once
THUMBNAILS_PER_ROW = 8
THUMBNAILS_SHOWN = 24  # per class, the newest


def say(kind: str, text: str) -> None:
    st.session_state.setdefault(MESSAGES, []).append((kind, text))


def show_messages() -> None:
    for kind, text in st.session_state.pop(MESSAGES, []):
        getattr(st, kind)(plain(text))


def collection_picker() -> Path | None:
    """The collection to work on, or None while a new one is being named."""
    names = collect.list_collections()
    if st.session_state.get(COLLECTION) not in [*names, None]:
        st.session_state.pop(COLLECTION)  # removed on the disk since
    choice = st.selectbox(
        "Collection",
        [*names, None],
        key=COLLECTION,
        format_func=lambda name: "New collection..." if name is None else name,
        help=f"Each collection is a folder of class folders in {plain(collect.collections_root())}.",
    )
    if choice is not None:
        return collect.collections_root() / choice
    st.session_state.setdefault(NEW_NAME, "my-photos")
    name_column, button_column = st.columns([3, 1], vertical_alignment="bottom")
    name_column.text_input("Name of the new collection", key=NEW_NAME, max_chars=collect.NAME_MAX)
    button_column.button(
        "Create", key="collect_create", icon=":material/create_new_folder:", on_click=_create
    )
    return None


def _create() -> None:
    try:
        folder = collect.create_collection(st.session_state.get(NEW_NAME, ""))
    except UserError as error:
        say("error", str(error))
    else:
        st.session_state[COLLECTION] = folder.name


def class_adder(collection: Path) -> None:
    name_column, button_column = st.columns([3, 1], vertical_alignment="bottom")
    name_column.text_input(
        "New class", key=CLASS_NAME, max_chars=collect.NAME_MAX, placeholder="cat"
    )
    button_column.button(
        "Add class",
        key="collect_add_class",
        icon=":material/add:",
        on_click=_add_class,
        args=(collection,),
    )


def _add_class(collection: Path) -> None:
    try:
        name = collect.add_class(collection, st.session_state.get(CLASS_NAME, ""))
    except UserError as error:
        say("error", str(error))
    else:
        st.session_state[CLASS_NAME] = ""
        st.session_state[TARGET] = name  # the next photos go to the class just made


def photo_inputs(collection: Path, classes: list[str]) -> None:
    """Pick a class, then add photos to it from files or the camera; each is kept at once."""
    if st.session_state.get(TARGET) not in classes:
        st.session_state[TARGET] = classes[0]
    target = st.selectbox("Add photos to class", classes, key=TARGET)
    round_number = st.session_state.setdefault(ROUND, 0)
    files = st.file_uploader(
        "Photos from files",
        type=sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES),
        accept_multiple_files=True,
        key=f"collect_files_{round_number}",
        max_upload_size=collect.MAX_PHOTO_BYTES // 1_000_000,
    )
    incoming = [(file.name, file.getvalue()) for file in files or []]
    if st.toggle("Use the camera", key="collect_use_camera", help="Asks the browser for it."):
        photo = st.camera_input("Take a photo", key=f"collect_camera_{round_number}")
        if photo is not None:
            incoming.append(("The camera photo", photo.getvalue()))
    if incoming:
        add_photos(collection, target, incoming)
        st.session_state[ROUND] = round_number + 1  # empty inputs, ready for the next photos
        st.rerun()


def add_photos(collection: Path, target: str, incoming: list[tuple[str, bytes]]) -> None:
    """Keep each photo, or say in one sentence why not; the others are kept either way."""
    added = again = 0
    for file_name, data in incoming:
        try:
            if collect.add_photo(collection, target, data, file_name):
                added += 1
            else:
                again += 1
        except UserError as error:
            say("error", str(error))
    if added:
        say("success", f"Added {_photos(added)} to {target}.")
    if again:
        say("info", f"{_photos(again)} {'was' if again == 1 else 'were'} in {target} already.")


def _photos(count: int) -> str:
    return f"{count} photo{'' if count == 1 else 's'}"


@st.cache_data(max_entries=1024, show_spinner=False)
def _thumbnail(path: str, modified: int) -> np.ndarray | None:
    return collect.thumbnail(Path(path), side=128)


def class_section(collection: Path, number: int, name: str, photos: list[Path]) -> None:
    """A class's count, its newest photos with a Remove under each, and Remove class."""
    with st.container(border=True):
        st.markdown(f"**{plain(name)}** · {_photos(len(photos))}")
        newest = photos[::-1][:THUMBNAILS_SHOWN]
        for start in range(0, len(newest), THUMBNAILS_PER_ROW):
            columns = st.columns(THUMBNAILS_PER_ROW)
            for column, photo in zip(
                columns, newest[start : start + THUMBNAILS_PER_ROW], strict=False
            ):
                image = _thumbnail(str(photo), photo.stat().st_mtime_ns)
                if image is None:
                    column.warning("Cannot be shown.")
                else:
                    column.image(image, width=96)
                column.button(
                    "Remove",
                    key=f"collect_remove_{number}_{photo.name}",
                    icon=":material/delete:",
                    type="tertiary",
                    on_click=_remove_photo,
                    args=(collection, name, photo.name),
                )
        if len(photos) > THUMBNAILS_SHOWN:
            st.caption(f"The {THUMBNAILS_SHOWN} newest of {len(photos):,} photos are shown.")
        if st.session_state.get(CONFIRM_REMOVE) == name:
            st.warning(f"Remove class {plain(name)} and its {_photos(len(photos))}?")
            yes, no = st.columns(2)
            yes.button(
                "Yes, remove it",
                key=f"collect_remove_class_yes_{number}",
                type="primary",
                on_click=_remove_class,
                args=(collection, name),
            )
            no.button(
                "Keep it",
                key=f"collect_remove_class_no_{number}",
                on_click=lambda: st.session_state.pop(CONFIRM_REMOVE, None),
            )
        else:
            st.button(
                "Remove class",
                key=f"collect_remove_class_{number}",
                icon=":material/delete_sweep:",
                on_click=_ask_or_remove_class,
                args=(collection, name, len(photos)),
            )


def _remove_photo(collection: Path, name: str, photo: str) -> None:
    try:
        collect.remove_photo(collection, name, photo)
    except UserError as error:
        say("error", str(error))


def _ask_or_remove_class(collection: Path, name: str, count: int) -> None:
    """An empty class goes at once; one with photos asks first."""
    if count:
        st.session_state[CONFIRM_REMOVE] = name
    else:
        _remove_class(collection, name)


def _remove_class(collection: Path, name: str) -> None:
    st.session_state.pop(CONFIRM_REMOVE, None)
    try:
        collect.remove_class(collection, name)
    except UserError as error:
        say("error", str(error))
    else:
        say("success", f"Removed class {name}.")


def load_section(collection: Path, current_spec: str) -> None:
    """Load the collection as the dataset every page works on, as the Data page's Load does."""
    problem = collect.readiness_problem(collection)
    if st.button(
        "Use these photos as the dataset",
        key="collect_load",
        type="primary",
        icon=":material/download:",
        disabled=problem is not None,
    ):
        config = DataConfig(spec=str(collection))
        bar = st.progress(0.0, text="Reading the photos...")
        try:
            dataset = services.reload_dataset(
                config, data_views.progress_reporter(bar, "Reading headers")
            )
        except UserError as error:
            st.error(plain(error))
            return
        finally:
            bar.empty()
        set_data_config(config)
        current_spec = config.spec
        st.success(
            f"{plain(collection.name)} is the dataset now: {len(dataset.labels):,} photos in "
            f"{dataset.num_classes} classes."
        )
        data_views.page_link("pages/train.py", "Train on it", ":material/model_training:")
    if problem:
        st.caption(plain(problem))
    elif current_spec == str(collection):
        st.caption(
            "This collection is the current dataset; press the button again after adding or "
            "removing photos, so the other pages see them."
        )
