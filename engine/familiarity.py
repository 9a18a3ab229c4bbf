"""Unfamiliar images: penultimate features far from every class of the training set, or a first
convolution that answers beyond anything the training images made it answer (engine.extremes).

The distance is Mahalanobis to each class mean under one shared, Ledoit-Wolf-shrunk covariance of
the training features (Lee et al., 2018, "A simple unified framework for detecting
out-of-distribution samples"); an image is unfamiliar when its distance to the nearest class is
above a threshold set on the validation split. With the first-convolution ranges as well (models
whose first convolution is one of their own layers), the distance's threshold flags 1 % of
validation images and the ranges' threshold the rest of about 5 %; without them, the distance flags
about 5 %. On a flowers128 run the distance alone flagged 1.8 % of cats_vs_dogs photos and none
of 100 noise images; the ranges flag most of both (engine.extremes). The statistics are fitted once per model file and kept in the run folder
(`familiarity.npz`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import features as feature_io
from engine.errors import UserError
from engine.extremes import Extremes, extremes_tensor

FILE_NAME = "familiarity.npz"
# Raised whenever what the statistics measure changes, so familiarity.npz files fitted the old way
# are fitted again instead of being compared with new measurements (2: the first convolution's
# extremes leave out the positions its zero padding reaches).
STATISTICS_VERSION = 2
FLAGGED_SHARE = 0.05  # of validation images, by construction of the threshold
DISTANCE_SHARE = 0.01  # of those, what the distance flags when the ranges are there too
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
    extremes: Extremes | None = None  # the first convolution's ranges per predicted class
    extremes_threshold: float = float("inf")  # deviations above it are unfamiliar

    @classmethod
    def fit(
        cls,
        train_features: np.ndarray,
        train_labels: np.ndarray,
        validation_features: np.ndarray,
        flagged_share: float = FLAGGED_SHARE,
        threshold_split: str = "validation",
        train_extremes: tuple[np.ndarray, np.ndarray] | None = None,
        validation_extremes: tuple[np.ndarray, np.ndarray] | None = None,
        class_count: int = 0,
    ) -> Familiarity:
        """Fit on training features, then set the threshold so `flagged_share` of the
        validation features lie beyond it.

        train_extremes and validation_extremes, when given, are (first-convolution statistics,
        predicted classes) of the same images, out of class_count (the model's outputs): then
        the distance flags DISTANCE_SHARE of the validation images and the ranges about the rest
        of flagged_share."""
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
        if train_extremes is None or validation_extremes is None:
            familiarity.threshold = float(np.quantile(distances, 1.0 - flagged_share))
            return familiarity
        familiarity.threshold = float(
            np.quantile(distances, 1.0 - min(DISTANCE_SHARE, flagged_share))
        )
        statistics, predicted = train_extremes
        count = max(int(np.max(train_labels)), int(np.max(predicted))) + 1
        extremes = Extremes.fit(statistics, predicted, max(count, class_count))
        deviations = extremes.deviations(*validation_extremes)[distances <= familiarity.threshold]
        remaining = flagged_share * len(distances) - float(
            np.sum(distances > familiarity.threshold)
        )
        familiarity.extremes = extremes
        familiarity.extremes_threshold = (
            float(np.quantile(deviations, 1.0 - remaining / len(deviations)))
            if remaining > 0 and len(deviations)
            else float(deviations.max(initial=0.0))
        )
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

    def unfamiliar(
        self,
        features: np.ndarray,
        extremes: np.ndarray | None = None,
        predicted: np.ndarray | None = None,
    ) -> np.ndarray:
        """True for each image whose features are farther from every class than the threshold,
        or (given its first-convolution statistics and predicted class) whose statistics fall
        beyond the ranges' threshold."""
        flags = self.distances(features) > self.threshold
        if self.extremes is not None and extremes is not None and predicted is not None:
            flags |= self.extremes.deviations(extremes, predicted) > self.extremes_threshold
        return flags

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "means": self.means,
            "precision": self.precision,
            "threshold": np.array(self.threshold),
            "center": self.center,
            "components": self.components,
            "threshold_split": np.array(self.threshold_split),
            "extremes_low": self.extremes.low if self.extremes else np.zeros((0, 0)),
            "extremes_high": self.extremes.high if self.extremes else np.zeros((0, 0)),
            "extremes_threshold": np.array(self.extremes_threshold),
        }


# What familiarity.npz holds: the keys of Familiarity.arrays(), read back by load_or_fit.
ARRAY_NAMES = (
    "means",
    "precision",
    "threshold",
    "center",
    "components",
    "threshold_split",
    "extremes_low",
    "extremes_high",
    "extremes_threshold",
)


def measure_model(model):
    """The Keras model giving [features, probabilities] and, where the model has its own first
    convolution, that convolution's statistics (engine.extremes)."""
    return feature_io.features_model(model, extra=extremes_tensor)


def fit_run(run_dir: Path, measure) -> Familiarity:
    """Fit on the run's training split, threshold on its validation split (train without one).

    `measure` is measure_model's model for the run's model."""
    dataset = feature_io.run_dataset(run_dir)
    _, labels, train = feature_io.split_outputs(measure, dataset, "train", MAX_FIT_IMAGES)
    split = "validation" if len(dataset.indices("validation")) else "train"
    if split == "validation":
        _, _, validation = feature_io.split_outputs(measure, dataset, split, MAX_FIT_IMAGES)
    else:  # no validation split: distances on fitted data are smaller, so more will be flagged
        validation = train
    extras = {}
    if len(train) > 2 and len(train[0]) and len(validation[0]):
        extras = {
            "train_extremes": (train[2], train[1].argmax(axis=1)),
            "validation_extremes": (validation[2], validation[1].argmax(axis=1)),
            "class_count": train[1].shape[1],
        }
    return Familiarity.fit(train[0], labels, validation[0], threshold_split=split, **extras)


def load_or_fit(run_dir: Path, measure) -> Familiarity:
    """The run's statistics from familiarity.npz, fitted and stored first when missing, stale
    (another model file) or damaged."""
    run_dir = Path(run_dir)
    identity = f"statistics {STATISTICS_VERSION}, {feature_io.model_identity(run_dir)}"
    stored = feature_io.load_arrays(run_dir / FILE_NAME, identity, ARRAY_NAMES)
    if stored is not None:
        low, high = stored["extremes_low"], stored["extremes_high"]
        return Familiarity(
            stored["means"],
            stored["precision"],
            float(stored["threshold"]),
            stored["center"],
            stored["components"],
            str(stored["threshold_split"]),
            Extremes(low, high) if low.size and low.shape == high.shape else None,
            float(stored["extremes_threshold"]),
        )
    familiarity = fit_run(run_dir, measure)
    with contextlib.suppress(OSError):  # a read-only run folder: fitted, just not kept
        feature_io.save_arrays(
            run_dir / FILE_NAME, identity=np.array(identity), **familiarity.arrays()
        )
    return familiarity
