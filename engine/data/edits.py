"""The user's edits of a dataset: files excluded and files relabelled, never written into its folder.

The choices are kept in one small JSON file per dataset beside the decoded cache
(`<cache root>/edits/<identity>.json`), keyed by the dataset's source (a folder's resolved path,
an archive's path, a tfds name with its splits) and not by its fingerprint, so adding a photo to
the folder keeps them; a choice naming a file that is gone since is reported, not applied.

A run applies the choices its DataConfig records (`exclude`, `relabel`), never this file, so a run's
config.json holds the choices themselves and a rerun from it leaves out the same files whatever the
file says by then; `with_saved` copies the file's choices into a config (the Data page does).
The file is read as untrusted input: a damaged one is a sentence (DamagedFile), and the next save
moves it aside instead of overwriting it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import DataConfig, section_from_dict
from engine.data.cache import default_cache_root
from engine.data.sources import source_hash
from engine.errors import UserError
from engine.jsonio import DamagedFile, read_json_object, write_json
from engine.validation import check_edits

EDITS_FOLDER = "edits"
VERSION = 1


@dataclass(frozen=True)
class Edits:
    """Files left out (item ids) and files given another class (item id -> class name)."""

    exclude: tuple[str, ...] = ()
    relabel: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: DataConfig) -> Edits:
        return cls(tuple(sorted(set(config.exclude))), dict(sorted(config.relabel.items())))

    def __len__(self) -> int:
        return len(self.exclude) + len(self.relabel)


def identity(config: DataConfig) -> str:
    """What names a dataset's source, whatever its image size, split fractions or files today."""
    spec = config.spec.strip()
    if spec == "digits":
        return source_hash("digits")
    if spec.startswith("tfds:"):
        splits = (config.train_split, config.validation_split, config.test_split)
        data_dir = str(Path(config.data_dir).expanduser()) if config.data_dir.strip() else ""
        return source_hash(spec, data_dir, *(split.strip() for split in splits))
    return source_hash("path", os.path.realpath(Path(spec).expanduser()))


def edits_path(config: DataConfig, cache_root: Path | None = None) -> Path:
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / EDITS_FOLDER / f"{identity(config)[:24]}.json"


def load(config: DataConfig, cache_root: Path | None = None) -> Edits:
    """The choices saved for config's dataset (none when nothing was saved); DamagedFile when the
    file is not what save() writes."""
    path = edits_path(config, cache_root)
    value = read_json_object(path)
    if value is None:
        return Edits()
    exclude, relabel = value.get("exclude", []), value.get("relabel", {})
    try:
        check_edits(exclude, relabel)
    except UserError:
        raise DamagedFile(
            path,
            f"{path.name} does not list file names and class names as the Data page saves them",
        ) from None
    return Edits(tuple(sorted(set(exclude))), dict(sorted(relabel.items())))


def save(config: DataConfig, edits: Edits, cache_root: Path | None = None) -> Path:
    """Write the choices atomically; a damaged file there is kept beside it as *.damaged.json."""
    check_edits(edits.exclude, edits.relabel)
    path = edits_path(config, cache_root)
    value = {"version": VERSION, "spec": config.spec, "exclude": list(edits.exclude)}
    try:
        try:
            load(config, cache_root)
        except DamagedFile:
            os.replace(path, path.with_suffix(".damaged.json"))
        write_json(path, {**value, "relabel": edits.relabel})
    except OSError as error:
        raise UserError(
            f"Your choices cannot be saved to {path} ({error.strerror or error}); free some disk "
            "space or set STUDIO_CACHE_DIR to a writable folder."
        ) from None
    return path


def _current(config: DataConfig, cache_root: Path | None) -> Edits:
    """The saved choices, or config's own when the file is damaged: what the user last saw."""
    try:
        return load(config, cache_root)
    except DamagedFile:
        return Edits.of(config)


def add(
    config: DataConfig,
    exclude: list[str] | tuple[str, ...] = (),
    relabel: dict[str, str] | None = None,
    cache_root: Path | None = None,
) -> Edits:
    """Exclude some files and relabel others, on top of the saved choices; the choices now."""
    current = _current(config, cache_root)
    edits = Edits(
        tuple(sorted(set(current.exclude) | set(exclude))),
        dict(sorted({**current.relabel, **(relabel or {})}.items())),
    )
    save(config, edits, cache_root)
    return edits


