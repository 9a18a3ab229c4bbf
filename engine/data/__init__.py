"""Data sources and the Dataset type: `load_dataset(DataConfig(spec=...))` for any source.

Loading reports progress(done, total) where it is slow: a folder's headers read while indexing, a
tfds dataset's images copied into its store on first use. Decoding reports through
`Dataset.prepare(progress)`, with the same kind of callback.
"""

from __future__ import annotations

from pathlib import Path

from engine.config import DataConfig
from engine.data.cache import Progress
from engine.data.dataset import SPLITS, Dataset, ItemImage, default_cache_root
from engine.data.sources import (
    RawSource,
    load_digits_source,
    load_folder_source,
    load_npz_source,
    load_zip_source,
)
from engine.errors import UserError

__all__ = [
    "SPLITS",
    "Dataset",
    "ItemImage",
    "Progress",
    "RawSource",
    "default_cache_root",
    "load_dataset",
    "load_source",
]


def load_source(
    config: DataConfig, cache_root: Path | None = None, progress: Progress | None = None
) -> RawSource:
    """Index a source named by its spec: digits, tfds:NAME, a folder, a .zip or a .npz."""
    spec = config.spec.strip()
    cache_root = Path(cache_root) if cache_root else default_cache_root()
    if not spec:
        raise UserError("No dataset given; use digits, tfds:NAME, a folder, a .zip or a .npz path.")
    if spec == "digits":
        return load_digits_source()
    if spec.startswith("tfds:"):
        from engine.data.tfds_source import load_tfds_source

        return load_tfds_source(spec[len("tfds:") :], config, cache_root, progress)
    path = Path(spec).expanduser()
    if spec.lower().endswith(".zip"):
        return load_zip_source(str(path), cache_root, progress=progress)
    if spec.lower().endswith(".npz"):
        return load_npz_source(str(path))
    if not path.exists():
        raise UserError(
            f"The dataset {spec} is neither digits, tfds:NAME nor an existing folder, .zip or .npz; check the path."
        )
    return load_folder_source(str(path), progress=progress)


def load_dataset(
    config: DataConfig | str, cache_root: Path | None = None, progress: Progress | None = None
) -> Dataset:
    """Index a source and split it; decoding waits for `Dataset.prepare()`."""
    if isinstance(config, str):
        config = DataConfig(spec=config)
    return Dataset(load_source(config, cache_root, progress), config, cache_root)
