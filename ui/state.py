"""Session-state keys and their defaults; every page calls init_state() so it also runs alone.

The working setup (dataset, augmentation, the Train form's changes) is restored once per session
from the settings file (ui/settings_store.py) and written back whenever it changes, so a reload, a
new tab or a restart of the app opens on it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import streamlit as st

from engine.config import AugmentConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from ui import settings_store

DATA_CONFIG = "data_config"  # dict of DataConfig: the dataset every page works on
AUGMENT_CONFIG = "augment_config"  # dict of AugmentConfig: goes into the next training run
TRAIN_OVERRIDES = "train_overrides"  # {"model": {...}, "train": {...}}: the Train form's changes
TRAIN_RUN = "train_run"  # run id shown on the Train page
EVAL_RUN = "eval_run_id"
PREDICT_RUN = "predict_run_id"
SETTINGS_RESTORED = "settings_restored"  # set once the settings file was read in this session
SETTINGS_WARNING = "settings_warning"  # why the saved settings were not used, or None
SETTINGS_SAVED = "settings_saved"  # what this session last wrote, so unchanged runs write nothing
LAUNCHING = "train_launching"  # a Start click waits for the Train page's run (request_launch)
LAST_LAUNCH = "train_last_launch"  # (config dict, monotonic time) of the last run started here
LAUNCH_ERROR = "train_launch_error"
DOUBLE_CLICK_SECONDS = 5.0  # the same config started again this soon is a double click
WIDGET_PREFIXES = ("data_", "augment_", "train_")  # the widgets Reset returns to their defaults


def init_state() -> None:
    if SETTINGS_RESTORED not in st.session_state:
        st.session_state[SETTINGS_RESTORED] = True
        settings, warning = settings_store.load_settings()
        st.session_state.setdefault(DATA_CONFIG, settings["data"])
        st.session_state.setdefault(AUGMENT_CONFIG, settings["augment"])
        st.session_state.setdefault(
            TRAIN_OVERRIDES, {"model": settings["model"], "train": settings["train"]}
        )
        st.session_state[SETTINGS_WARNING] = warning
        st.session_state[SETTINGS_SAVED] = None if warning else _settings()
    st.session_state.setdefault(DATA_CONFIG, dataclasses.asdict(DataConfig()))
    st.session_state.setdefault(AUGMENT_CONFIG, None)  # None: the dataset's recipe decides
    st.session_state.setdefault(TRAIN_OVERRIDES, {"model": {}, "train": {}})
    st.session_state.setdefault(TRAIN_RUN, None)


def _settings() -> dict:
    overrides = st.session_state[TRAIN_OVERRIDES]
    return {
        "data": st.session_state[DATA_CONFIG],
        "augment": st.session_state[AUGMENT_CONFIG],
        "model": overrides["model"],
        "train": overrides["train"],
    }


def save_settings() -> None:
    """Write the working setup to the settings file when it changed since this session's last write."""
    settings = _settings()
    if settings != st.session_state.get(SETTINGS_SAVED):
        st.session_state[SETTINGS_WARNING] = settings_store.save_settings(settings)
        st.session_state[SETTINGS_SAVED] = settings


def reset_settings() -> None:
    """Back to the defaults: the settings file removed, the forms' widgets cleared (a callback)."""
    settings_store.clear_settings()
    keep = {TRAIN_RUN, LAST_LAUNCH}
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(WIDGET_PREFIXES) and key not in keep:
            del st.session_state[key]
    defaults = settings_store.defaults()
    st.session_state[DATA_CONFIG] = defaults["data"]
    st.session_state[AUGMENT_CONFIG] = defaults["augment"]
    st.session_state[TRAIN_OVERRIDES] = {"model": {}, "train": {}}
    st.session_state[SETTINGS_WARNING] = None
    st.session_state[SETTINGS_SAVED] = _settings()
    st.session_state["settings_reset_done"] = True


