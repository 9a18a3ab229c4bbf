"""Cached engine calls for the pages: datasets, samples, previews, runs, evaluations, predictors.

Keys are small JSON strings of configs or run paths with file times, so a rerun or a page change
never loads, decodes, evaluates or trains anything again by itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import streamlit as st

from engine import runs
from engine.config import AugmentConfig, DataConfig
from engine.data import Dataset, default_cache_root, load_dataset
from engine.errors import UserError
from engine.jsonio import atomic_write_bytes, read_json

# TensorFlow's import is not safe from two threads at once (a half-initialised module is seen):
# the warm-up thread and a page's first Keras import take turns.
TENSORFLOW_IMPORT = threading.Lock()


def config_key(config) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


@st.cache_resource(max_entries=4, show_spinner="Indexing the dataset...")
def _dataset(key: str) -> Dataset:
    return load_dataset(DataConfig(**json.loads(key)))


def get_dataset(config: DataConfig) -> Dataset:
    """The indexed dataset (nothing decoded yet); raises UserError with the engine's sentence."""
    return _dataset(config_key(config))


def prepare_with_progress(config: DataConfig) -> Dataset:
    """Decode the dataset into the engine's disk cache once, with a progress bar the first time."""
    dataset = get_dataset(config)
    if not dataset.is_prepared():
        bar = st.progress(0.0, text="Decoding images into the cache...")
        dataset.prepare(
            progress=lambda done, total: bar.progress(
                done / max(total, 1), text=f"Decoding images {done:,}/{total:,}"
            )
        )
        bar.empty()
    else:
        dataset.prepare()
    return dataset


@st.cache_data(max_entries=16, show_spinner=False)
def _summary(key: str, prepared: bool) -> dict:
    return _dataset(key).summary()


def dataset_summary(config: DataConfig) -> dict:
    dataset = get_dataset(config)
    return _summary(config_key(config), dataset.is_prepared())


@st.cache_data(max_entries=64, show_spinner=False)
def _samples(
    key: str, split: str, class_id: int | None, seed: int, count: int, size: int
) -> list[dict]:
    dataset = _dataset(key)
    indices = dataset.sample_indices(split, count, seed=seed, class_id=class_id)
    images = dataset.sample_images(indices, size)
    return [
        {
            "index": int(i),
            "image": image,
            "label": dataset.class_names[dataset.labels[i]],
            "name": dataset.item_name(i),
        }
        for i, image in zip(indices, images, strict=True)
    ]


def samples(
    config: DataConfig,
    split: str,
    count: int,
    seed: int = 0,
    class_id: int | None = None,
    size: int = 96,
) -> list[dict]:
    """Random items of a split with their images (None for one that cannot be decoded)."""
    return _samples(config_key(config), split, class_id, seed, count, size)


@st.cache_data(max_entries=256, show_spinner=False)
def _item_images(key: str, indices: tuple[int, ...], size: int) -> list[np.ndarray | None]:
    return _dataset(key).sample_images(np.array(indices, dtype=np.int64), size)


def item_images(config: DataConfig, indices: list[int], size: int = 96) -> list[np.ndarray | None]:
    return _item_images(config_key(config), tuple(int(i) for i in indices), size)


@st.cache_data(max_entries=32, show_spinner=False)
def _preview(key: str, index: int, augment_key: str, count: int, seed: int) -> np.ndarray:
    from engine.augment import preview

    dataset = _dataset(key)
    image = dataset.sample_images(np.array([index]))[0]
    if image is None:
        raise UserError(f"{dataset.item_name(index)} cannot be decoded; pick another sample.")
    return np.concatenate(
        [image[None], preview(image, AugmentConfig(**json.loads(augment_key)), count, seed)]
    )


def augment_preview(
    config: DataConfig, index: int, augment: AugmentConfig, count: int, seed: int
) -> np.ndarray:
    """The original image followed by `count` versions made by training's augmentation layers."""
    return _preview(config_key(config), index, config_key(augment), count, seed)


@st.cache_resource(show_spinner="Asking TensorFlow which devices it sees...")
def devices() -> dict:
    from engine.devices import describe_devices

    with TENSORFLOW_IMPORT:
        import tensorflow  # noqa: F401
    return describe_devices()


