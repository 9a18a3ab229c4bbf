"""Helpers of the Home, Data and Augment pages: sample pages, the exclusions and relabels, size
figures, the runs table, links."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from engine.config import DataConfig
from engine.data import SPLITS, Dataset
from engine.errors import UserError
from ui import edits_services, gallery, services
from ui.text import plain
from ui.uploads import uploads_folder

PER_PAGE = 24  # sample images on one page of the Data page's grid
SOURCES = (
    "Built-in digits",
    "TensorFlow Datasets",
    "Folder on this machine",
    "Upload .zip or .npz",
)


def source_of(spec: str) -> str:
    """The Data page's source choice that names a spec, so the form opens on the loaded dataset."""
    if spec == "digits":
        return SOURCES[0]
    if spec.startswith("tfds:"):
        return SOURCES[1]
    if Path(spec).parent == uploads_folder():
        return SOURCES[3]
    return SOURCES[2]


def display_name(spec: str) -> str:
    """The spec as a heading; an upload shows its file name without the content hash."""
    if source_of(spec) == SOURCES[3]:
        path = Path(spec)
        return f"Uploaded {re.sub(r'-[0-9a-f]{20}$', '', path.stem)}{path.suffix}"
    return spec


def count_items(config: DataConfig, split: str, class_id: int | None) -> int:
    """How many items a split has, of one class or of all (None)."""
    dataset = services.get_dataset(config)
    labels = dataset.labels[dataset.indices(split)]
    return int(len(labels) if class_id is None else (labels == class_id).sum())


def sample_page(
    config: DataConfig, split: str, page: int, per_page: int, seed: int, class_id: int | None
) -> list[dict]:
    """One page of a split's shuffled items with their labels and 96-pixel images.

    The order is one permutation per seed, so page 2 continues page 1; only the shown page is
    decoded, and services.item_images caches it.
    """
    dataset = services.get_dataset(config)
    order = dataset.sample_indices(split, page * per_page, seed=seed, class_id=class_id)
    chosen = order[(page - 1) * per_page :]
    images = services.item_images(config, chosen.tolist(), size=96)
    return [
        {
            "index": int(index),
            "image": image,
            "label": dataset.class_names[dataset.labels[index]],
            "name": dataset.item_name(index),
        }
        for index, image in zip(chosen, images, strict=True)
    ]


def widget_key(name: str, config: DataConfig, *parts: object) -> str:
    """A widget key tied to the loaded dataset (and to parts such as the filters), so a widget of
    another dataset, or of other filters, never hands its stale value to this one. Exclusions and
    relabels keep the keys, so the gallery stays on its split, class and page; a class list that
    changed (Load after a class folder was added) does not."""
    unedited = services.config_key(dataclasses.replace(config, exclude=(), relabel={}))
    classes = services.get_dataset(config).class_names
    tag = hashlib.sha1(repr((unedited, classes, parts)).encode()).hexdigest()[:12]
    return f"{name}_{tag}"


def sample_section(config: DataConfig, dataset: Dataset, summary: dict) -> list[dict]:
    """The Data page's sample grid: split and class filters, reshuffle, a pager, the images;
    the items shown (sample_page's), for the Health controls.

    The filters are keyed on the dataset and the pager on the filters too, so loading another
    dataset empties the class box and any filter change opens page 1.
    """
    seed_key = widget_key("data_sample_seed", config)
    st.session_state.setdefault(seed_key, 0)

    def reshuffle() -> None:
        st.session_state[seed_key] += 1

    split_column, class_column, shuffle_column = st.columns([2, 2, 1], vertical_alignment="bottom")
    splits = [split for split in SPLITS if sum(summary["counts"][split].values())]
    split = split_column.radio(
        "Split", splits, horizontal=True, key=widget_key("data_split", config)
    )
    class_choice = class_column.selectbox(
        "Class",
        [-1, *range(dataset.num_classes)],
        format_func=lambda number: "All classes" if number < 0 else dataset.class_names[number],
        key=widget_key("data_class", config),
    )
    shuffle_column.button(
        "Reshuffle", key="data_shuffle", icon=":material/shuffle:", on_click=reshuffle
    )
    class_id = None if class_choice < 0 else class_choice
    seed = st.session_state[seed_key]

    total = count_items(config, split, class_id)
    pages = max(1, math.ceil(total / PER_PAGE))
    page = st.pagination(pages, key=widget_key("data_page", config, split, class_id, seed))
    page = min(max(page, 1), pages)  # never a page past the end
    items = sample_page(config, split, page, PER_PAGE, seed, class_id)
    first = (page - 1) * PER_PAGE + 1
    if not items:
        st.info(f"The {split} split has no images of this class.")
        return []
    st.caption(f"{first:,}–{first + len(items) - 1:,} of {total:,} {split} images, in random order")

    def larger(index: int):
        return lambda: services.item_images(config, [index], size=gallery.LARGE_SIDE)[0]

    tiles = [
        gallery.Tile(
            item["image"],
            item["label"],
            item["name"],
            "cannot be decoded (see the load report)",
            larger(item["index"]),
        )
        for item in items
    ]
    gallery.show_tiles(tiles, key="data_enlarge")
    return items


EDIT_MESSAGE = "data_edit_message"  # (kind, sentence) of the last edit, shown once
EDIT_ROWS = 20  # exclusions and relabels listed on one page, each with its Undo button