def settings_controls() -> None:
    """The sidebar's line about the saved settings: a warning when they were not used, and Reset."""
    init_state()
    warning = st.session_state.get(SETTINGS_WARNING)
    if warning:
        st.sidebar.warning(warning, icon=":material/warning:")
    st.sidebar.button(
        "Reset settings",
        key="settings_reset",
        icon=":material/restart_alt:",
        on_click=reset_settings,
        help="Dataset, augmentation, model and hyperparameters back to the defaults; the saved "
        f"settings ({settings_store.settings_path()}) are removed. Runs are kept.",
    )
    if st.session_state.pop("settings_reset_done", False):
        st.sidebar.success("Settings reset to the defaults.")


def data_config() -> DataConfig:
    init_state()
    return DataConfig(**st.session_state[DATA_CONFIG])


def set_data_config(config: DataConfig) -> None:
    st.session_state[DATA_CONFIG] = dataclasses.asdict(config)
    save_settings()


def augment_config() -> AugmentConfig:
    """The augmentation the user set on the Augment page, else the recipe's for the dataset."""
    init_state()
    chosen = st.session_state[AUGMENT_CONFIG]
    if chosen is not None:
        return AugmentConfig(**chosen)
    from engine.errors import UserError
    from ui.services import recipe

    try:
        return AugmentConfig(**recipe(data_config())["config"].get("augment", {}))
    except UserError:  # an unloadable dataset: the Data page says why; no augmentation here
        return AugmentConfig()


def set_augment_config(config: AugmentConfig) -> None:
    st.session_state[AUGMENT_CONFIG] = dataclasses.asdict(config)
    save_settings()


def train_overrides() -> dict:
    """{"model": {...}, "train": {...}}: the Train form's values that differ from the recipe."""
    init_state()
    return st.session_state[TRAIN_OVERRIDES]


def set_train_overrides(recipe: dict, model_fields: dict, train_fields: dict) -> None:
    """Keep the form's values that differ from the recipe, beside earlier changes to fields the
    form does not show now (the time budget while epochs are set, say), and save them."""
    recipe_sections = {
        "model": dataclasses.asdict(ModelConfig(**recipe["config"].get("model", {}))),
        "train": dataclasses.asdict(TrainConfig(**recipe["config"].get("train", {}))),
    }
    previous = train_overrides()
    changed = {}
    for section, fields in (("model", model_fields), ("train", train_fields)):
        kept = {key: value for key, value in previous[section].items() if key not in fields}
        changed[section] = kept | {
            key: value for key, value in fields.items() if value != recipe_sections[section][key]
        }
    st.session_state[TRAIN_OVERRIDES] = changed
    save_settings()


def request_launch() -> None:
    """The Start button's on_click: runs before the page, so the page draws Start disabled while
    it starts the run (launch_once), and a second click of a double click finds it disabled."""
    st.session_state[LAUNCHING] = True


def launch_once(config: RunConfig | None) -> str | None:
    """Start a run for config and watch it on the Train page, once per Start click; returns the
    run id started, or None.

    The same config started again within DOUBLE_CLICK_SECONDS is the second click of a double
    click that reached the server before Start was drawn disabled: it starts nothing.
    """
    from engine import runs
    from engine.errors import UserError

    if repeated_launch(config):
        return None
    now = time.monotonic()
    try:
        run_dir = runs.launch_run(config, runs_dir())
        st.session_state[TRAIN_RUN] = run_dir.name
        st.session_state[LAST_LAUNCH] = (config.to_dict(), now)
        st.session_state[LAUNCH_ERROR] = None
        return run_dir.name
    except UserError as error:
        st.session_state[LAUNCH_ERROR] = str(error)
        return None


def repeated_launch(config: RunConfig | None) -> bool:
    """True for a click that must start nothing: the form is invalid since the click, or this
    config was started within DOUBLE_CLICK_SECONDS (the second click of a double click)."""
    if config is None:
        return True
    last = st.session_state.get(LAST_LAUNCH)
    return bool(
        last and last[0] == config.to_dict() and time.monotonic() - last[1] < DOUBLE_CLICK_SECONDS
    )


def forget_last_launch() -> None:
    """After a Cancel, Start with the same config is meant: it is no double click."""
    st.session_state.pop(LAST_LAUNCH, None)


def runs_dir() -> Path:
    return Path(os.environ.get("STUDIO_RUNS_DIR", "runs")).resolve()


def default_run_config() -> RunConfig:
    return RunConfig(data=data_config(), augment=augment_config())
