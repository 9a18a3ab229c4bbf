"""Exclude, relabel and undo files of a dataset: for the Data page and the audit view (Health).

The choices are saved by the engine beside the decoded cache (engine.data.edits), never in the
user's folder, and copied into the working DataConfig's exclude and relabel, so the next run
leaves out and relabels the same files and its config.json records them. The edited dataset
replaces the cached one without indexing the source again. Call these from a button's on_click
(or st.rerun() after one), so the page is drawn with the edits. Each returns a sentence to show
(it holds file and class names: show it through ui.text.plain), and raises UserError (a
sentence) when the choices cannot be saved.
"""

from __future__ import annotations

import dataclasses

from engine.config import DataConfig
from engine.data import edits
from engine.errors import UserError
from ui import services
from ui.state import data_config, set_data_config


def saved_edits(config: DataConfig) -> tuple[DataConfig, str | None]:
    """config with the choices saved for its dataset, and a sentence when that file is damaged
    (config's own choices stay then; the next change saves them and keeps the damaged file)."""
    try:
        return edits.with_saved(config), None
    except UserError as error:
        return config, str(error)


def sync_working_config() -> tuple[DataConfig, str | None]:
    """The working dataset's config with the choices saved for it, which another tab or the
    command line may have changed; a sentence when the saved file is damaged."""
    config = data_config()
    synced, problem = saved_edits(config)
    if synced != config:
        _use(config, synced)
    return synced, problem


def exclude_files(spec: DataConfig | str, files: list[str]) -> str:
    """Leave files (item ids, as Dataset.item_ids names them) out of every later run.

    spec is the dataset's config, or its spec when it is the loaded dataset (the Data page's).
    """
    config = _config_of(spec)
    files = sorted({files} if isinstance(files, str) else set(files))
    if not files:
        return "No file was chosen; nothing is excluded."
    _change(config, edits.add(config, exclude=files))
    return f"Excluded {_names(files)}; the next run leaves {_them(files)} out."


def relabel_file(spec: DataConfig | str, file: str, class_name: str) -> str:
    """Give a file another class in every later run; its own class takes back the relabel."""
    config = _config_of(spec)
    dataset = services.get_dataset(config)
    if class_name not in dataset.class_names:
        raise UserError(f"{class_name} is not a class of this dataset; pick one of its classes.")
    [index] = dataset.find_items([file])
    if index is not None and dataset.class_names[dataset.source.labels[index]] == class_name:
        _change(config, edits.undo(config, relabel=[file]))
        return f"{file} is back in its own class, {class_name}."
    _change(config, edits.add(config, relabel={file: class_name}))
    return f"{file} is now in class {class_name} for the next run."


def undo(
    spec: DataConfig | str, exclude: list[str] | tuple = (), relabel: list[str] | tuple = ()
) -> str:
    """Take back some exclusions and relabels, by file."""
    config = _config_of(spec)
    _change(config, edits.undo(config, exclude=list(exclude), relabel=list(relabel)))
    return f"Took back the choices about {_names(sorted(set(exclude) | set(relabel)))}."


def undo_all(spec: DataConfig | str) -> str:
    """Take back every exclusion and relabel of the dataset."""
    config = _config_of(spec)
    _change(config, edits.clear(config))
    return "Every exclusion and relabel is undone; the next run uses the data as it is."


def _config_of(spec: DataConfig | str) -> DataConfig:
    """The working config when spec names the loaded dataset, else spec as a config."""
    working = data_config()
    if isinstance(spec, str):
        return working if spec == working.spec else DataConfig(spec=spec)
    return working if edits.identity(spec) == edits.identity(working) else spec


def _change(config: DataConfig, saved: edits.Edits) -> None:
    """Make the saved choices the working config's, when config is the loaded dataset's."""
    working = data_config()
    if edits.identity(config) == edits.identity(working):
        new = dataclasses.replace(working, exclude=saved.exclude, relabel=saved.relabel)
        if new != working:
            _use(working, new)


def _use(old: DataConfig, new: DataConfig) -> None:
    """Work on new (old with other edits) from now on, its dataset made from old's cached one."""
    try:
        dataset = services.get_dataset(old).with_edits(new)
    except (UserError, ValueError):
        dataset = None  # not loadable, or more than the edits differ: indexed when first used
    if dataset is not None:
        # services' hand-over of a dataset indexed outside its cache (as reload_dataset does),
        # so an edit costs no second indexing of the folder.
        key = services.dataset_key(new)
        services._INDEXED[key] = dataset
        services._dataset.clear(key)
        try:
            services.get_dataset(new)
        finally:
            services._INDEXED.pop(key, None)
    set_data_config(new)


def _names(files: list[str]) -> str:
    return files[0] if len(files) == 1 else f"{len(files):,} files"


def _them(files: list[str]) -> str:
    return "it" if len(files) == 1 else "them"