def list_runs(runs_dir: Path) -> list[dict]:
    """Every run with its state; cheap (a few small JSON files each), so not cached."""
    return runs.list_runs(runs_dir)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(max_entries=32, show_spinner=False)
def _evaluation(run_dir: str, mtime: float) -> dict | None:
    return read_json(Path(run_dir) / "evaluation.json")


def evaluation(run_dir: Path) -> dict | None:
    return _evaluation(str(run_dir), _mtime(Path(run_dir) / "evaluation.json"))


@st.cache_data(max_entries=64, show_spinner=False)
def _history(run_dir: str, mtime: float) -> tuple[list[dict], list[dict]]:
    return runs.read_history(Path(run_dir))


def history(run_dir: Path) -> tuple[list[dict], list[dict]]:
    return _history(str(run_dir), _mtime(Path(run_dir) / "history.jsonl"))


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _predictor(run_dir: str, mtime: float):
    from engine.predict import Predictor

    return Predictor(run_dir)


def predictor(run_dir: Path):
    """The run's best model with its preprocessing, loaded once per model file version."""
    from engine.predict import run_model_path

    return _predictor(str(run_dir), _mtime(run_model_path(run_dir)))


def save_upload(name: str, data: bytes) -> Path:
    """Keep an uploaded zip or npz in the cache under its content hash; the engine loads it safely."""
    suffix = Path(name).suffix.lower()
    digest = hashlib.sha256(data).hexdigest()[:20]
    target = default_cache_root() / "uploads" / f"{Path(name).stem[:40]}-{digest}{suffix}"
    if not target.exists():
        atomic_write_bytes(target, data)
    return target


def evaluate(run_dir: Path) -> dict:
    """Evaluate a run now (for runs whose evaluation is missing)."""
    from engine.evaluation import evaluate_run

    return evaluate_run(run_dir)


@st.cache_resource(show_spinner=False)
def model_catalog() -> list[dict]:
    """The models the engine can train, with family and description."""
    from engine.models import list_models

    return list_models()


@st.cache_resource(show_spinner=False)
def warm_up() -> bool:
    """Import TensorFlow, scikit-learn and Plotly in the background once per server, so the first
    page, preview or prediction does not wait for them. The thread never draws anything."""

    def load() -> None:
        # The heavy imports every page needs sooner or later, done before the first click.
        import plotly.subplots  # noqa: F401
        import sklearn.datasets  # noqa: F401
        import sklearn.metrics  # noqa: F401

        with TENSORFLOW_IMPORT:
            import engine.augment  # noqa: F401  imports TensorFlow and Keras
            import engine.predict  # noqa: F401
        from engine.devices import describe_devices

        describe_devices()  # cached in the engine, so the Home page's call returns at once

    threading.Thread(target=load, name="tensorflow-warm-up", daemon=True).start()
    return True


@st.cache_data(max_entries=8, show_spinner="Choosing a recipe for this dataset...")
def _recipe(key: str) -> dict:
    with TENSORFLOW_IMPORT:  # the weights check imports Keras
        import engine.models  # noqa: F401
        from engine.recipe import default_weights_check, recommend

    recipe = recommend(_dataset(key), default_weights_check)
    return {"kind": recipe.kind, "config": recipe.config, "notes": recipe.notes}


def recipe(config: DataConfig) -> dict:
    """The engine's recipe for this dataset: {"kind", "config" (partial RunConfig), "notes"}."""
    return _recipe(config_key(config))


def transfer_notes(model_config) -> list[str]:
    """The engine's sentences about a transfer-learning choice (what trains, what to expect)."""
    from engine import models

    return (
        list(models.transfer_notes(model_config)) if models.is_transfer(model_config.name) else []
    )


def check_config(config) -> None:
    """Raise the engine's UserError for a config that cannot train (before a run is created)."""
    from engine.config import RunConfig

    RunConfig.from_dict(config.to_dict())
    from engine import models

    if models.is_transfer(config.model.name):
        from engine.transfer import check_transfer_config

        check_transfer_config(config.model)


def lr_find(config, progress) -> dict:
    """Run the learning-rate finder in this process (a short fit of a throwaway model)."""
    from engine.lr_find import lr_find as find

    return find(config, dataset=get_dataset(config.data), progress=progress)
