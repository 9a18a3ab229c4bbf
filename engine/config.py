"""Frozen dataclasses for data, augmentation, model and training, with a JSON round-trip.

A run's `config.json` is `RunConfig.to_dict()`; `RunConfig.from_dict(json.load(...))` rebuilds it.
`RunConfig.validate()` refuses a value out of its range with one sentence, before a run folder is
made; `RunConfig.load` refuses a file that is no run config (a list, null, 1e400, NaN...).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.errors import UserError

# The model names are the registry's (one spec per model), exported here with the other lists.
from engine.registry import MODEL_FAMILIES, MODEL_NAMES, TRANSFER_MODEL_NAMES  # noqa: F401

# The words a config may use, and the limits of its numbers (RunConfig.validate checks them).
RESIZE_MODES = ("squash", "crop")
POOLINGS = ("global_average", "flatten")
TRANSFER_MODES = ("feature_extraction", "fine_tuning", "two_phase")
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULES = ("warmup_cosine", "cosine", "constant", "plateau")
IMAGE_SIZE_RANGE = (8, 1024)  # the square side in pixels; 0 means "pick one from the data"
MAX_SEED = 2**32 - 1  # numpy's and Keras's seeds are unsigned 32-bit
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536


@dataclass(frozen=True)
class DataConfig:
    spec: str = "digits"  # digits, tfds:NAME, a folder, a .zip or a .npz
    # Square side fed to the model; 0 picks one from the data (see data.auto_image_size)
    image_size: int = 0
    # squash (like image_dataset_from_directory) or crop (centre crop to square)
    resize: str = "squash"
    # Taken from train, stratified, when the source has no validation split
    validation_fraction: float = 0.15
    test_fraction: float = 0.15  # taken from train, stratified, when the source has no test split
    split_seed: int = 42  # the same seed gives the same split
    data_dir: str = ""  # tfds data_dir; empty means tfds' default (~/tensorflow_datasets)
    train_split: str = ""  # tfds split specs such as "train[:80%]"; empty picks the dataset's own
    validation_split: str = ""
    test_split: str = ""
    max_pixels: int = 40_000_000  # larger images are skipped and reported (decompression bombs)
    # The user's edits (engine/data/edits.py), recorded here so a rerun from a run's config.json
    # uses the same data: files left out, by item id (the path under the dataset folder, or
    # origin[row]), and files given another class (item id -> class name).
    exclude: tuple[str, ...] = ()
    relabel: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON gives a list and any order; sorted, equal choices make equal configs and cache
        # keys. Values of another kind are left for engine.validation to refuse with a sentence.
        if isinstance(self.exclude, (list, tuple)) and all(
            isinstance(item, str) for item in self.exclude
        ):
            object.__setattr__(self, "exclude", tuple(sorted(set(self.exclude))))
        if isinstance(self.relabel, dict) and all(isinstance(k, str) for k in self.relabel):
            object.__setattr__(self, "relabel", dict(sorted(self.relabel.items())))


@dataclass(frozen=True)
class AugmentConfig:
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotation: float = 0.0  # fraction of a full turn, as keras.layers.RandomRotation
    zoom: float = 0.0  # fraction, as keras.layers.RandomZoom
    translation: float = 0.0  # fraction of height and width, as keras.layers.RandomTranslation
    brightness: float = 0.0  # fraction of the value range, as keras.layers.RandomBrightness
    contrast: float = 0.0  # as keras.layers.RandomContrast
    random_crop: float = 0.0  # fraction of the side cropped away at random, then resized back
    # Random resized crop (as torchvision's and Inception's): a crop that cuts away up to this
    # share of the area, aspect ratio 3:4 to 4:3, anywhere in the image, resized back. 0 = off.
    resized_crop: float = 0.0
    # mixup (Zhang et al., 2018): images and labels of a batch blended with weights drawn from
    # Beta(mixup, mixup); 0 = off. Training batches only; the preview does not show it.
    mixup: float = 0.0

    @property
    def enabled(self) -> bool:
        return any(getattr(self, item.name) for item in fields(self))


@dataclass(frozen=True)
class ModelConfig:
    name: str = "default_cnn"  # see `python -m engine models`
    # custom_cnn (and default_cnn, which is custom_cnn with these defaults)
    blocks: int = 3
    filters: int = 32  # filters of the first block; each block doubles them
    kernel_size: int = 3
    batch_norm: bool = True
    dropout: float = 0.3
    dense_units: int = 128
    pooling: str = "global_average"  # global_average or flatten
    # Stride-2 stem convolutions halve larger inputs to this side first; 0 = none
    stem_size: int = 64
    # transfer learning from keras.applications
    weights: str = "imagenet"  # imagenet, none, or the path of a local weights file
    mode: str = "feature_extraction"  # feature_extraction, fine_tuning or two_phase
    # 0: from the architecture's default block; N > 0: the top N layers of the base
    fine_tune_layers: int = 0
    fine_tune_from: str = ""  # unfreeze from this named layer on (wins over fine_tune_layers), such as VGG16's block5_conv3
    # fine-tuning learning rate = learning_rate * factor
    fine_tune_learning_rate_factor: float = 0.1
    head_epochs: int = 0  # two_phase: epochs with the base frozen; 0 means half of the epochs
    head_dropout: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # 0 fits the epochs to time_budget_minutes, measured on this machine
    time_budget_minutes: float = 15.0  # the training time epochs=0 aims at
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw, adam, sgd or rmsprop
    learning_rate: float = 2e-3  # the peak learning rate (after warm-up)
    weight_decay: float = 0.05  # decoupled, as AdamW; 0 turns it off
    # warmup_cosine, cosine, constant, or plateau (halve on a val_loss plateau)
    schedule: str = "warmup_cosine"
    warmup_epochs: float = 2.0  # warmup_cosine: linear warm-up, at most a fifth of the steps
    early_stopping_patience: int = 0  # epochs without val_loss improvement; 0 turns it off
    class_weights: bool = False  # weight classes by inverse frequency
    label_smoothing: float = 0.1
    ema: bool = True  # validate, keep and evaluate an exponential moving average of the weights
    # 0 picks it from the run's length: an average over about 5% of the steps
    ema_momentum: float = 0.0
    seed: int = 42
    mixed_precision: bool = False  # used only on a GPU
    steps_per_execution: int = 1
    history_every_steps: int = 0  # in-epoch history lines; 0 picks about 10 per epoch


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> RunConfig:
        if not isinstance(value, dict):
            raise UserError(
                f"The run config must be a JSON object with data, augment, model and train "
                f"sections, not {_json_kind(value)}."
            )
        unknown = set(value) - {item.name for item in fields(cls)}
        if unknown:
            raise UserError(
                f"The run config has unknown sections {sorted(unknown)}; use data, augment, model and train."
            )
        parts = {}
        for item in fields(cls):
            section_type = item.default_factory  # type: ignore[misc]
            parts[item.name] = section_from_dict(section_type, value.get(item.name, {}), item.name)
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """A config file, refused with a sentence when it is unreadable, not JSON or out of range."""
        return cls.from_dict(_read_config_file(path)).validate()

    @staticmethod
    def load_partial(path: str | Path) -> dict[str, Any]:
        """A config file as written, sections, keys and values checked but nothing filled in."""
        value = _read_config_file(path)
        config = RunConfig.from_dict(value).validate()
        return {
            section: {key: getattr(getattr(config, section), key) for key in keys}
            for section, keys in value.items()
        }

    def validate(self) -> RunConfig:
        """Return self, or raise UserError naming the first value out of its range."""
        from engine.validation import check

        return check(self)

    def replace(self, **sections: Any) -> RunConfig:
        """Return a copy with some fields changed: replace(train={"epochs": 3})."""
        changed = {}
        for name, updates in sections.items():
            section = getattr(self, name)
            changed[name] = section_from_dict(
                type(section), {**dataclasses.asdict(section), **updates}, name
            )
        return dataclasses.replace(self, **changed)


def section_from_dict(section_type: type, value: dict[str, Any], name: str) -> Any:
    """Build one config section, refusing unknown keys and casting numbers to the field's type."""
    if not isinstance(value, dict):
        raise UserError(f"The config section '{name}' must be a JSON object.")
    known = {item.name: item for item in fields(section_type)}
    unknown = set(value) - set(known)
    if unknown:
        raise UserError(
            f"The config section '{name}' has unknown keys {sorted(unknown)}; known keys are {sorted(known)}."
        )
    cast = {}
    for key, raw in value.items():
        default = getattr(section_type(), key)
        try:
            cast[key] = _cast(raw, default)
        except (TypeError, ValueError, OverflowError):
            raise UserError(
                f"The config value {name}.{key}={_short(raw)} is not a valid "
                f"{type(default).__name__}."
            ) from None
    return section_type(**cast)


TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _cast(raw: Any, default: Any) -> Any:
    """raw as the type of default; ValueError or TypeError when it is not one."""
    if isinstance(default, (tuple, dict)):
        return raw  # a list or an object (data.exclude, data.relabel): engine.validation checks it
    if isinstance(raw, (dict, list)) or (isinstance(raw, bool) and not isinstance(default, bool)):
        raise TypeError("not a single value of this type")
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ValueError(word)
        return word in TRUE_WORDS
    if isinstance(default, int):
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError("not a whole number")  # int(2.7) would quietly train 2 epochs
        return int(raw)  # OverflowError for 1e400 (inf)
    if isinstance(default, float):
        return float(raw)
    return "" if raw is None else str(raw)


def _read_config_file(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"The config file {path} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror
        raise UserError(
            f"The config file {path} cannot be read ({reason}); give a readable JSON file."
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(
            f"The config file {path} is not valid JSON ({error.msg} at line {error.lineno}); fix it and retry."
        ) from None
    except RecursionError:
        raise UserError(
            f"The config file {path} is nested too deeply to be a run config."
        ) from None


def _json_kind(value: Any) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), "a list" if isinstance(value, list) else "a string")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
