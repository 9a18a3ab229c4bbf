"""The Data page's Health section, its actions: exclude one copy, all but the first copy of a
group, or all but one of every group (confirmed), each with the sentence and an Undo."""

from __future__ import annotations

import hashlib
from collections import Counter

import streamlit as st

from engine.config import DataConfig
from engine.errors import UserError
from ui import edits_services, gallery, services
from ui.text import plain

GROUPS_SHOWN = 8  # groups of copies shown as galleries per finding; all are in the JSON
MESSAGE = "data_health_message"  # (kind, sentence, files Undo takes back) of the last exclusion
KEEP_ONE = "data_health_keep_one_open"  # whether the confirmation of "Keep one of each" is open


def keep_one_files(report: dict) -> list[str]:
    """The files "Keep one of each duplicate group" excludes: all but the first of each group
    of copies (ordered; a near group holds the exact groups it overlaps)."""
    near = report["near_duplicates"]
    in_near = {member["file"] for group in near for member in group}
    groups = near + [g for g in report["exact_duplicates"] if g[0]["file"] not in in_near]
    return sorted({member["file"] for group in groups for member in ordered(group)[1:]})


def ordered(group: list[dict]) -> list[dict]:
    """A group's copies, those of its most common class first: the first is the one kept."""
    classes = Counter(member["class"] for member in group)
    return sorted(group, key=lambda member: -classes[member["class"]])


def _edit(config: DataConfig, files: list[str], undo: bool = False) -> None:
    """A button's on_click: exclude files, or take that back (ui.edits_services); the sentence
    is kept for the rerun, with the files its Undo takes back."""
    action = edits_services.undo if undo else edits_services.exclude_files
    st.session_state[KEEP_ONE] = False  # the confirmation closes
    try:
        st.session_state[MESSAGE] = ("success", action(config, files), [] if undo else files)
    except UserError as error:
        st.session_state[MESSAGE] = ("error", str(error), [])


def last_edit(config: DataConfig) -> None:
    """The sentence of the exclusion just made, with its Undo, shown once."""
    kind, said, files = st.session_state.pop(MESSAGE, ("", "", []))
    if said:
        text_column, undo_column = st.columns([6, 1], vertical_alignment="center")
        (text_column.error if kind == "error" else text_column.success)(plain(said))
        if files:
            undo_column.button(
                "Undo", key="data_health_undo", on_click=_edit, args=(config, files, True)
            )


def keep_one_of_each(config: DataConfig, report: dict) -> None:
    """One button that excludes all but the first file of every group of copies, confirmed."""
    files = keep_one_files(report)
    label = "Keep one of each duplicate group"
    # Stateful (a key and reruns), so that an exclusion can close it.
    with st.popover(
        label, icon=":material/filter_1:", disabled=not files, key=KEEP_ONE, on_change="rerun"
    ):
        st.markdown(
            f"Exclude {_files(len(files))}, keeping the first file shown of each exact or near "
            "group of copies? Your files stay where they are, and Undo takes it back."
        )
        st.button(
            f"Exclude {_files(len(files))}",
            key="data_health_keep_one",
            type="primary",
            on_click=_edit,
            args=(config, files),
        )


def group_gallery(config: DataConfig, groups: list[list[dict]], kind: str, empty: str) -> None:
    """Each group of copies: a caption with its splits and classes, "Exclude all but the
    first", and its thumbnails captioned with class, split and file name, each with Exclude."""
    if not groups:
        st.success(empty)
        return
    shown = [ordered(group) for group in groups[:GROUPS_SHOWN]]
    if len(groups) > GROUPS_SHOWN:
        st.caption(f"Showing {GROUPS_SHOWN} of {len(groups)} groups; the JSON report has all.")
    members = [member for group in shown for member in group]
    try:
        images = services.gallery_images(config, [{"id": m["file"]} for m in members], size=128)
    except UserError as error:
        st.warning(f"The images cannot be shown: {plain(error)}")
        images = None
    entries = iter(images or [])
    for number, group in enumerate(shown):
        splits = sorted({member["split"] for member in group})
        classes = sorted({member["class"] for member in group})
        files = [member["file"] for member in group]
        text_column, button_column = st.columns([3, 1], vertical_alignment="center")
        text_column.caption(
            f"Group {number + 1}: {len(group)} files in {plain(', '.join(splits))}; "
            f"class {plain(', '.join(classes))}"
        )
        button_column.button(
            "Exclude all but the first",
            key=f"data_health_{kind}_rest_{_digest(files[0])}",
            on_click=_edit,
            args=(config, files[1:]),
            help=plain(f"Keeps {gallery.short_file_name(files[0])}; excludes the other copies."),
        )
        grid = st.grid("auto", min_column_width=120)
        for member in group:
            entry = next(entries, None)
            image, problem = (entry.image, entry.problem) if entry else (None, "not shown")
            caption = f"{member['class']} · {member['split']}"
            with grid.cell():
                st.image(
                    gallery.MISSING_IMAGE if image is None else image,
                    caption=gallery.tile_caption(
                        gallery.Tile(image, caption, member["file"], problem)
                    ),
                    width="stretch",
                )
                st.button(
                    "Exclude",
                    key=f"data_health_{kind}_exclude_{_digest(member['file'])}",
                    icon=":material/block:",
                    type="tertiary",
                    on_click=_edit,
                    args=(config, [member["file"]]),
                    help=plain(f"Leave {member['file']} out of every later run."),
                )


def _digest(file: str) -> str:
    return hashlib.sha1(file.encode()).hexdigest()[:12]


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count:,} files"
