"""Explanation views: Grad-CAM overlays on the Predict and Evaluate pages, the unfamiliar-image
note, and the Evaluate page's embedding scatter with the image of a chosen point.

Class and file names are untrusted text: plain() on their way into Markdown, figures.plot_text
on their way into Plotly (which renders a subset of HTML in legends and hover labels).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from engine.config import DataConfig
from engine.errors import UserError
from ui import explain_services, gallery, services
from ui.figures import LEGEND_ABOVE, PALETTE, plot_text
from ui.text import plain

GRADCAM_LABEL = "Show where the model looked (Grad-CAM)"
GRADCAM_HELP = (
    "Colours each image by how much each part spoke for the predicted class: red strongest, "
    "blue weakest (Grad-CAM on the model's last convolutional layer)."
)
UNFAMILIAR_TEXT = (
    "This image looks unlike the training images of every class, so this prediction may be a guess."
)
EMBEDDING_POINT = "eval_embedding_point"  # the item id of the embedding's chosen point
METHODS = {"PCA": "pca", "t-SNE": "tsne"}
GL_POINTS = 1_000  # above this, WebGL draws the scatter (SVG makes one element per point)


def gradcam_toggle(key: str) -> bool:
    return st.toggle(GRADCAM_LABEL, key=key, help=GRADCAM_HELP)


def prediction_overlays(run_dir: Path, results: list[dict]) -> dict[int, np.ndarray]:
    """{position in results: the image with its Grad-CAM overlay} for each predicted image; a
    warning with the engine's sentence, and none, when the model cannot be explained."""
    positions = [i for i, result in enumerate(results) if "image" in result and "top_k" in result]
    try:
        with st.spinner("Computing the heatmaps..."):
            blended = explain_services.overlays(run_dir, [results[i]["image"] for i in positions])
    except UserError as error:
        st.warning(plain(error))
        return {}
    return dict(zip(positions, blended, strict=True))


def familiarity_note(result: dict, container) -> None:
    """The plain sentence beside a prediction whose image is unlike every class's training images."""
    if result.get("unfamiliar"):
        container.warning(UNFAMILIAR_TEXT, icon=":material/help:")


def familiarity_caption(problem: str | None) -> None:
    if problem:
        st.caption(
            f"Whether an image is unlike the training images cannot be judged: {plain(problem)}"
        )


def with_familiarity(table: pd.DataFrame, results: list[dict]) -> pd.DataFrame:
    """The prediction table with an "unfamiliar" column (empty where it could not be judged)."""
    table = table.copy()
    table["unfamiliar"] = [result.get("unfamiliar") for result in results]
    return table


def _enlarge(image: np.ndarray) -> Callable[[], np.ndarray]:
    side = gallery.LARGE_SIDE
    return lambda: np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))


def evaluation_gallery(
    run_dir: Path,
    data_config: DataConfig,
    items: list[dict],
    caption: Callable[[dict], str],
    limit: int,
    key: str,
    show_cam: bool,
) -> None:
    """ui.gallery.evaluation_gallery, or with show_cam the same tiles as Grad-CAM overlays."""
    if not show_cam:
        gallery.evaluation_gallery(data_config, items, caption, limit=limit, key=key)
        return
    shown = items[:limit]
    try:
        with st.spinner("Computing the heatmaps..."):
            entries = explain_services.gallery_overlays(run_dir, data_config, shown)
    except UserError as error:
        st.warning(f"The heatmaps cannot be shown: {plain(error)}")
        gallery.evaluation_gallery(data_config, items, caption, limit=limit, key=key)
        return
    if len(items) > limit:
        st.caption(f"Showing {limit} of {len(items)}.")
    tiles = [
        gallery.Tile(
            entry.image,
            f"{caption(item)} · Grad-CAM",
            str(item.get("name", "")),
            entry.problem,
            None if entry.image is None else _enlarge(entry.image),
        )
        for item, entry in zip(shown, entries, strict=True)
    ]
    gallery.show_tiles(tiles, key)