def _edit(action, *args, file_key: str = "", class_key: str = "") -> None:
    """A button's on_click: an edit through ui.edits_services, its sentence kept for the rerun.
    The chosen file and class are read from their widgets now, not from the last drawing."""
    chosen = [st.session_state[key] for key in (file_key, class_key) if key]
    try:
        st.session_state[EDIT_MESSAGE] = ("success", action(*args, *chosen))
    except UserError as error:
        st.session_state[EDIT_MESSAGE] = ("error", str(error))


def edits_section(
    config: DataConfig, dataset: Dataset, summary: dict, shown: list[dict], problem: str | None
) -> None:
    """The Data page's exclusions and relabels: controls for the shown samples, then each choice
    with its Undo, and Undo all. File and class names are untrusted: shown through plain()."""
    st.subheader("Excluded and relabelled files", divider=False)
    kind, message = st.session_state.pop(EDIT_MESSAGE, ("", ""))
    if message:
        (st.error if kind == "error" else st.success)(plain(message))
    if problem:
        st.warning(plain(problem))
    report = summary["edits"]
    st.caption(
        f"{plain(report['summary'])} Your files are never changed: the choices are kept beside "
        "the decoded images and recorded in each run's config."
    )
    if shown:
        names = [item["name"] for item in shown]
        file_key = widget_key("data_edit_file", config, tuple(names))
        class_key = widget_key("data_edit_class", config)
        columns = st.columns([3, 1, 2, 1], vertical_alignment="bottom")
        columns[0].selectbox("Image shown above", names, key=file_key)
        columns[1].button(
            "Exclude",
            key="data_exclude",
            icon=":material/block:",
            on_click=lambda: _edit(
                lambda spec, file: edits_services.exclude_files(spec, [file]),
                config,
                file_key=file_key,
            ),
        )
        columns[2].selectbox("Relabel to", dataset.class_names, key=class_key)
        columns[3].button(
            "Relabel",
            key="data_relabel",
            icon=":material/label:",
            on_click=lambda: _edit(
                edits_services.relabel_file, config, file_key=file_key, class_key=class_key
            ),
        )
    choices = [("exclude", item) for item in config.exclude]
    choices += [("relabel", item) for item in config.relabel]
    if not choices:
        return
    pages = math.ceil(len(choices) / EDIT_ROWS)
    page = min(max(st.pagination(pages, key="data_edits_page"), 1), pages) if pages > 1 else 1
    for what, item in choices[(page - 1) * EDIT_ROWS : page * EDIT_ROWS]:
        text_column, undo_column = st.columns([6, 1], vertical_alignment="center")
        if what == "exclude":
            text_column.markdown(f"Excluded: {plain(item)}")
            args = (edits_services.undo, config, [item], [])
        else:
            text_column.markdown(f"Relabelled to {plain(config.relabel[item])}: {plain(item)}")
            args = (edits_services.undo, config, [], [item])
        digest = hashlib.sha1(f"{what}\0{item}".encode()).hexdigest()[:12]
        undo_column.button("Undo", key=f"data_undo_{digest}", on_click=_edit, args=args)
    st.button(
        "Undo all",
        key="data_undo_all",
        icon=":material/undo:",
        on_click=_edit,
        args=(edits_services.undo_all, config),
    )
    if report["not_applied"]:
        st.caption("Choices not applied to the data as it is now, and why:")
        st.dataframe(report["not_applied"], hide_index=True)


@st.cache_data(max_entries=8, show_spinner=False)
def _original_sides(_dataset: Dataset, key: str) -> tuple[list[int], list[int]]:
    headers = _dataset.source.headers or []
    return [header[0] for header in headers], [header[1] for header in headers]


def original_sizes_figure(config: DataConfig) -> go.Figure:
    """Overlaid histograms of the files' original widths and heights (from headers, nothing decoded)."""
    widths, heights = _original_sides(services.get_dataset(config), services.dataset_key(config))
    figure = go.Figure()
    figure.add_histogram(x=widths, name="width", opacity=0.6, nbinsx=40)
    figure.add_histogram(x=heights, name="height", opacity=0.6, nbinsx=40)
    figure.update_layout(
        barmode="overlay",
        xaxis_title="pixels",
        yaxis_title="images",
        legend_title="side",
        height=280,
        margin=dict(t=20, b=10),
    )
    return figure


def progress_reporter(bar, what: str):
    """A progress(done, total) callback that moves an st.progress bar: "Reading headers 256/1,024"."""

    def report(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{what}: {done:,} of {total:,} files")

    return report


def statistics_rows(statistics: dict) -> list[dict]:
    """Width, height and aspect ratio as min / median / max rows for a small table."""
    rows = []
    for name, label in (
        ("width", "width (px)"),
        ("height", "height (px)"),
        ("aspect_ratio", "aspect (w / h)"),
    ):
        values = statistics[name]
        rows.append({"": label, **{k: round(values[k], 2) for k in ("min", "median", "max")}})
    return rows


def page_link(page: str, label: str, icon: str, description: str = "") -> None:
    """st.page_link and a line below it; plain text when the page runs alone under AppTest."""
    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitPageNotFoundError:  # no app.py navigation around this page
        st.markdown(label)
    if description:
        st.caption(description)


def enlarge(image: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour upscale to about `side` pixels, so small images stay sharp on screen."""
    factor = max(1, side // max(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)
