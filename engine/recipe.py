"""Defaults that learn: a training recipe resolved from the data, then the user's choices on top.

`recommend(dataset)` looks at the indexed data (colour or grey, image sides, counts) and returns
a partial config plus one sentence per decision. `resolve(dataset, user)` merges what the user
set over it into a full RunConfig, which the run writes to config.json, so every resolved value
is recorded and a rerun of that file is the same run. Epochs stay 0 ("fit the time budget")
until the worker has measured this machine's speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.config import RunConfig

PHOTO_MIN_SIDE = 64  # a median shorter side at least this, in colour, is "photos"
PHOTO_IMAGE_SIZE = 128
# Larger photos in a set of SMALL_PHOTO_SET training images or more train from scratch at this
# side: cats_vs_dogs (photos about 500x375) reached 0.850, 0.852 and 0.858 test accuracy at 160 px
# (45-58 epochs fit the 15-minute budget) against 0.832 and 0.816 at 128 px (66-74 epochs); the
# finer detail is worth the fewer epochs there. Photos smaller than 160 px are not enlarged, small sets stay at
# 128 px (measured there), and transfer learning keeps PHOTO_IMAGE_SIZE.
LARGE_PHOTO_IMAGE_SIZE = 160
TRANSFER_MODEL = "mobilenet_v2"
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}

# Flip, zoom, shift and contrast. A random resized crop (resized_crop 0.65 in place of zoom and
# shift) trains faster (57 epochs fit the 15-minute budget on flowers128 against 45) but ended
# lower there (test accuracy 0.725 against 0.752; at 30 epochs 0.731 against 0.743), so it stays
# an option, not the default.
PHOTO_AUGMENT = {
    "horizontal_flip": True,
    "zoom": 0.2,
    "translation": 0.1,
    "contrast": 0.2,
}
# Under SMALL_PHOTO_SET training images a model memorises zoom and shift: the random resized crop,
# a stronger augmentation, took a 204-image cats_vs_dogs subset from 0.517 (chance) to 0.658.
SMALL_PHOTO_SET = 1000
SMALL_PHOTO_AUGMENT = {"horizontal_flip": True, "resized_crop": 0.65, "contrast": 0.2}
SMALL_COLOUR_AUGMENT = {"horizontal_flip": True, "translation": 0.1}
# Digits and other grey glyphs: a flip makes a different (or no) symbol, so shifts only.
GREY_AUGMENT = {"translation": 0.08, "zoom": 0.08}

TRAIN_COMMON = {
    "optimizer": "adamw",
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "schedule": "warmup_cosine",
    "warmup_epochs": 2.0,
    "label_smoothing": 0.1,
    "ema": True,
    "ema_momentum": 0.0,
    "epochs": 0,  # fitted to the time budget on this machine when the run starts
    # No early stopping: the cosine schedule needs its whole length, and on a small validation
    # set a patience stops a run while its learning rate is still high. A diverged loss (NaN)
    # still stops it.
    "early_stopping_patience": 0,
}

# Small colour images train without label smoothing. Smoothing caps how confident the model may
# be, so once one cue separates the classes it pushes every further cue back (Mueller, Kornblith
# and Hinton, 2019: it erases information from the penultimate layer). On two classes told apart
# by a bright square in the left or the right half, the default run that smoothed decided "right"
# by "nothing on the left", and Grad-CAM's peak lay in the square's half for 21 of 30 test images;
# without smoothing the model keeps both squares as evidence: 27, 28 and 29 of 30 over three data
# seeds (200 epochs each; tests/test_explain.py's set). What it costs on CIFAR-like data: on
# cifar10_subset at 16 epochs, 0.634 with smoothing and 0.626 without (1,000 test images, McNemar
# p = 0.42): no measurable difference. Photos keep it.
SMALL_COLOUR_TRAIN = {"label_smoothing": 0.0}


@dataclass
class Recipe:
    kind: str  # photos, small colour images, grey images, transfer
    config: dict[str, dict[str, Any]]  # a partial RunConfig dict
    notes: list[str] = field(default_factory=list)
    train_count: int = 0  # training images, for the time-budget note (see notes_for)


def describe_images(dataset) -> dict[str, Any]:
    """Colour or grey, and the median shorter side, from the file headers (nothing decoded)."""
    headers = dataset.source.headers or []
    if not headers:
        return {"colour": True, "median_side": 0, "images": 0}
    sides = np.array([min(width, height) for width, height, _ in headers])
    grey = sum(1 for _, _, mode in headers if mode in GREY_MODES)
    return {
        "colour": grey < len(headers) / 2,
        "median_side": int(np.median(sides)),
        "images": len(headers),
    }


def recommend(dataset, weights_available: Callable[[str, int], bool] | None = None) -> Recipe:
    """The recipe for this data. weights_available(model, size) says whether ImageNet weights
    can be had (cached or online); None means do not consider transfer learning."""
    images = describe_images(dataset)
    side, colour = images["median_side"], images["colour"]
    train_count = len(dataset.indices("train"))
    mirror = _mirror_note(dataset) if colour else ""
    if colour and side >= PHOTO_MIN_SIDE:
        size = PHOTO_IMAGE_SIZE if side >= PHOTO_IMAGE_SIZE else int(side // 16 * 16)
        small = train_count < SMALL_PHOTO_SET
        scratch_size = (
            LARGE_PHOTO_IMAGE_SIZE if side >= LARGE_PHOTO_IMAGE_SIZE and not small else size
        )
        photo_augment = _without_flips(SMALL_PHOTO_AUGMENT if small else PHOTO_AUGMENT, mirror)
        augment_note = (
            f"{'' if mirror else 'flip, '}random resized crop and contrast augmentation (under {SMALL_PHOTO_SET:,} "
            "training images, the stronger augmentation)"
            if small
            else f"{'' if mirror else 'flip, '}zoom, shift and contrast augmentation"
        )

        def photo_notes(chosen: int) -> list[str]:
            inputs = f"photos: colour, median shorter side {side} px, so {chosen}x{chosen} inputs"
            return [f"{inputs} and {augment_note}"] + ([mirror] if mirror else [])

        if weights_available is not None and weights_available(TRANSFER_MODEL, size):
            return Recipe(
                "transfer",
                {
                    "data": {"image_size": size},
                    "augment": dict(photo_augment),
                    "model": {
                        "name": TRANSFER_MODEL,
                        "weights": "imagenet",
                        "mode": "two_phase",
                    },
                    "train": {
                        **TRAIN_COMMON,
                        "learning_rate": 1e-3,
                        "time_budget_minutes": 15.0,
                    },
                },
                [
                    *photo_notes(size),
                    f"ImageNet weights for {TRANSFER_MODEL} are available: two-phase transfer "
                    "learning (the head first, then the top block fine-tuned)",
                ],
                train_count,
            )
        notes = photo_notes(scratch_size)
        if weights_available is not None:
            notes.append(
                f"ImageNet weights for {TRANSFER_MODEL} are not cached and this machine is "
                "offline, so the model trains from scratch (residual_cnn)"
            )
        return Recipe(
            "photos",
            {
                "data": {"image_size": scratch_size},
                "augment": dict(photo_augment),
                "model": {"name": "residual_cnn", "dropout": 0.2},
                "train": {**TRAIN_COMMON, "time_budget_minutes": 15.0},
            },
            notes,
            train_count,
        )
    size = int(min(64, max(32, side)))
    if colour:
        return Recipe(
            "small colour images",
            {
                "data": {"image_size": size},
                "augment": _without_flips(SMALL_COLOUR_AUGMENT, mirror),
                "model": {"name": "residual_cnn", "dropout": 0.2},
                "train": {**TRAIN_COMMON, **SMALL_COLOUR_TRAIN, "time_budget_minutes": 10.0},
            },
            [
                f"small colour images (median side {side} px): {size}x{size} inputs, "
                + ("shifts" if mirror else "flips and shifts")
                + ", no label smoothing",
                *([mirror] if mirror else []),
            ],
            train_count,
        )
    return Recipe(
        "grey images",
        {
            "data": {"image_size": size},
            "augment": dict(GREY_AUGMENT),
            "model": {"name": "default_cnn"},
            "train": {**TRAIN_COMMON, "time_budget_minutes": 1.5},
        },
        [
            f"grey images such as digits (median side {side} px): {size}x{size} inputs, small "
            "shifts and zoom, no flips",
        ],
        train_count,
    )


def _mirror_note(dataset) -> str:
    """A sentence when a horizontal flip would turn one class into another, else empty."""
    from engine.data.mirror import check_mirror

    check = check_mirror(dataset.source, dataset.indices("train"), dataset.config.max_pixels)
    return check.sentence() if check is not None and check.flips_swap_classes else ""


def _without_flips(augment: dict[str, Any], mirror: str) -> dict[str, Any]:
    """augment, less the horizontal flip when the mirror check found mirrored classes."""
    return {
        name: value for name, value in augment.items() if not (mirror and name == "horizontal_flip")
    }


def notes_for(notes: list[str], train_count: int, config: RunConfig) -> list[str]:
    """A recipe's notes for the resolved config: with the time-budget sentence of its own budget
    when its epochs are fitted to one (train.epochs 0), without it when the user set epochs."""
    if config.train.epochs:
        return list(notes)
    return [
        *notes,
        f"epochs are fitted to a {config.train.time_budget_minutes:g}-minute training budget on "
        f"this machine ({train_count:,} training images)",
    ]


def merge(base: dict, override: dict) -> dict:
    """base with override's sections merged in, key by key (override wins)."""
    result = {section: dict(values) for section, values in base.items()}
    for section, values in override.items():
        result[section] = {**result.get(section, {}), **values}
    return result


def resolve(
    dataset,
    user: dict[str, dict[str, Any]] | None = None,
    weights_available: Callable[[str, int], bool] | None = None,
) -> tuple[RunConfig, Recipe]:
    """The full config: the data's recipe with what the user set on top of it."""
    recipe = recommend(dataset, weights_available)
    return RunConfig.from_dict(merge(recipe.config, user or {})), recipe


def describe(config: RunConfig) -> str:
    """One line of what a run will use, for the command line."""
    augment = [name for name, value in vars(config.augment).items() if value]
    train = config.train
    epochs = (
        f"epochs fitted to {train.time_budget_minutes:g} min"
        if train.epochs == 0
        else f"{train.epochs} epochs"
    )
    return (
        f"{config.model.name} at {config.data.image_size or 'auto'} px; augmentation "
        f"{', '.join(augment) or 'off'}; {train.optimizer} {train.learning_rate:g} "
        f"{train.schedule}; {epochs}, batch {train.batch_size}"
    )


def default_weights_check(name: str, image_size: int) -> bool:
    """Whether ImageNet weights for name can be had here (cached, or this machine is online)."""
    from engine.imagenet_weights import imagenet_weights_available

    return bool(imagenet_weights_available(name, image_size))