def embedding_figure(data: dict) -> go.Figure:
    """The embedding as a scatter: one colour per true class, misclassified points as crosses,
    hover with the file name and the prediction, each point's number in customdata."""
    points, labels, predicted = data["points"], data["labels"], data["predicted"]
    names = [plot_text(name) for name in data["class_names"]]
    trace = go.Scattergl if len(points) > GL_POINTS else go.Scatter
    figure = go.Figure()
    for class_id, name in enumerate(names):
        members = np.flatnonzero(labels == class_id)
        if not len(members):
            continue
        # Correct points first: the legend draws a class with its first point's symbol.
        members = members[np.argsort(predicted[members] != class_id, kind="stable")]
        wrong = predicted[members] != class_id
        text = [
            f"{plot_text(gallery.short_file_name(data['ids'][i]))}<br>true: {name}<br>"
            f"predicted: {names[predicted[i]]}"
            for i in members
        ]
        figure.add_trace(
            trace(
                x=points[members, 0],
                y=points[members, 1],
                mode="markers",
                name=name,
                text=text,
                customdata=members[:, None],
                hovertemplate="%{text}<extra></extra>",
                marker=dict(
                    color=PALETTE[class_id % len(PALETTE)],
                    symbol=np.where(wrong, "x", "circle"),
                    size=np.where(wrong, 10, 7),
                    opacity=0.8,
                ),
            )
        )
    if data["method"] == "pca":
        axes = [
            f"principal component {axis + 1} ({share:.0%} of the variance)"
            for axis, share in enumerate(data["explained"])
        ]
    else:
        axes = ["t-SNE dimension 1", "t-SNE dimension 2"]
    figure.update_layout(
        xaxis_title=axes[0],
        yaxis_title=axes[1],
        legend_title="true class",
        legend=LEGEND_ABOVE,
        margin=dict(t=40, b=10),
        height=520,
    )
    return figure


def _remember_point(ids: list[str]) -> None:
    """A chosen point's item id goes into session state, where the section finds its image."""
    points = st.session_state["eval_embedding"].selection.get("points") or []
    if not points:
        return
    number = points[0].get("customdata")
    number = number[0] if isinstance(number, (list, tuple)) else number
    if isinstance(number, (int, float)) and 0 <= int(number) < len(ids):
        st.session_state[EMBEDDING_POINT] = ids[int(number)]


def embedding_section(run_dir: Path, data_config: DataConfig, show_cam: bool) -> None:
    """The Evaluate page's embedding: a toggle, PCA or t-SNE, the scatter, the chosen image."""
    st.subheader("Embedding")
    if not st.toggle(
        "Show the embedding",
        key="eval_embedding_show",
        help="The model's features of each evaluated image (the layer before its classifier), "
        "drawn in 2-D. Computed once per run, then read from the run folder.",
    ):
        return
    label = st.radio("Projection", list(METHODS), key="eval_embedding_method", horizontal=True)
    try:
        with st.spinner("Measuring the model's features of each image (once per run)..."):
            data = explain_services.embedding(run_dir, METHODS[label])
    except UserError as error:
        st.error(plain(error))
        return
    shown = len(data["ids"])
    sampled = f" (a random {shown:,} of its {data['total']:,})" if shown < data["total"] else ""
    st.caption(
        f"{shown:,} images of the {plain(data['split'])} split{sampled}; colour is the true "
        "class, a cross marks a misclassified image. Click a point to see its image."
    )
    st.plotly_chart(
        embedding_figure(data),
        key="eval_embedding",
        on_select=lambda: _remember_point(data["ids"]),
        selection_mode="points",
    )
    chosen = st.session_state.get(EMBEDDING_POINT)
    if chosen in data["ids"]:
        _chosen_image(run_dir, data_config, data, data["ids"].index(chosen), show_cam)


def _chosen_image(
    run_dir: Path, data_config: DataConfig, data: dict, number: int, show_cam: bool
) -> None:
    item_id = data["ids"][number]
    names = data["class_names"]
    caption = f"true {names[data['labels'][number]]} → predicted {names[data['predicted'][number]]}"
    try:
        [entry] = services.gallery_images(data_config, [{"id": item_id}], size=gallery.LARGE_SIDE)
        picture = [entry.image]
        if show_cam and entry.image is not None:
            [cam] = explain_services.gallery_overlays(run_dir, data_config, [{"id": item_id}])
            picture.append(None if cam.image is None else _enlarge(cam.image)())
    except UserError as error:
        st.warning(f"The image cannot be shown: {plain(error)}")
        return
    if entry.image is None:
        st.warning(plain(f"{item_id}: {entry.problem}"))
        return
    columns = st.columns(len(picture))
    for column, image, kind in zip(columns, picture, ("", " · Grad-CAM"), strict=False):
        if image is not None:
            column.image(image, caption=plain(f"{caption} · {item_id}{kind}"), width=320)
