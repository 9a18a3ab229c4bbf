"""Whether a horizontal flip turns one class into another: a check the recipe makes before it
chooses flip augmentation.

Flips are the first augmentation photo recipes reach for, and they are right for cats, flowers and
satellite tiles. They are wrong where the classes are mirror images of each other: an arrow
pointing left or right, a hand gesture made with the left or the right hand, a mark in the left or
the right half of a picture. There a flipped "left" training image is a "right" image labelled
"left", and the model cannot learn the task at all.

The check: a nearest-class-mean classifier on small thumbnails of a sample of the training images,
its means from one half of the sample, scored on the other half as the images are and flipped.
Where the classes differ in their overall layout only by a mirror, the classifier is right on the
images and wrong on their mirror images; where flips keep the class (photos of things), it scores
about the same on both (often near chance, which says nothing, and then flips stay).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.images import ImageError, resize_image

THUMBNAIL_SIDE = 16
SAMPLE_PER_CLASS = 60  # images a class, half for the class means and half to score them
SAMPLE_TOTAL = 1200  # at most this many images decoded in all, whatever the class count
MIN_ABOVE_CHANCE = 0.2  # the check speaks only when the means classify this far above chance
MAX_KEPT_SHARE = 0.5  # flips swap classes when they keep less than this share of that margin


@dataclass(frozen=True)
class MirrorCheck:
    images: int  # thumbnails scored
    accuracy: float  # nearest-mean accuracy on the images as they are
    flipped_accuracy: float  # the same on their mirror images
    chance: float

    @property
    def flips_swap_classes(self) -> bool:
        margin = self.accuracy - self.chance
        return (
            margin >= MIN_ABOVE_CHANCE
            and self.flipped_accuracy - self.chance < MAX_KEPT_SHARE * margin
        )

    def sentence(self) -> str:
        return (
            f"the classes look like mirror images of each other (class means on {self.images} "
            f"training images: {self.accuracy:.0%} right as they are, {self.flipped_accuracy:.0%} "
            "when flipped), so no flips"
        )


def check_mirror(
    source, train_indices: np.ndarray, max_pixels: int, seed: int = 0
) -> MirrorCheck | None:
    """The mirror check on a sample of the training items; None when too few images decode."""
    labels = np.asarray(source.labels)[train_indices]
    classes = np.unique(labels)
    if len(classes) < 2:
        return None
    per_class = max(4, min(SAMPLE_PER_CLASS, SAMPLE_TOTAL // len(classes)))
    rng = np.random.default_rng(seed)
    fit, score, fit_labels, score_labels = [], [], [], []
    for label in classes:
        members = np.asarray(train_indices)[labels == label]
        chosen = rng.permutation(members)[:per_class]
        thumbnails = [_thumbnail(source, int(index), max_pixels) for index in chosen]
        thumbnails = [thumb for thumb in thumbnails if thumb is not None]
        half = len(thumbnails) // 2
        if half < 2:
            return None
        fit += thumbnails[:half]
        score += thumbnails[half:]
        fit_labels += [label] * half
        score_labels += [label] * (len(thumbnails) - half)
    fit_array, score_array = np.stack(fit), np.stack(score)
    fit_labels, score_labels = np.array(fit_labels), np.array(score_labels)
    means = np.stack([fit_array[fit_labels == label].mean(axis=0) for label in classes])

    def accuracy(images: np.ndarray) -> float:
        distances = ((images[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
        return float(np.mean(classes[distances.argmin(axis=1)] == score_labels))

    return MirrorCheck(
        images=len(score_array),
        accuracy=accuracy(score_array),
        flipped_accuracy=accuracy(score_array[:, :, ::-1]),
        chance=1.0 / len(classes),
    )


def _thumbnail(source, index: int, max_pixels: int) -> np.ndarray | None:
    """A THUMBNAIL_SIDE square thumbnail in [0, 1], standardised per image; None if it fails to
    decode (the load report names such files when the data is decoded)."""
    try:
        image = source.read(index, max_pixels, draft_size=THUMBNAIL_SIDE)
    except (ImageError, OSError):
        return None
    if isinstance(image, np.ndarray):
        from PIL import Image

        image = Image.fromarray(image)
    values = resize_image(image, THUMBNAIL_SIDE).astype(np.float32) / 255.0
    return (values - values.mean()) / (values.std() + 1e-3)
