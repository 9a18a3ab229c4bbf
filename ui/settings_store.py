"""The working setup saved per user on this machine: dataset, augmentation, Train form changes.

One JSON file, `$STUDIO_SETTINGS_FILE` or `~/.config/image-classification-studio/settings.json`
(`$XDG_CONFIG_HOME` honoured), written atomically. Reading never fails: a missing file gives the
defaults; a damaged or hostile one gives the defaults and a one-sentence warning. Every value goes
through RunConfig.from_dict(...).validate(), the same checks a run's config gets. Streamlit-free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

from engine.config import DataConfig, RunConfig
from engine.errors import UserError
from engine.jsonio import read_json_object, write_json

SETTINGS_ENV = "STUDIO_SETTINGS_FILE"
VERSION = 1
SECTIONS = ("data", "augment", "model", "train")


def settings_path() -> Path:
    override = os.environ.get(SETTINGS_ENV)
    if override:
        return Path(override)
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "image-classification-studio" / "settings.json"


def defaults() -> dict:
    """data: a DataConfig dict; augment: None (the dataset's recipe decides); model and train:
    the Train form's changes to the recipe (none)."""
    return {
        "data": dataclasses.asdict(DataConfig()),
        "augment": None,
        "model": {},
        "train": {},
    }


def validated(value: object) -> dict:
    """The settings in value, checked and cast as a run config is; UserError naming the problem."""
    if not isinstance(value, dict):
        raise UserError("it is not a JSON object")
    unknown = set(value) - {"version", *SECTIONS}
    if unknown:
        raise UserError(f"it has unknown sections {sorted(map(str, unknown))[:3]}")
    augment = value.get("augment")
    sections = {name: value.get(name) or {} for name in SECTIONS}
    config = RunConfig.from_dict(sections).validate()
    # model and train hold only the keys the user changed; keep just those, cast.
    return {
        "data": dataclasses.asdict(config.data),
        "augment": None if augment is None else dataclasses.asdict(config.augment),
        "model": {key: getattr(config.model, key) for key in sections["model"]},
        "train": {key: getattr(config.train, key) for key in sections["train"]},
    }


def load_settings(path: Path | None = None) -> tuple[dict, str | None]:
    """(settings, warning): the saved settings, or the defaults and why the file was not used."""
    path = Path(path) if path else settings_path()
    try:
        saved = read_json_object(path)
        if saved is None:
            return defaults(), None
        settings = validated(saved)
    except UserError as error:  # DamagedFile included: binary, truncated, a list...
        reason = getattr(error, "reason", None) or str(error).rstrip(".")
        return defaults(), (
            f"The saved settings in {path} were not used ({reason}); the defaults are shown "
            "and your next change replaces the file."
        )
    missing = _missing_upload(settings["data"]["spec"])
    if missing:
        settings["data"] = defaults()["data"]
        return settings, (
            f"The uploaded dataset {missing} is no longer in the cache; upload it again on the "
            "Data page (the digits are loaded meanwhile)."
        )
    return settings, None


def _missing_upload(spec: str) -> str | None:
    """The file name of an uploaded dataset that was evicted from the cache since, else None."""
    from ui.uploads import uploads_folder

    path = Path(spec)
    return path.name if path.parent == uploads_folder() and not path.is_file() else None


def save_settings(settings: dict, path: Path | None = None) -> str | None:
    """Write settings; a sentence when the file cannot be written (a read-only home), else None."""
    path = Path(path) if path else settings_path()
    try:
        write_json(path, {"version": VERSION, **{name: settings[name] for name in SECTIONS}})
    except OSError as error:
        return f"The settings cannot be saved to {path} ({error.strerror or error}); they last for this tab only."
    return None


def clear_settings(path: Path | None = None) -> None:
    """Remove the saved settings: the next session starts from the defaults."""
    path = Path(path) if path else settings_path()
    with contextlib.suppress(IsADirectoryError):  # not ours to remove; load_settings says so
        path.unlink(missing_ok=True)
