"""Image galleries: thumbnails captioned with their file names, each with a button that enlarges it.

The Data page's samples and the Evaluate page's misclassified and highest-loss images use it. The
larger image is decoded only when its button is pressed, and shown in a dialog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import pandas as pd
import streamlit as st

from engine.errors import UserError
from ui import services
from ui.text import plain

MISSING_IMAGE = np.full((96, 96, 3), 200, dtype=np.uint8)  # an item removed or undecodable
LARGE_SIDE = 384  # pixels of an enlarged image


@dataclass
class Tile:
    """One gallery image: what it shows, its file name, and how to get it larger."""

    image: np.ndarray | None
    caption: str  # what the image is, such as its class or "true → predicted (91%)"
    name: str  # the item's file name (a path inside the dataset), or "train[12]" for arrays
    problem: str = ""  # why image is None
    large: Callable[[], np.ndarray | None] | None = None  # the image at LARGE_SIDE, on demand


def short_file_name(name: str) -> str:
    """The last part of an item's name: "train/cat/cat_001.png" -> "cat_001.png"."""
    return PurePath(name).name or name


def tile_caption(tile: Tile) -> str:
    """The text under a thumbnail, made plain: what it is, then its file name."""
    if tile.image is None:
        return plain(f"{short_file_name(tile.name)}: {tile.problem}")
    return plain(f"{tile.caption} · {short_file_name(tile.name)}")


@st.dialog("Image", width="large")
def _enlarged(tile: Tile) -> None:
    image = tile.large() if tile.large else tile.image
    st.image(tile.image if image is None else image, width="stretch")
    st.markdown(f"**{plain(tile.caption)}**")
    st.caption(plain(tile.name))


def show_tiles(tiles: list[Tile], key: str, min_width: int = 110) -> None:
    """Thumbnails in a grid, each captioned (tile_caption) with an Enlarge button under it."""
    grid = st.grid("auto", min_column_width=min_width)
    for number, tile in enumerate(tiles):
        with grid.cell():
            st.image(
                MISSING_IMAGE if tile.image is None else tile.image,
                caption=tile_caption(tile),
                width="stretch",
            )
            if tile.image is not None and st.button(
                "Enlarge",
                key=f"{key}_{number}",
                icon=":material/zoom_in:",
                type="tertiary",
                help=plain(tile.name),
            ):
                _enlarged(tile)


def evaluation_gallery(
    data_config, items: list[dict], caption: Callable[[dict], str], limit: int, key: str
) -> None:
    """A run's evaluation items (misclassified, highest loss) found by their stored ids, with
    captions and file names; a table of their names when the dataset cannot be loaded."""
    shown = items[:limit]
    if len(items) > limit:
        st.caption(f"Showing {limit} of {len(items)}.")
    try:
        entries = services.gallery_images(data_config, shown, size=96)
    except UserError as error:
        st.warning(f"The images cannot be shown: {plain(error)} Their names are listed instead.")
        table = pd.DataFrame(shown)[["name", "true", "predicted", "confidence", "loss"]]
        confidence = st.column_config.ProgressColumn(
            "confidence", format="percent", min_value=0.0, max_value=1.0
        )
        st.dataframe(table, hide_index=True, column_config={"confidence": confidence})
        return

    def larger(item: dict) -> Callable[[], np.ndarray | None]:
        return lambda: services.gallery_images(data_config, [item], size=LARGE_SIDE)[0].image

    tiles = [
        Tile(entry.image, caption(item), str(item.get("name", "")), entry.problem, larger(item))
        for item, entry in zip(shown, entries, strict=True)
    ]
    show_tiles(tiles, key)
