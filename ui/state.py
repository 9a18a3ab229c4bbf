"""Session-state keys and their defaults; every page calls init_state() so it also runs alone."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import streamlit as st

from engine.config import AugmentConfig, DataConfig, RunConfig

DATA_CONFIG = "data_config"  # dict of DataConfig: the dataset every page works on
AUGMENT_CONFIG = "augment_config"  # dict of AugmentConfig: goes into the next training run
TRAIN_RUN = "train_run"  # run id shown on the Train page
EVAL_RUN = "eval_run_id"
PREDICT_RUN = "predict_run_id"


def init_state() -> None:
    st.session_state.setdefault(DATA_CONFIG, dataclasses.asdict(DataConfig()))
    st.session_state.setdefault(AUGMENT_CONFIG, None)  # None: the dataset's recipe decides
    st.session_state.setdefault(TRAIN_RUN, None)


def data_config() -> DataConfig:
    init_state()
    return DataConfig(**st.session_state[DATA_CONFIG])


def set_data_config(config: DataConfig) -> None:
    st.session_state[DATA_CONFIG] = dataclasses.asdict(config)


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


def runs_dir() -> Path:
    return Path(os.environ.get("STUDIO_RUNS_DIR", "runs")).resolve()


def default_run_config() -> RunConfig:
    return RunConfig(data=data_config(), augment=augment_config())
