"""What the health audit measures on each decoded image, kept beside the decoded cache.

`image_measures` reads the decoded cache (never the files) in chunks: brightness, sharpness
(variance of the Laplacian over the variance of the grey levels), entropy of the grey levels and colourfulness of each image, and
simple features for the label-issue classifier: gradient-orientation histograms of the grey
image (a small HOG), colour histograms and an 8 x 8 colour thumbnail. On MNIST with 5% of its
labels moved, these features put 88% of the moved files in cleanlab's top N (16 x 16 grey
pixels alone: 75%); on flower photos they reach 54% accuracy, so there the list is a hint.
`run_features` gives a run's penultimate layer instead (engine.features). Both are written
atomically to `<cache root>/health/<decoded cache's folder name>/`, so a second audit reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from engine.jsonio import atomic_write_bytes

MEASURES_VERSION = 1  # raise when a measure or feature below changes
CHUNK = 256  # cached images read at a time
GRID = 32  # side of the grey image the gradient histograms are taken on
CELL = 4  # pixels per side of a histogram cell: (GRID / CELL)^2 cells
ORIENTATIONS = 8  # histogram bins over 0..180 degrees
BATCH_SIZE = 64  # images per model call for a run's features
MEASURES = ("brightness", "sharpness", "entropy", "chroma", "features")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def health_folder(dataset) -> Path:
    """Where the audit keeps what it measured on this dataset's decoded cache."""
    return dataset.cache_root / "health" / dataset.cache_dir.name


def image_measures(dataset, progress: Progress) -> dict[str, np.ndarray]:
    """{measure: one value (or feature row) per item} of a prepared dataset, kept on disk."""
    path = health_folder(dataset) / f"measures-v{MEASURES_VERSION}.npz"
    count = len(dataset.labels)
    kept = _load(path, count, "", MEASURES)
    if kept is not None:
        progress("measure", count, count)
        return kept
    images, parts = dataset.images(), []
    for start in range(0, count, CHUNK):
        parts.append(_measure(np.asarray(images[start : start + CHUNK])))
        progress("measure", min(start + CHUNK, count), count)
    measures = {name: np.concatenate([part[name] for part in parts]) for name in MEASURES}
    _save(path, count, "", measures)
    return measures


def _measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """The measures of a chunk of N x S x S x 3 uint8 images."""
    red, green, blue = (images[..., channel].astype(np.uint16) for channel in range(3))
    grey = ((red * 77 + green * 150 + blue * 29) >> 8).astype(np.uint8)  # ITU-R 601 luma
    level = grey.astype(np.float32)
    laplacian = (
        level[:, 1:-1, :-2]
        + level[:, 1:-1, 2:]
        + level[:, :-2, 1:-1]
        + level[:, 2:, 1:-1]
        - 4 * level[:, 1:-1, 1:-1]
    )
    variance = level.var(axis=(1, 2))
    safe = np.maximum(variance, 1e-6)
    count = len(images)
    # One histogram per image in one bincount: image n's grey levels are counted at n*256+level.
    offsets = (np.arange(count)[:, None] * 256 + grey.reshape(count, -1)).ravel()
    share = np.bincount(offsets, minlength=count * 256).reshape(count, 256) / grey[0].size
    logs = np.log2(np.where(share > 0, share, 1.0))
    # Taking the channels apart first: a reduction over the last axis of 3 is 20x slower.
    channels = [images[..., channel] for channel in range(3)]
    spread = np.maximum(np.maximum(*channels[:2]), channels[2]) - np.minimum(
        np.minimum(*channels[:2]), channels[2]
    )
    return {
        "brightness": level.mean(axis=(1, 2)) / 255,
        # The Laplacian's variance over the image's own, so a dim photo is not taken for a blurred
        # one; a flat image (grey levels within about 3) has no sharpness to speak of: NaN.
        "sharpness": np.where(variance >= 9.0, laplacian.var(axis=(1, 2)) / safe, np.nan),
        "entropy": -(share * logs).sum(axis=1),
        "chroma": spread.mean(axis=(1, 2), dtype=np.float32) / 255,
        "features": _simple_features(images),
    }


