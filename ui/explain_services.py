"""Cached engine calls for the explanations: Grad-CAM overlays and the embedding of a run.

Keys are the run's folder and its model file's modification time, as ui/run_services.py keys its
predictors, so a model trained further is explained again. The engine raises a UserError with one
sentence for what cannot be explained (a model without convolutions, data that is gone); the
views show it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from engine.config import DataConfig
from engine.data.items import ItemImage
from ui import run_services, services


def _model_mtime(run_dir: Path) -> float:
    from engine.predict import run_model_path

    path = run_model_path(Path(run_dir))
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_resource(max_entries=4, show_spinner=False)
def _grad_cam(run_dir: str, mtime: float):
    from engine.explain import GradCam

    return GradCam(run_services.predictor(Path(run_dir)).model)


@st.cache_data(max_entries=64, show_spinner=False)
def _overlays(run_dir: str, mtime: float, images: list[np.ndarray]) -> list[np.ndarray]:
    from engine.explain import overlay

    heatmaps = _grad_cam(run_dir, mtime).heatmaps(np.stack(images))
    return [overlay(image, heatmap) for image, heatmap in zip(images, heatmaps, strict=True)]


def overlays(run_dir: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    """Each image (uint8, the run's input size) with its Grad-CAM heatmap for the predicted class
    blended over it; a UserError when the run's model cannot be explained."""
    if not images:
        return []
    return _overlays(str(run_dir), _model_mtime(run_dir), list(images))


def input_size(run_dir: Path) -> int:
    """The square side the run's model takes."""
    return run_services.predictor(Path(run_dir)).image_size


def gallery_overlays(run_dir: Path, data_config: DataConfig, items: list[dict]) -> list[ItemImage]:
    """A run's evaluation items (found by their stored ids) as Grad-CAM overlays; an item that is
    gone or cannot be decoded keeps its sentence instead of an image."""
    entries = services.gallery_images(data_config, items, size=input_size(run_dir))
    usable = [entry.image for entry in entries if entry.image is not None]
    blended = iter(overlays(run_dir, usable))
    return [
        entry if entry.image is None else ItemImage(entry.item_id, next(blended), entry.problem)
        for entry in entries
    ]


@st.cache_data(max_entries=8, show_spinner=False)
def _embedding(run_dir: str, mtime: float, method: str) -> dict:
    from engine.embedding import embedding as compute

    return compute(Path(run_dir), run_services.predictor(Path(run_dir)).model, method)


def embedding(run_dir: Path, method: str) -> dict:
    """engine.embedding.embedding of the run: its evaluated split's features in 2-D (cached in
    the run folder after the first time)."""
    return _embedding(str(run_dir), _model_mtime(run_dir), method)
