"""The allowed range of every config value: RunConfig.validate() checks a config against these
rules before a run folder is made, so a refused value leaves nothing behind."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from engine.config import (
    IMAGE_SIZE_RANGE,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_SEED,
    MODEL_NAMES,
    OPTIMIZERS,
    POOLINGS,
    RESIZE_MODES,
    SCHEDULES,
    TRANSFER_MODES,
    RunConfig,
    _short,
)
from engine.errors import UserError


def check(config: RunConfig) -> RunConfig:
    """config, or a UserError naming the first value out of its range."""
    if config.model.name not in MODEL_NAMES:
        raise UserError(
            f"Unknown model '{_short(config.model.name)[1:-1]}'; choose one of "
            f"{', '.join(MODEL_NAMES)}."
        )
    for section_name, rules in _RULES.items():
        for key, (accept, requirement) in rules.items():
            value = getattr(getattr(config, section_name), key)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(
                    f"The config value {section_name}.{key}={value!r} must be a finite number."
                )
            if not accept(value):
                raise UserError(
                    f"The config value {section_name}.{key}={_short(value)} is not allowed; "
                    f"it must be {requirement}."
                )
    data = config.data
    if data.validation_fraction + data.test_fraction >= 1:
        raise UserError(
            f"The config values data.validation_fraction={data.validation_fraction!r} and "
            f"data.test_fraction={data.test_fraction!r} leave no images to train on; "
            "keep their sum below 1."
        )
    check_edits(data.exclude, data.relabel)
    return config


MAX_EDITS = 1_000_000  # as many files as a folder may hold (engine.data.folders.MAX_FILES)
MAX_NAME_CHARACTERS = 4096  # an item id is a path under the dataset folder; a class name is shorter


def check_edits(exclude: Any, relabel: Any) -> None:
    """Refuse data.exclude and data.relabel that are not file names and class names, with a sentence.

    They come from config files and the edits file beside the cache, both untrusted.
    """
    if not isinstance(exclude, (list, tuple)) or not all(_name(item) for item in exclude):
        raise UserError(
            f"The config value data.exclude={_short(exclude)} is not allowed; it must be a list of "
            "file names as the Data page shows them, such as cat/cat_001.png."
        )
    if not isinstance(relabel, dict) or not all(
        _name(item) and _name(label) for item, label in relabel.items()
    ):
        raise UserError(
            f"The config value data.relabel={_short(relabel)} is not allowed; it must map file "
            'names to class names, such as {"cat/cat_001.png": "dog"}.'
        )
    if len(exclude) > MAX_EDITS or len(relabel) > MAX_EDITS:
        raise UserError(
            f"The config values data.exclude and data.relabel name more than {MAX_EDITS:,} files; "
            "that is more than a dataset holds."
        )


def _name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARACTERS and "\0" not in value


def _range(low: float, high: float = math.inf, below_high: bool = False) -> Callable[[Any], bool]:
    return lambda value: low <= value < high if below_high else low <= value <= high


_FRACTION = (_range(0, 1, below_high=True), "at least 0 and below 1")
_UNIT = (_range(0, 1), "between 0 and 1")
_COUNT = (_range(0), "0 or more")
_ONE_UP = (_range(1), "at least 1")
_POSITIVE = (lambda value: value > 0, "above 0")
_SEED = (_range(0, MAX_SEED), f"a whole number from 0 to {MAX_SEED}")
_SIZES = (
    f"0 (pick from the data) or a side from {IMAGE_SIZE_RANGE[0]} to {IMAGE_SIZE_RANGE[1]} pixels"
)
_RULES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "data": {
        "image_size": (lambda size: size == 0 or _range(*IMAGE_SIZE_RANGE)(size), _SIZES),
        "resize": (RESIZE_MODES.__contains__, " or ".join(RESIZE_MODES)),
        "validation_fraction": _FRACTION,
        "test_fraction": _FRACTION,
        "split_seed": _SEED,
        "max_pixels": _ONE_UP,
    },
    "augment": {
        **dict.fromkeys(("rotation", "zoom", "translation", "brightness", "contrast"), _UNIT),
        "random_crop": _FRACTION,
        "resized_crop": _FRACTION,
        "mixup": (_range(0), "0 (off) or more"),
    },
    "model": {
        **dict.fromkeys(("blocks", "filters", "kernel_size"), _ONE_UP),
        **dict.fromkeys(("dense_units", "stem_size", "fine_tune_layers", "head_epochs"), _COUNT),
        "dropout": _FRACTION,
        "head_dropout": _FRACTION,
        "pooling": (POOLINGS.__contains__, " or ".join(POOLINGS)),
        "mode": (TRANSFER_MODES.__contains__, ", ".join(TRANSFER_MODES)),
        "fine_tune_learning_rate_factor": _POSITIVE,
    },
    "train": {
        "epochs": (_range(0, MAX_EPOCHS), f"0 (fit the time budget) to {MAX_EPOCHS:,}"),
        "time_budget_minutes": _POSITIVE,
        "batch_size": (_range(1, MAX_BATCH_SIZE), f"from 1 to {MAX_BATCH_SIZE:,}"),
        "optimizer": (OPTIMIZERS.__contains__, ", ".join(OPTIMIZERS)),
        "learning_rate": _POSITIVE,
        "schedule": (SCHEDULES.__contains__, ", ".join(SCHEDULES)),
        **dict.fromkeys(("weight_decay", "warmup_epochs", "early_stopping_patience"), _COUNT),
        "history_every_steps": _COUNT,
        "label_smoothing": _FRACTION,
        "ema_momentum": (_range(0, 1, below_high=True), "0 (auto) or below 1"),
        "seed": _SEED,
        "steps_per_execution": _ONE_UP,
    },
}