def _simple_features(images: np.ndarray) -> np.ndarray:
    """Gradient-orientation histograms, colour histograms and a colour thumbnail per image."""
    greys, colours = [], []
    pixels = images.shape[1] * images.shape[2]
    for image in images:
        picture = Image.fromarray(image)
        greys.append(np.asarray(picture.convert("L").resize((GRID, GRID), Image.BILINEAR)))
        hsv = np.asarray(picture.convert("HSV"), dtype=np.float32) / 255
        hue = np.bincount(
            (hsv[..., 0].ravel() * 24).astype(np.int64) % 24,
            weights=hsv[..., 1].ravel(),  # a grey pixel has no hue to speak of
            minlength=24,
        )
        histograms = [np.bincount(image[..., c].ravel() >> 4, minlength=16) for c in range(3)]
        thumbnail = np.asarray(picture.resize((8, 8), Image.BOX), dtype=np.float32) / 255
        colours.append(
            np.concatenate(
                [np.sqrt(np.concatenate([*histograms, hue]) / pixels), thumbnail.ravel()]
            )
        )
    gradients = _gradient_histograms(np.stack(greys).astype(np.float32) / 255)
    return np.concatenate([gradients, np.stack(colours)], axis=1).astype(np.float32)


def _gradient_histograms(grey: np.ndarray) -> np.ndarray:
    """N x (cells x ORIENTATIONS): magnitude-weighted gradient orientations per CELL x CELL cell,
    L2-normalised per image and square-rooted (a small HOG without its block normalisation)."""
    across, down = np.zeros_like(grey), np.zeros_like(grey)
    across[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
    down[:, 1:-1, :] = grey[:, 2:, :] - grey[:, :-2, :]
    magnitude = np.hypot(across, down)
    angle = np.mod(np.arctan2(down, across), np.pi)
    bins = np.minimum((angle / np.pi * ORIENTATIONS).astype(np.int64), ORIENTATIONS - 1)
    count, side, cells = len(grey), grey.shape[1], grey.shape[1] // CELL
    votes = np.zeros((count, side, side, ORIENTATIONS), dtype=np.float32)
    np.put_along_axis(votes, bins[..., None], magnitude[..., None], axis=3)
    histograms = votes.reshape(count, cells, CELL, cells, CELL, ORIENTATIONS).sum(axis=(2, 4))
    histograms = histograms.reshape(count, -1)
    histograms /= np.linalg.norm(histograms, axis=1, keepdims=True) + 1e-6
    return np.sqrt(histograms)


def check_run(run_dir: Path) -> None:
    """A UserError in one sentence unless run_dir is a run with a saved model."""
    from engine import runs
    from engine.predict import run_model_path

    runs.load_config(Path(run_dir))
    run_model_path(Path(run_dir))


def run_features(run_dir: Path, dataset, progress: Progress) -> np.ndarray:
    """The penultimate-layer features of every item under a run's model, at the run's image
    size and resize mode (its own decoded cache when they differ from the dataset's)."""
    from engine import features, runs
    from engine.data.cache import DecodedCache, cache_folder_name
    from engine.jsonio import read_json_object
    from engine.predict import load_model, run_model_path

    run_dir = Path(run_dir)
    identity = f"{run_dir.resolve()}|{features.model_identity(run_dir)}"
    path = health_folder(dataset) / f"run-{hashlib.sha1(identity.encode()).hexdigest()[:16]}.npz"
    count = len(dataset.labels)
    kept = _load(path, count, identity, ("features",))
    if kept is not None:
        return kept["features"]
    config = runs.load_config(run_dir)
    load_report = read_json_object(run_dir / "load_report.json") or {}
    size = int(load_report.get("image_size") or config.data.image_size or dataset.image_size)
    resize, max_pixels = config.data.resize, dataset.config.max_pixels
    if (size, resize) == (dataset.image_size, dataset.config.resize):
        images = dataset.images()
    else:
        folder = cache_folder_name(dataset.fingerprint, resize, size, max_pixels)
        cache = DecodedCache(
            dataset.source, dataset.cache_root / "images" / folder, size, resize, max_pixels
        )
        cache.open(lambda done, total: progress("decode", done, total))
        images = cache.images()
    dual = features.features_model(load_model(run_model_path(run_dir)))
    rows = []
    for start in range(0, count, BATCH_SIZE):
        rows.append(features.outputs(dual, images[start : start + BATCH_SIZE])[0])
        progress("features", min(start + BATCH_SIZE, count), count)
    values = np.concatenate(rows).astype(np.float32)
    _save(path, count, identity, {"features": values})
    return values


def _save(path: Path, count: int, identity: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, count=count, identity=identity, **arrays)
    with contextlib.suppress(OSError):  # a read-only or full cache folder: measured next time
        atomic_write_bytes(path, buffer.getvalue())


def _load(
    path: Path, count: int, identity: str, names: tuple[str, ...]
) -> dict[str, np.ndarray] | None:
    """The arrays `names` _save wrote for this many items and this identity; None when absent,
    stale or damaged (the caller measures again)."""
    try:
        with np.load(path, allow_pickle=False) as kept:
            if int(kept["count"]) != count or str(kept["identity"]) != identity:
                return None
            arrays = {name: kept[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if any(len(values) != count for values in arrays.values()):
        return None
    return arrays