def undo(
    config: DataConfig,
    exclude: list[str] | tuple[str, ...] = (),
    relabel: list[str] | tuple[str, ...] = (),
    cache_root: Path | None = None,
) -> Edits:
    """Take back some exclusions and some relabels (by file); the choices now."""
    current, included, unlabelled = _current(config, cache_root), set(exclude), set(relabel)
    edits = Edits(
        tuple(item for item in current.exclude if item not in included),
        {item: name for item, name in current.relabel.items() if item not in unlabelled},
    )
    save(config, edits, cache_root)
    return edits


def clear(config: DataConfig, cache_root: Path | None = None) -> Edits:
    """Take back every choice about config's dataset."""
    save(config, Edits(), cache_root)
    return Edits()


def with_saved(config: DataConfig, cache_root: Path | None = None) -> DataConfig:
    """config with the choices saved for its dataset; DamagedFile when that file is damaged."""
    edits = load(config, cache_root)
    return dataclasses.replace(config, exclude=edits.exclude, relabel=edits.relabel)


def fill_in(section: dict[str, Any], cache_root: Path | None = None) -> dict[str, Any]:
    """A partial config's data section with the choices saved for its dataset, unless it names
    its own (a run's config.json does): what `python -m engine train --dataset X` trains on."""
    if "exclude" in section or "relabel" in section:
        return section
    saved = load(section_from_dict(DataConfig, section, "data"), cache_root)
    return {**section, "exclude": list(saved.exclude), "relabel": saved.relabel}


@dataclass(frozen=True)
class AppliedEdits:
    """A config's choices applied to a dataset's items: what the engine trains and counts."""

    labels: np.ndarray  # the label of every item, relabels applied
    excluded: np.ndarray  # bool per item: left out of every split
    relabelled: list[dict]  # {file, from, to} of each item given another class
    not_applied: list[dict]  # {file, reason} of each choice that names no item or no class

    def report(self) -> dict:
        """The load report's entry: what was left out and relabelled, in numbers and a sentence."""
        excluded, relabelled = int(self.excluded.sum()), len(self.relabelled)
        summary = f"Excluded {_files(excluded)} by the user, relabelled {relabelled}."
        if self.not_applied:
            count = len(self.not_applied)
            summary += (
                " 1 choice names a file or class the data does not have; it is not applied."
                if count == 1
                else f" {count:,} choices name files or classes the data does not have; they are not applied."
            )
        return {
            "excluded": excluded,
            "relabelled": self.relabelled,
            "not_applied": self.not_applied,
            "summary": summary,
        }


def apply(
    config: DataConfig, labels: np.ndarray, class_names: list[str], item_ids: list[str] | None
) -> AppliedEdits:
    """Apply config's choices to items; `item_ids` may be None when config has none."""
    labels = np.array(labels, dtype=np.int64)  # a copy: the source's labels stay as they are
    excluded = np.zeros(len(labels), dtype=bool)
    if not (config.exclude or config.relabel):
        return AppliedEdits(labels, excluded, [], [])
    position = {item: index for index, item in enumerate(item_ids or [])}
    class_ids = {name: number for number, name in enumerate(class_names)}
    relabelled, not_applied = [], []
    gone = "not in the data (removed or renamed since it was chosen)"
    for item in config.exclude:
        if item in position:
            excluded[position[item]] = True
        else:
            not_applied.append({"file": item, "reason": f"exclusion: {gone}"})
    for item, name in config.relabel.items():
        if item not in position:
            not_applied.append({"file": item, "reason": f"relabel to {name}: {gone}"})
        elif name not in class_ids:
            reason = f"relabel to {name}: the data has no class of that name"
            not_applied.append({"file": item, "reason": reason})
        elif class_ids[name] != labels[position[item]] and not excluded[position[item]]:
            original = class_names[labels[position[item]]]
            labels[position[item]] = class_ids[name]
            relabelled.append({"file": item, "from": original, "to": name})
    return AppliedEdits(labels, excluded, relabelled, not_applied)


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count:,} files"
