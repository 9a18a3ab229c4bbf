"""Penultimate-layer features of a run's model: the model that gives them, and a split's features.

The features are what the classifier head sits on (the input of the last layer). The embedding
view (engine.embedding) and the unfamiliar-image check (engine.familiarity) read them from here;
both cache what they compute in the run folder, keyed by `model_identity`, so a model trained
further (resume) is measured again.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from engine import runs
from engine.errors import UserError
from engine.jsonio import atomic_write_bytes, read_json_object

BATCH_SIZE = 64


def features_model(model, extra=None):
    """A Keras model giving [penultimate features, class probabilities] for a batch of images,
    and `extra(model)`'s tensor third when it gives one (engine.extremes).

    The features are the input of the model's last layer (our models' "predictions" Dense), so
    one pass gives both; a model that is no Keras model, or is too small to have a layer before
    its head, raises a UserError.
    """
    import keras

    if not isinstance(model, keras.Model) or not model.layers:
        raise UserError(
            "This model is not a Keras model with layers, so its features cannot be measured."
        )
    head = model.layers[-1]
    features = head.input
    if isinstance(features, (list, tuple)) or features is None or len(features.shape) != 2:
        raise UserError(
            f"The last layer of this model ({head.name}) does not take a flat feature vector, "
            "so its features cannot be measured."
        )
    if any(features is tensor for tensor in model.inputs):
        raise UserError(
            "This model is a single layer with no features before its head; train a CNN to use "
            "the embedding and the unfamiliar-image check."
        )
    wanted = [features, model.outputs[0]]
    added = extra(model) if extra is not None else None
    if added is not None:
        wanted.append(added)
    try:
        return keras.Model(model.input, wanted, name="features_and_outputs")
    except (ValueError, TypeError, AttributeError) as error:  # a graph Keras cannot cut
        raise UserError(
            f"The features before {head.name} cannot be reached in this model "
            f"({type(error).__name__}); it works with models built by this studio."
        ) from None


def outputs(dual, images: np.ndarray, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, ...]:
    """Each output of `dual` (features_model's: features, then probabilities, then what else it
    gives) for float32 images in [0, 255], in batches."""
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size], dtype=np.float32)
        results = dual(batch, training=False)
        parts.append([np.asarray(result, dtype=np.float32) for result in results])
    if not parts:
        return tuple(np.zeros((0, 0), np.float32) for _ in dual.outputs)
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def run_dataset(run_dir: Path):
    """The run's dataset with its stored split members, decoded (as evaluation uses it)."""
    from engine.data import load_dataset

    config = runs.load_config(run_dir)
    dataset = load_dataset(config.data)
    manifest = read_json_object(Path(run_dir) / "data_manifest.json")
    if manifest is not None:
        dataset.verify_manifest(manifest)  # a UserError when the data changed since training
    dataset.prepare()
    return dataset


def split_features(
    dual, dataset, split: str, limit: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(item numbers, labels, features, probabilities) of a split, at most `limit` items.

    A larger split is sampled at random with a fixed seed, so the same run gives the same sample.
    """
    indices, labels, results = split_outputs(dual, dataset, split, limit, seed)
    return indices, labels, results[0], results[1]


def split_outputs(
    dual, dataset, split: str, limit: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """(item numbers, labels, each output of `dual`) of a split, sampled as split_features."""
    indices = np.sort(dataset.indices(split))
    if limit is not None and len(indices) > limit:
        chosen = np.random.default_rng(seed).choice(len(indices), limit, replace=False)
        indices = np.sort(indices[chosen])
    images = dataset.images()
    parts = [
        outputs(dual, images[indices[start : start + BATCH_SIZE]])
        for start in range(0, len(indices), BATCH_SIZE)
    ]
    if parts:
        results = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
    else:
        results = tuple(np.zeros((0, 0), np.float32) for _ in dual.outputs)
    return indices, np.asarray(dataset.labels[indices], np.int64), results


def model_identity(run_dir: Path) -> str:
    """Which model file, in which version, a run's cached results were computed with."""
    from engine.predict import run_model_path

    path = run_model_path(run_dir)
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Arrays into a compressed .npz, written atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: Path, identity: str, names: tuple[str, ...]) -> dict | None:
    """A cache written by save_arrays for this model identity; None when it is absent, stale,
    damaged or lacks one of `names` (the caller then computes it again)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["identity"]) != identity:
                return None
            return {name: stored[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
