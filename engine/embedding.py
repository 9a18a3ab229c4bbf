"""The embedding view's data: penultimate features of the evaluated split, projected to 2-D.

PCA (scikit-learn) by default, t-SNE as an option; computed once per run, model file and method
and kept in the run folder (`embedding-pca.npz`, `embedding-tsne.npz`, written atomically; a
damaged or stale one is computed again). Each point carries its item id, true and predicted class.
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path

import numpy as np

from engine import features as feature_io
from engine.errors import UserError
from engine.jsonio import DamagedFile, read_json_object

METHODS = ("pca", "tsne")
MAX_POINTS = 5_000  # a larger split is sampled (with a fixed seed): t-SNE's time grows with it
ARRAYS = ("points", "labels", "predicted", "ids", "explained", "total", "split")


def project(
    features: np.ndarray, method: str = "pca", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(N x 2 points, share of variance of each axis, NaN for t-SNE) of N feature rows."""
    if method not in METHODS:
        raise UserError(f"There is no projection '{method}'; use pca or tsne.")
    features = np.asarray(features, np.float64)
    count, width = features.shape
    if count < 3:
        raise UserError(f"The embedding needs at least 3 images, and this split has {count}.")
    if method == "pca" or width < 2:
        from sklearn.decomposition import PCA

        components = min(2, width)
        pca = PCA(components, random_state=seed).fit(features)
        points = np.zeros((count, 2))
        points[:, :components] = pca.transform(features)
        explained = np.zeros(2)
        explained[:components] = pca.explained_variance_ratio_
        return points.astype(np.float32), explained
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (count - 1) / 3))
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    return points.astype(np.float32), np.full(2, np.nan)


def evaluated_split(run_dir: Path, dataset) -> str:
    """The split the run's evaluation used; test, else validation, when there is none."""
    with contextlib.suppress(DamagedFile):
        split = (read_json_object(Path(run_dir) / "evaluation.json") or {}).get("split")
        if split in ("train", "validation", "test") and len(dataset.indices(split)):
            return split
    return "test" if len(dataset.indices("test")) else "validation"


def _stored_predictions(run_dir: Path, indices: np.ndarray) -> np.ndarray | None:
    """The evaluation's predicted classes of these items (flip-averaged when it used TTA), so
    the embedding marks the same mistakes as the galleries; None when they do not match."""
    try:
        with np.load(Path(run_dir) / "predictions.npz", allow_pickle=False) as stored:
            by_item = dict(
                zip(stored["indices"].tolist(), stored["probabilities"].argmax(axis=1), strict=True)
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if not all(int(index) in by_item for index in indices):
        return None
    return np.array([by_item[int(index)] for index in indices], np.int64)


def compute(run_dir: Path, dual, method: str = "pca") -> dict[str, np.ndarray]:
    """The embedding's arrays, computed now (engine.embedding.embedding caches them)."""
    dataset = feature_io.run_dataset(run_dir)
    split = evaluated_split(run_dir, dataset)
    total = len(dataset.indices(split))
    indices, labels, features, probabilities = feature_io.split_features(
        dual, dataset, split, MAX_POINTS
    )
    points, explained = project(features, method)
    predicted = _stored_predictions(run_dir, indices)
    if predicted is None:
        predicted = probabilities.argmax(axis=1)
    return {
        "points": points,
        "labels": labels,
        "predicted": np.asarray(predicted, np.int64),
        "ids": np.array([dataset.item_name(index) for index in indices], dtype=str),
        "explained": explained,
        "total": np.array(total),
        "split": np.array(split),
        "class_names": np.array(dataset.class_names, dtype=str),
    }


def embedding(run_dir: Path, model, method: str = "pca") -> dict:
    """The run's 2-D embedding of its evaluated split, from the cache when it is current.

    {"method", "split", "points" (N x 2), "labels", "predicted", "ids" (item ids), "class_names",
    "explained" (share of variance per axis; NaN for t-SNE), "total" (the split's size; N is
    smaller when it was sampled)}.
    """
    if method not in METHODS:
        raise UserError(f"There is no projection '{method}'; use pca or tsne.")
    run_dir = Path(run_dir)
    path = run_dir / f"embedding-{method}.npz"
    identity = feature_io.model_identity(run_dir)
    stored = feature_io.load_arrays(path, identity, (*ARRAYS, "class_names"))
    if stored is None or len(stored["points"]) != len(stored["ids"]):
        stored = compute(run_dir, feature_io.features_model(model), method)
        with contextlib.suppress(OSError):  # a read-only run folder: computed, just not kept
            feature_io.save_arrays(path, identity=np.array(identity), **stored)
    return {
        "method": method,
        "split": str(stored["split"]),
        "points": np.asarray(stored["points"], np.float32),
        "labels": np.asarray(stored["labels"], np.int64),
        "predicted": np.asarray(stored["predicted"], np.int64),
        "ids": [str(item) for item in stored["ids"]],
        "class_names": [str(name) for name in stored["class_names"]],
        "explained": np.asarray(stored["explained"], np.float64),
        "total": int(stored["total"]),
    }
