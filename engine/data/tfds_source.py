"""TensorFlow Datasets as a source: encoded images copied once into a blob store, decoded by index.

`load_tfds_source("eurosat/rgb", config, cache_root)` reads each split once with the image feature
left encoded and keeps the bytes under `cache_root/tfds/<key>/`; later loads open that store without
touching tfds' data. A dataset that is not downloaded fails at once, with one sentence, when offline.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine import network
from engine.config import DataConfig
from engine.data.images import open_image
from engine.data.sources import RawSource
from engine.errors import UserError

Progress = Callable[[int, int], None]  # (done, total)
STORE_FORMAT = 1
ORIGINS = ("train", "validation", "test")
DEFAULT_SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val"),
    "test": ("test",),
}


@dataclass
class TfdsSource(RawSource):
    """A RawSource whose items are numbers into a blob of encoded images on disk."""

    blob_path: str = ""
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    split_names: list[tuple[str, int, int]] = field(
        default_factory=list
    )  # (spec, first, end) in the blob
    _blob: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, index: int, max_pixels: int, draft_size: int = 0) -> Image.Image:
        """Decode one item to an RGB PIL image; ImageError when its bytes are not a usable image."""
        entry = self.items[index]
        data = bytes(self._blob_array()[self.offsets[entry] : self.offsets[entry + 1]])
        return open_image(data, max_pixels, draft_size=draft_size)

    def name(self, index: int) -> str:
        return _entry_name(self.split_names, self.items[index])

    def _blob_array(self) -> np.ndarray:
        with self._lock:
            if self._blob is None:
                # A memory map lets the decoding threads read without holding the whole blob in memory.
                size = os.path.getsize(self.blob_path)
                self._blob = (
                    np.memmap(self.blob_path, dtype=np.uint8, mode="r")
                    if size
                    else np.zeros(0, np.uint8)
                )
            return self._blob


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
    data_dir = str(Path(config.data_dir).expanduser()) if config.data_dir.strip() else None
    builder = _make_builder(tfds, name, data_dir)
    image_key, label_key = _feature_keys(tfds, builder, name)
    requested = {
        "train": config.train_split.strip(),
        "validation": config.validation_split.strip(),
        "test": config.test_split.strip(),
    }
    config_name = builder.builder_config.name if builder.builder_config else ""
    key_text = json.dumps(
        [STORE_FORMAT, builder.name, config_name, str(builder.version), requested], sort_keys=True
    )
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name.split(':')[0]}-{builder.version}").strip("_")
    store = Path(cache_root) / "tfds" / f"{safe}-{hashlib.sha1(key_text.encode()).hexdigest()[:12]}"

    source = _open_store(store, name)
    if source is not None:
        return source
    _ensure_prepared(builder, name, data_dir)
    splits = _resolve_splits(builder, name, requested)
    label_feature = builder.info.features[label_key]
    _build_store(
        tfds,
        builder,
        name,
        splits,
        image_key,
        label_key,
        list(label_feature.names),
        store,
        progress,
    )
    source = _open_store(store, name)
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


def _resolve_splits(builder: Any, name: str, requested: dict[str, str]) -> list[tuple[str, str]]:
    """(origin, tfds split spec) pairs: the user's specs, else the dataset's own split names."""
    available = list(builder.info.splits.keys())
    splits = []
    for origin in ORIGINS:
        spec = requested[origin]
        if not spec:
            # An empty split list means tfds does not know them (never prepared): assume "train".
            candidates = [
                n
                for n in DEFAULT_SPLIT_NAMES[origin]
                if n in available or (not available and n == "train")
            ]
            spec = candidates[0] if candidates else ""
        if spec:
            splits.append((origin, spec))
    if not any(origin == "train" for origin, _ in splits):
        raise UserError(
            f"The tfds dataset '{name}' has no 'train' split (it has {', '.join(available)}); set the train split, such as {available[0]}[:80%]."
        )
    return splits


# ----- the blob store ---------------------------------------------------------------------
def _build_store(
    tfds: Any,
    builder: Any,
    name: str,
    splits: list[tuple[str, str]],
    image_key: str,
    label_key: str,
    class_names: list[str],
    store: Path,
    progress: Progress | None,
) -> None:
    """Copy each split's encoded images into a staging folder, then rename it into place."""
    readers = []
    decoders = tfds.decode.PartialDecoding(
        {image_key: True, label_key: True}, decoders={image_key: tfds.decode.SkipDecoding()}
    )
    for origin, spec in splits:
        try:
            dataset = builder.as_dataset(split=spec, decoders=decoders, shuffle_files=False)
        except (ValueError, AssertionError, KeyError, TypeError) as error:
            available = ", ".join(builder.info.splits.keys()) or "unknown"
            raise UserError(
                f"The {origin} split '{spec}' of tfds dataset '{name}' is not valid ({_first_line(error)}); its splits are {available}, written like train[:80%]."
            ) from None
        cardinality = int(dataset.cardinality())
        readers.append((origin, spec, dataset, max(cardinality, 0)))
    total = sum(count for *_, count in readers)

    store.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=store.parent, prefix=f".{store.name}."))
    try:
        offsets, labels, headers, split_meta, modes = [0], [], [], [], ["L", "RGB"]
        done = 0
        with open(staging / "images.bin", "wb") as blob:
            for origin, spec, dataset, _ in readers:
                first = len(labels)
                for example in tfds.as_numpy(dataset):
                    data = _encoded(example[image_key])
                    blob.write(data)
                    offsets.append(offsets[-1] + len(data))
                    labels.append(int(example[label_key]))
                    headers.append(_header(data, modes))
                    done += 1
                    if progress and done % 64 == 0:
                        progress(done, max(total, done))
                split_meta.append(
                    {"origin": origin, "spec": spec, "first": first, "end": len(labels)}
                )
        if progress:
            progress(done, done)
        np.save(staging / "offsets.npy", np.array(offsets, dtype=np.int64))
        np.save(staging / "labels.npy", np.array(labels, dtype=np.int64))
        np.save(staging / "headers.npy", np.array(headers, dtype=np.int64).reshape(-1, 3))
        meta = {
            "format": STORE_FORMAT,
            "name": name,
            "dataset": builder.name,
            "version": str(builder.version),
            "class_names": class_names,
            "splits": split_meta,
            "count": len(labels),
            "modes": modes,
            "bytes": offsets[-1],
            "image_key": image_key,
            "label_key": label_key,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if store.exists():
            shutil.rmtree(store)  # an unreadable store from before; _open_store refused it
        try:
            os.replace(staging, store)
        except OSError:
            if not (store / "meta.json").is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _open_store(store: Path, name: str) -> TfdsSource | None:
    """The source from a complete blob store, or None when there is none or it is damaged."""
    try:
        meta = json.loads((store / "meta.json").read_text(encoding="utf-8"))
        offsets = np.load(store / "offsets.npy", allow_pickle=False)
        labels = np.load(store / "labels.npy", allow_pickle=False)
        headers = np.load(store / "headers.npy", allow_pickle=False)
        blob_size = (store / "images.bin").stat().st_size
    except (OSError, ValueError):
        return None
    count = int(meta.get("count", -1))
    if (
        meta.get("format") != STORE_FORMAT
        or len(offsets) != count + 1
        or len(labels) != count
        or len(headers) != count
        or int(offsets[-1]) != blob_size
    ):
        return None
    modes = meta["modes"]
    valid = np.flatnonzero(headers[:, 2] >= 0)
    origins = np.empty(count, dtype=object)
    split_names = []
    for split in meta["splits"]:
        origins[split["first"] : split["end"]] = split["origin"]
        split_names.append((split["spec"], split["first"], split["end"]))
    skipped = [
        {"file": _entry_name(split_names, int(i)), "reason": "not an image Pillow can read"}
        for i in np.flatnonzero(headers[:, 2] < 0)
    ]
    fingerprint = hashlib.sha1(
        json.dumps(
            [
                meta["dataset"],
                meta["name"],
                meta["version"],
                [s["spec"] for s in meta["splits"]],
                [s["end"] - s["first"] for s in meta["splits"]],
                count,
                blob_size,
            ]
        ).encode()
    ).hexdigest()
    return TfdsSource(
        kind="tfds",
        spec=f"tfds:{name}",
        class_names=list(meta["class_names"]),
        items=valid.tolist(),
        labels=labels[valid].astype(np.int64),
        origins=origins[valid].astype(str),
        fingerprint=fingerprint,
        skipped=skipped,
        headers=[(int(w), int(h), modes[m]) for w, h, m in headers[valid]],
        root=str(store),
        blob_path=str(store / "images.bin"),
        offsets=offsets,
        split_names=split_names,
    )


def _encoded(value: Any) -> bytes:
    """Encoded image bytes; an already decoded uint8 array (mock data) becomes a lossless PNG."""
    if isinstance(value, bytes):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "SO" and array.ndim == 0:
        return bytes(array.item())
    array = array.astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _header(data: bytes, modes: list[str]) -> tuple[int, int, int]:
    """Width, height and mode number from the image header; mode -1 when Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, mode = image.size[0], image.size[1], image.mode
    except Exception:  # any failure here is an unusable image, reported in the load report
        return 0, 0, -1
    if mode not in modes:
        modes.append(mode)
    return width, height, modes.index(mode)


def _entry_name(split_names: list[tuple[str, int, int]], entry: int) -> str:
    for spec, first, end in split_names:
        if first <= entry < end:
            return f"{spec} #{entry - first}"
    return f"#{entry}"


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
