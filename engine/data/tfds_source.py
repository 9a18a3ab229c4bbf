"""TensorFlow Datasets as a source: encoded images copied once into a blob store, decoded by index.

`load_tfds_source("eurosat/rgb", config, cache_root)` reads each split once with the image feature
left encoded and keeps the bytes under `cache_root/tfds/<key>/` (engine.data.tfds_store); later
loads open that store without touching tfds' data. A dataset that is not downloaded fails at once,
with one sentence, when offline; so does a split spec that selects nothing, such as train[50%:10%].
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from engine import network
from engine.config import DataConfig
from engine.data.tfds_store import (
    STORE_FORMAT,
    Progress,
    TfdsSource,
    build_store,
    encoded,
    open_store,
)
from engine.errors import UserError

_encoded = encoded  # its name before the blob store had its own module
ORIGINS = ("train", "validation", "test")
DEFAULT_SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val"),
    "test": ("test",),
}


def load_tfds_source(
    name: str, config: DataConfig, cache_root: Path, progress: Progress | None = None
) -> TfdsSource:
    """A tfds image-classification dataset as a RawSource; downloads it first when online."""
    import tensorflow_datasets as tfds

    name = name.strip()
    if not name:
        raise UserError(
            "No tfds dataset named; write tfds:NAME, such as tfds:tf_flowers or tfds:eurosat/rgb."
        )
    requested = {
        "train": config.train_split.strip(),
        "validation": config.validation_split.strip(),
        "test": config.test_split.strip(),
    }
    for origin, spec in requested.items():
        if spec:
            _check_split(tfds, name, origin, spec, {})
    data_dir = str(Path(config.data_dir).expanduser()) if config.data_dir.strip() else None
    builder = _make_builder(tfds, name, data_dir)
    image_key, label_key = _feature_keys(tfds, builder, name)
    config_name = builder.builder_config.name if builder.builder_config else ""
    key_text = json.dumps(
        [STORE_FORMAT, builder.name, config_name, str(builder.version), requested], sort_keys=True
    )
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name.split(':')[0]}-{builder.version}").strip("_")
    store = Path(cache_root) / "tfds" / f"{safe}-{hashlib.sha1(key_text.encode()).hexdigest()[:12]}"

    source = open_store(store, name)
    if source is not None:
        return source
    _ensure_prepared(builder, name, data_dir)
    splits = _resolve_splits(tfds, builder, name, requested)
    about = {
        "name": name,
        "dataset": builder.name,
        "version": str(builder.version),
        "class_names": list(builder.info.features[label_key].names),
    }
    readers = _open_splits(tfds, builder, name, splits, image_key, label_key)
    build_store(store, readers, image_key, label_key, about, progress)
    source = open_store(store, name)
    if source is None:
        raise UserError(
            f"The cache of tfds dataset '{name}' in {store} could not be read back; delete that folder and load again."
        )
    return source


# ----- the builder ------------------------------------------------------------------------
def _make_builder(tfds: Any, name: str, data_dir: str | None) -> Any:
    """tfds.builder without any network access, with errors a user can act on."""
    from tensorflow_datasets.core.registered import DatasetNotFoundError

    base = name.split(":")[0].split("/")[0]
    try:
        return tfds.builder(name, data_dir=data_dir)
    except DatasetNotFoundError:
        # with_community_datasets=False: the community list is fetched from GCS, which hangs offline.
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(close)}?"
            if close
            else "see tfds.list_builders() for the names, such as tf_flowers, cifar10 or eurosat/rgb."
        )
        raise UserError(f"There is no tfds dataset named '{name}'; {hint}") from None
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        raise UserError(
            f"The tfds dataset '{name}' needs the Python package '{missing}'; install it with pip and retry."
        ) from None
    except (ValueError, AssertionError, KeyError) as error:
        reason = _first_line(error)
        configs = _config_names(tfds, base)
        if "/" in name and configs:
            reason = f"its configurations are {', '.join(f'{base}/{c}' for c in configs)}"
        raise UserError(f"The tfds dataset '{name}' cannot be loaded: {reason}.") from None


def _config_names(tfds: Any, base: str) -> list[str]:
    try:
        return [str(config.name) for config in tfds.builder_cls(base).BUILDER_CONFIGS]
    except Exception:  # only a hint for the message; any failure means no hint
        return []


def _feature_keys(tfds: Any, builder: Any, name: str) -> tuple[str, str]:
    """The image and label feature names, checked to be a uint8 Image and a ClassLabel."""
    features = builder.info.features
    keys = builder.info.supervised_keys
    if (
        isinstance(keys, (tuple, list))
        and len(keys) >= 2
        and all(isinstance(k, str) for k in keys[:2])
    ):
        image_key, label_key = keys[0], keys[1]
    else:
        image_key, label_key = "image", "label"
    top = dict(features.items()) if hasattr(features, "items") else {}
    if image_key not in top:
        images = [key for key, value in top.items() if isinstance(value, tfds.features.Image)]
        image_key = images[0] if len(images) == 1 else image_key
    if label_key not in top:
        labels = [key for key, value in top.items() if isinstance(value, tfds.features.ClassLabel)]
        label_key = labels[0] if len(labels) == 1 else label_key
    image, label = top.get(image_key), top.get(label_key)
    if not isinstance(image, tfds.features.Image):
        raise UserError(
            f"The tfds dataset '{name}' has no image feature ({', '.join(top) or 'no features'}); choose an image classification dataset."
        )
    # np_dtype, not dtype: dtype imports TensorFlow (3 s), which the offline answer must not wait for.
    image_dtype = np.dtype(getattr(image, "np_dtype", np.uint8))
    if image_dtype != np.uint8:
        raise UserError(
            f"The tfds dataset '{name}' stores {image_dtype} images, not 8-bit ones; choose another dataset."
        )
    if not isinstance(label, tfds.features.ClassLabel):
        raise UserError(
            f"The tfds dataset '{name}' has no class label feature ({', '.join(top)}); choose an image classification dataset."
        )
    return image_key, label_key


def _ensure_prepared(builder: Any, name: str, data_dir: str | None) -> None:
    """Download and prepare the dataset when it is not on disk; offline, fail at once."""
    if builder.is_prepared():
        return
    where = _display_path(
        str(getattr(builder, "data_dir_root", None) or data_dir or "~/tensorflow_datasets")
    )
    if not network.is_online():
        raise UserError(
            f"tfds dataset '{name}' is not downloaded in {where} and this machine is offline; connect to the internet once to download it, or load a folder, zip or npz instead."
        )
    try:
        builder.download_and_prepare()
    except (
        Exception
    ) as error:  # tfds raises many types (network, manual download, disk); all end here
        raise UserError(
            f"Downloading tfds dataset '{name}' into {where} failed ({_first_line(error)}); check the connection and the free disk space, then retry."
        ) from None


def _resolve_splits(
    tfds: Any, builder: Any, name: str, requested: dict[str, str]
) -> list[tuple[str, str, bool]]:
    """(origin, tfds split spec, asked for) triples: the user's specs, else the dataset's own."""
    available = list(builder.info.splits.keys())
    counts = {key: builder.info.splits[key] for key in available}
    splits = []
    for origin in ORIGINS:
        spec = requested[origin]
        if spec:
            _check_split(tfds, name, origin, spec, counts)
        else:
            # An empty split list means tfds does not know them (never prepared): assume "train".
            candidates = [
                n
                for n in DEFAULT_SPLIT_NAMES[origin]
                if n in available or (not available and n == "train")
            ]
            spec = candidates[0] if candidates else ""
        if spec:
            splits.append((origin, spec, bool(requested[origin])))
    if not any(origin == "train" for origin, *_ in splits):
        raise UserError(
            f"The tfds dataset '{name}' has no 'train' split (it has {', '.join(available)}); set the train split, such as {available[0]}[:80%]."
        )
    return splits


def _check_split(tfds: Any, name: str, origin: str, spec: str, counts: dict) -> None:
    """Refuse a split spec tfds cannot parse or one that selects nothing, such as train[50%:10%].

    counts (split name -> SplitInfo) is known once the dataset is prepared; without it only a
    slice whose two bounds count from the same end can be judged, and the rest waits for tfds.
    """
    where = f"The {origin} split '{spec}' of tfds dataset '{name}'"
    try:
        instruction = tfds.core.ReadInstruction.from_spec(spec)
    except (ValueError, TypeError, AssertionError, NotImplementedError) as error:
        raise UserError(
            f"{where} is not valid ({_first_line(error)}); write it like train, train[:80%] or train[80%:]."
        ) from None
    pending = [instruction]
    while pending:
        part = pending.pop()
        if hasattr(part, "left"):  # a sum such as train+test
            pending += [part.left, part.right]
            continue
        if not hasattr(part, "split_name"):  # "all"
            continue
        first, end, info = part.from_, part.to, counts.get(part.split_name)
        if info is not None and info.num_examples > 0:
            try:
                absolute = part.to_absolute({part.split_name: info})[0]
            except ValueError as error:
                raise UserError(
                    f"{where} is outside its {info.num_examples:,} examples ({_first_line(error)}); write a slice within it, such as {part.split_name}[:80%]."
                ) from None
            first = absolute.from_ or 0
            end = info.num_examples if absolute.to is None else absolute.to
            empty = end <= first
        else:
            empty = first is not None and end is not None and (first < 0) == (end < 0)
            empty = empty and first >= end
        if empty:
            raise UserError(
                f"{where} selects no examples: its slice starts at or after its end; write the start first, such as {part.split_name}[:80%] or {part.split_name}[80%:]."
            )


def _open_splits(
    tfds: Any,
    builder: Any,
    name: str,
    splits: list[tuple[str, str, bool]],
    image_key: str,
    label_key: str,
) -> list[tuple[str, str, Any, int]]:
    """(origin, spec, examples, expected count) per split, the images left encoded."""
    decoders = tfds.decode.PartialDecoding(
        {image_key: True, label_key: True}, decoders={image_key: tfds.decode.SkipDecoding()}
    )
    readers = []
    for origin, spec, asked in splits:
        where = f"The {origin} split '{spec}' of tfds dataset '{name}'"
        try:
            dataset = builder.as_dataset(split=spec, decoders=decoders, shuffle_files=False)
        except (ValueError, AssertionError, KeyError, TypeError) as error:
            available = ", ".join(builder.info.splits.keys()) or "unknown"
            raise UserError(
                f"{where} is not valid ({_first_line(error)}); its splits are {available}, written like train[:80%]."
            ) from None
        cardinality = int(dataset.cardinality())
        if cardinality == 0 and (asked or origin == "train"):
            raise UserError(
                f"{where} selects no examples; choose a split or slice that holds some, such as {spec.split('[')[0]}[:80%]."
            )
        if cardinality != 0:  # an empty split the dataset offers is as good as none
            readers.append((origin, spec, tfds.as_numpy(dataset), max(cardinality, 0)))
    return readers


# ----- messages ------------------------------------------------------------------------
def _first_line(error: BaseException) -> str:
    """The first line of an error, without tfds' 'Failed to construct dataset ...:' preamble."""
    lines = str(error).strip().splitlines()
    text = (
        re.sub(r'^Failed to construct dataset "[^"]*", builder_kwargs "[^"]*": ', "", lines[0])
        if lines
        else ""
    )
    return (text or type(error).__name__).rstrip(".: ")


def _display_path(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if path == home or path.startswith(home + os.sep) else path
