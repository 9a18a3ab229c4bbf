"""Cached engine calls for the pages: datasets, samples, previews, runs, evaluations, predictors.

Keys are small JSON strings of configs (with the dataset's load generation), so a rerun or a page
change never loads, decodes or trains anything again by itself. Runs are read in ui/run_services.py.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable

import numpy as np
import streamlit as st

from engine.config import AugmentConfig, DataConfig, RunConfig
from engine.data import Dataset, load_dataset
from engine.data.items import ItemImage
from engine.errors import UserError

# TensorFlow's import is not safe from two threads at once (a half-initialised module is seen):
# the warm-up thread and a page's first Keras import take turns.
TENSORFLOW_IMPORT = threading.Lock()


def config_key(config) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


@st.cache_resource(show_spinner=False)
def _generations() -> dict[str, int]:
    """How many times each dataset config was indexed again by Load, for every session alike."""
    return {}


# A dataset indexed outside the cache (with a progress bar) waits here for _dataset to take it:
# a cached function must not draw, and this way the index is not built twice.
_INDEXED: dict[str, Dataset] = {}


def dataset_key(config: DataConfig) -> str:
    """The cache key of a dataset: its config and its load generation, so Load re-indexes."""
    generation = _generations().get(config_key(config), 0)
    return json.dumps({"config": dataclasses.asdict(config), "generation": generation})


@st.cache_resource(max_entries=4, show_spinner="Indexing the dataset...")
def _dataset(key: str) -> Dataset:
    indexed = _INDEXED.pop(key, None)
    if indexed is not None:
        return indexed
    return load_dataset(DataConfig(**json.loads(key)["config"]))


def get_dataset(config: DataConfig) -> Dataset:
    """The indexed dataset (nothing decoded yet); raises UserError with the engine's sentence."""
    return _dataset(dataset_key(config))


def reload_dataset(
    config: DataConfig, progress: Callable[[int, int], None] | None = None
) -> Dataset:
    """Index the dataset again now, so files added or removed since show, with progress(done,
    total); every page then uses the new index. On a UserError the old index stays."""
    dataset = load_dataset(config, progress=progress)
    old_key = dataset_key(config)
    generations = _generations()
    generations[config_key(config)] = generations.get(config_key(config), 0) + 1
    key = dataset_key(config)
    _INDEXED[key] = dataset
    _dataset.clear(old_key)
    try:
        return _dataset(key)
    finally:
        _INDEXED.pop(key, None)  # not taken when another Load moved the generation on meanwhile


@st.cache_data(max_entries=16, show_spinner=False)
def _summary(key: str, prepared: bool) -> dict:
    return _dataset(key).summary()


def dataset_summary(config: DataConfig) -> dict:
    dataset = get_dataset(config)
    return _summary(dataset_key(config), dataset.is_prepared())


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
    return _samples(dataset_key(config), split, class_id, seed, count, size)


@st.cache_data(max_entries=256, show_spinner=False)
def _item_images(key: str, indices: tuple[int, ...], size: int) -> list[np.ndarray | None]:
    return _dataset(key).sample_images(np.array(indices, dtype=np.int64), size)


def item_images(config: DataConfig, indices: list[int], size: int = 96) -> list[np.ndarray | None]:
    """Items of today's dataset by position (the Data and Augment pages' samples)."""
    return _item_images(dataset_key(config), tuple(int(i) for i in indices), size)


@st.cache_data(max_entries=64, show_spinner=False)
def _gallery_images(key: str, item_ids: tuple[str, ...], size: int) -> list[ItemImage]:
    from engine.evaluation import gallery_images

    return gallery_images(_dataset(key), [{"id": item_id} for item_id in item_ids], size)


def gallery_images(config: DataConfig, items: list[dict], size: int = 96) -> list[ItemImage]:
    """A run's evaluation items by their stored ids (names in evaluations from before ids), never
    by position: an item removed since has a sentence instead of an image."""
    item_ids = tuple(str(item.get("id") or item["name"]) for item in items)
    return _gallery_images(dataset_key(config), item_ids, size)


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
    return _preview(dataset_key(config), index, config_key(augment), count, seed)


@st.cache_resource(show_spinner="Asking TensorFlow which devices it sees...")
def devices() -> dict:
    from engine.devices import describe_devices

    with TENSORFLOW_IMPORT:
        import tensorflow  # noqa: F401
    return describe_devices()


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
    return {
        "kind": recipe.kind,
        "config": recipe.config,
        "notes": recipe.notes,
        "train_count": recipe.train_count,
    }


def recipe(config: DataConfig) -> dict:
    """The engine's recipe for this dataset: {"kind", "config" (partial RunConfig), "notes",
    "train_count"}."""
    return _recipe(dataset_key(config))


def recipe_notes(recipe: dict, config: RunConfig) -> list[str]:
    """The recipe's notes for the config the form resolved (its own time budget, if any)."""
    from engine.recipe import notes_for

    return notes_for(recipe["notes"], recipe.get("train_count", 0), config)


def transfer_notes(model_config) -> list[str]:
    """The engine's sentences about a transfer-learning choice (what trains, what to expect)."""
    from engine import models

    return (
        list(models.transfer_notes(model_config)) if models.is_transfer(model_config.name) else []
    )


def check_config(config) -> None:
    """Raise the engine's UserError for a config that cannot train (before a run is created)."""
    RunConfig.from_dict(config.to_dict())
    from engine import models

    if models.is_transfer(config.model.name):
        from engine.transfer import check_transfer_config

        check_transfer_config(config.model)


def lr_find(config, progress) -> dict:
    """Run the learning-rate finder in this process (a short fit of a throwaway model)."""
    from engine.lr_find import lr_find as find

    return find(config, dataset=get_dataset(config.data), progress=progress)
