"""Unfamiliar images: penultimate features far from every class of the training set.

The distance is Mahalanobis to each class mean under one shared, Ledoit-Wolf-shrunk covariance of
the training features (Lee et al., 2018, "A simple unified framework for detecting
out-of-distribution samples"); an image is unfamiliar when its distance to the nearest class is
above a threshold set on the validation split, so that about 5% of validation images would be
flagged. The statistics are fitted once per model file and kept in the run folder
(`familiarity.npz`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import features as feature_io
from engine.errors import UserError

FILE_NAME = "familiarity.npz"
FLAGGED_SHARE = 0.05  # of validation images, by construction of the threshold
MAX_FIT_IMAGES = 10_000  # training images measured; a larger split is sampled
MAX_DIMENSIONS = 1024  # wider features are projected on their top principal components first
PROJECTED_DIMENSIONS = 256


@dataclass
class Familiarity:
    """Class means, the shared precision matrix and the threshold; `unfamiliar(features)`."""

    means: np.ndarray  # classes x dimensions (classes without training images left out)
    precision: np.ndarray  # dimensions x dimensions, the inverse of the shrunk covariance
    threshold: float  # distances above it are unfamiliar
    center: np.ndarray  # the projection: (features - center) @ components.T, when wide
    components: np.ndarray  # 0 x 0 when the features are used as they are
    threshold_split: str = "validation"

    @classmethod
    def fit(
        cls,
        train_features: np.ndarray,
        train_labels: np.ndarray,
        validation_features: np.ndarray,
        flagged_share: float = FLAGGED_SHARE,
        threshold_split: str = "validation",
    ) -> Familiarity:
        """Fit on training features, then set the threshold so `flagged_share` of the
        validation features lie beyond it."""
        from sklearn.covariance import LedoitWolf

        train_features = np.asarray(train_features, np.float64)
        train_labels = np.asarray(train_labels)
        if len(train_features) < 2 or not len(validation_features):
            raise UserError(
                "Too few training or validation images to judge which images are unfamiliar."
            )
        if not (np.isfinite(train_features).all() and np.isfinite(validation_features).all()):
            raise UserError(
                "The model's features are not all finite numbers (did training diverge?), so "
                "unfamiliar images cannot be told apart; train the run again."
            )
        center = np.zeros(0)
        components = np.zeros((0, 0))
        if train_features.shape[1] > MAX_DIMENSIONS:
            from sklearn.decomposition import PCA

            count = min(PROJECTED_DIMENSIONS, len(train_features) - 1)
            pca = PCA(count, svd_solver="randomized", random_state=0).fit(train_features)
            center, components = pca.mean_, pca.components_
            train_features = (train_features - center) @ components.T
        classes = np.unique(train_labels)
        means = np.stack([train_features[train_labels == c].mean(axis=0) for c in classes])
        centered = train_features - means[np.searchsorted(classes, train_labels)]
        precision = LedoitWolf(assume_centered=True).fit(centered).precision_
        familiarity = cls(means, precision, 0.0, center, components, threshold_split)
        distances = familiarity.distances(validation_features)
        familiarity.threshold = float(np.quantile(distances, 1.0 - flagged_share))
        return familiarity

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each feature row to its nearest class mean."""
        features = np.asarray(features, np.float64)
        if self.components.size:
            features = (features - self.center) @ self.components.T
        nearest = np.full(len(features), np.inf)
        for mean in self.means:
            difference = features - mean
            squared = np.einsum("ij,jk,ik->i", difference, self.precision, difference)
            nearest = np.minimum(nearest, squared)
        return np.sqrt(np.maximum(nearest, 0.0))

    def unfamiliar(self, features: np.ndarray) -> np.ndarray:
        """True for each feature row farther from every class than the threshold."""
        return self.distances(features) > self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "means": self.means,
            "precision": self.precision,
            "threshold": np.array(self.threshold),
            "center": self.center,
            "components": self.components,
            "threshold_split": np.array(self.threshold_split),
        }


def fit_run(run_dir: Path, dual) -> Familiarity:
    """Fit on the run's training split, threshold on its validation split (train without one)."""
    dataset = feature_io.run_dataset(run_dir)
    _, labels, train, _ = feature_io.split_features(dual, dataset, "train", MAX_FIT_IMAGES)
    split = "validation" if len(dataset.indices("validation")) else "train"
    if split == "validation":
        _, _, validation, _ = feature_io.split_features(dual, dataset, split, MAX_FIT_IMAGES)
    else:  # no validation split: distances on fitted data are smaller, so more will be flagged
        validation = train
    return Familiarity.fit(train, labels, validation, threshold_split=split)


def load_or_fit(run_dir: Path, dual) -> Familiarity:
    """The run's statistics from familiarity.npz, fitted and stored first when missing, stale
    (another model file) or damaged."""
    run_dir = Path(run_dir)
    identity = feature_io.model_identity(run_dir)
    names = ("means", "precision", "threshold", "center", "components", "threshold_split")
    stored = feature_io.load_arrays(run_dir / FILE_NAME, identity, names)
    if stored is not None:
        return Familiarity(
            stored["means"],
            stored["precision"],
            float(stored["threshold"]),
            stored["center"],
            stored["components"],
            str(stored["threshold_split"]),
        )
    familiarity = fit_run(run_dir, dual)
    with contextlib.suppress(OSError):  # a read-only run folder: fitted, just not kept
        feature_io.save_arrays(
            run_dir / FILE_NAME, identity=np.array(identity), **familiarity.arrays()
        )
    return familiarity
