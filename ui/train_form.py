"""The Train page's form: the data's recipe as defaults, the user's changes, and what a run will use.

`training_form(recipe)` draws the model and hyperparameter widgets, seeded from the recipe the
engine resolved for the current dataset, and returns the model and train sections the user
chose; `run_summary(config, ...)` lists what Start will use; the learning-rate finder lives here
too. Every widget key starts with `train_`.
"""

from __future__ import annotations

import streamlit as st

from engine.config import (
    OPTIMIZERS,
    POOLINGS,
    SCHEDULES,
    TRANSFER_MODEL_NAMES,
    TRANSFER_MODES,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from ui.data_views import display_name

LR_FIND_RESULT = "train_lr_find_result"
LR_PENDING = "train_lr_pending"  # a suggestion to put into the learning-rate box on the next run
LEARNING_RATE_KEY = "train_learning_rate"


def apply_pending_learning_rate() -> None:
    """Copy a learning-rate suggestion into its widget; must run before the widget is drawn."""
    pending = st.session_state.pop(LR_PENDING, None)
    if pending is not None:
        st.session_state[LEARNING_RATE_KEY] = float(pending)


def training_form(
    recipe: dict, catalog: list[dict], overrides: dict | None = None
) -> tuple[dict, dict]:
    """The model and train sections the user chose. The widgets open on the recipe's values with
    the user's earlier changes (overrides, as ui.state keeps them) on top: widget values are
    dropped when the user leaves the page, the overrides are not."""
    overrides = overrides or {}
    model_defaults = ModelConfig(
        **{**recipe["config"].get("model", {}), **overrides.get("model", {})}
    )
    train_defaults = TrainConfig(
        **{**recipe["config"].get("train", {}), **overrides.get("train", {})}
    )
    names = [model["name"] for model in catalog]
    describe = {model["name"]: model for model in catalog}
    left, right = st.columns(2)
    with left:
        name = st.selectbox(
            "Model",
            names,
            index=names.index(model_defaults.name) if model_defaults.name in names else 0,
            key="train_model",
            format_func=lambda n: f"{n} ({describe[n]['family']})",
        )
        st.caption(describe[name]["description"])
        model_fields: dict = {"name": name}
        if name == "custom_cnn":
            model_fields |= _custom_cnn_fields(model_defaults)
        elif name in ("residual_cnn", "default_cnn"):
            model_fields["dropout"] = st.slider(
                "Dropout before the classifier",
                0.0,
                0.7,
                model_defaults.dropout,
                0.05,
                key="train_dropout",
            )
        if describe[name]["family"] == "transfer":
            model_fields |= _transfer_fields(model_defaults)
    with right:
        train_fields = _train_fields(train_defaults)
    return model_fields, train_fields


def _custom_cnn_fields(defaults: ModelConfig) -> dict:
    return {
        "blocks": st.slider("Convolution blocks", 1, 5, defaults.blocks, key="train_blocks"),
        "filters": st.select_slider(
            "Filters in the first block", [8, 16, 32, 64], defaults.filters, key="train_filters"
        ),
        "kernel_size": st.select_slider(
            "Kernel size", [3, 5, 7], defaults.kernel_size, key="train_kernel"
        ),
        "batch_norm": st.checkbox(
            "Batch normalisation", defaults.batch_norm, key="train_batch_norm"
        ),
        "dropout": st.slider("Dropout", 0.0, 0.7, defaults.dropout, 0.05, key="train_dropout"),
        "dense_units": st.select_slider(
            "Dense units", [0, 64, 128, 256, 512], defaults.dense_units, key="train_dense"
        ),
        "pooling": st.radio(
            "Head",
            list(POOLINGS),
            index=list(POOLINGS).index(defaults.pooling) if defaults.pooling in POOLINGS else 0,
            key="train_pooling",
            horizontal=True,
        ),
    }


def _transfer_fields(defaults: ModelConfig) -> dict:
    fields: dict = {}
    choices = ["imagenet", "none", "local file"]
    weights = st.radio(
        "Weights",
        choices,
        index=choices.index(defaults.weights) if defaults.weights in choices[:2] else 2,
        key="train_weights",
        horizontal=True,
        help="ImageNet weights are downloaded once by Keras and need the internet the first time.",
    )
    fields["weights"] = (
        st.text_input(
            "Weights file",
            "" if defaults.weights in choices[:2] else defaults.weights,
            key="train_weights_file",
        )
        if weights == "local file"
        else weights
    )
    modes = sorted(TRANSFER_MODES, key=lambda mode: mode != "two_phase")  # two-phase first
    fields["mode"] = st.radio(
        "Mode",
        modes,
        index=modes.index(defaults.mode) if defaults.mode in modes else 0,
        key="train_mode",
        format_func=lambda m: m.replace("_", " "),
        horizontal=True,
    )
    if weights == "none":
        st.info(
            "With weights none only fine tuning of the whole network learns anything: it trains "
            "every layer from random initialisation, BatchNorm included. Feature extraction and "
            "two-phase would train a head on random features, so they are refused."
        )
    if fields["mode"] != "feature_extraction":
        fields["fine_tune_from"] = st.text_input(
            "Fine-tune from this layer on (empty: the architecture's last block)",
            defaults.fine_tune_from,
            key="train_unfreeze_from",
        )
        fields["fine_tune_learning_rate_factor"] = st.select_slider(
            "Fine-tuning learning rate factor",
            [0.01, 0.03, 0.1, 0.3, 1.0],
            defaults.fine_tune_learning_rate_factor,
            key="train_ft_factor",
        )
    if fields["mode"] == "two_phase":
        fields["head_epochs"] = st.number_input(
            "Epochs for the head first (0 = half)",
            0,
            500,
            defaults.head_epochs,
            key="train_head_epochs",
        )
    return fields


def _train_fields(defaults: TrainConfig) -> dict:
    optimizers = list(OPTIMIZERS)
    schedules = list(SCHEDULES)
    fields = {
        "epochs": st.number_input(
            "Epochs (0 = fit the time budget)", 0, 1000, defaults.epochs, key="train_epochs"
        ),
    }
    if fields["epochs"] == 0:
        fields["time_budget_minutes"] = st.number_input(
            "Time budget (minutes of training)",
            0.5,
            600.0,
            defaults.time_budget_minutes,
            0.5,
            key="train_budget",
        )
    fields |= {
        "batch_size": st.select_slider(
            "Batch size", [8, 16, 32, 64, 128, 256], defaults.batch_size, key="train_batch_size"
        ),
        "learning_rate": st.number_input(
            "Learning rate (peak)",
            min_value=1e-6,
            max_value=1.0,
            value=defaults.learning_rate,
            format="%.1e",
            key=LEARNING_RATE_KEY,
        ),
        "optimizer": st.selectbox(
            "Optimizer",
            optimizers,
            index=optimizers.index(defaults.optimizer),
            key="train_optimizer",
        ),
        "weight_decay": st.number_input(
            "Weight decay", 0.0, 1.0, defaults.weight_decay, 0.01, key="train_weight_decay"
        ),
        "schedule": st.selectbox(
            "Learning-rate schedule",
            schedules,
            index=schedules.index(defaults.schedule),
            key="train_schedule",
            format_func=lambda s: s.replace("_", " "),
        ),
        "early_stopping_patience": st.number_input(
            "Early stopping patience (0 = off)",
            0,
            200,
            defaults.early_stopping_patience,
            key="train_patience",
        ),
        "label_smoothing": st.slider(
            "Label smoothing", 0.0, 0.3, defaults.label_smoothing, 0.05, key="train_label_smoothing"
        ),
        "ema": st.checkbox(
            "Average the weights (EMA)",
            defaults.ema,
            key="train_ema",
            help="Validates, keeps and evaluates an exponential moving average of the weights.",
        ),
        "class_weights": st.checkbox(
            "Weight classes by inverse frequency",
            defaults.class_weights,
            key="train_class_weights",
        ),
        "mixed_precision": st.checkbox(
            "Mixed precision (GPU only)", defaults.mixed_precision, key="train_mixed_precision"
        ),
        "seed": st.number_input("Seed", 0, 2**31 - 1, defaults.seed, key="train_seed"),
    }
    return fields


def run_summary(config: RunConfig, summary: dict, notes: list[str]) -> list[tuple[str, str]]:
    """(what, value) rows of what Start will use, as plain text."""
    counts = summary.get("counts", {})
    split_sizes = ", ".join(
        f"{split} {sum(counts.get(split, {}).values()):,}"
        for split in ("train", "validation", "test")
    )
    augment = config.augment
    chosen = [
        name.replace("_", " ") + ("" if isinstance(value, bool) else f" {value:g}")
        for name, value in vars(augment).items()
        if value
    ]
    train = config.train
    epochs = (
        f"fitted to a {train.time_budget_minutes:g}-minute budget when the run starts"
        if train.epochs == 0
        else str(train.epochs)
    )
    model = config.model.name
    if config.model.name in TRANSFER_MODEL_NAMES:
        model += f" ({config.model.mode.replace('_', ' ')}, weights {config.model.weights})"
    rows = [
        (
            "Dataset",
            f"{display_name(config.data.spec)} ({summary.get('images', 0):,} images, "
            f"{len(summary.get('class_names', []))} classes)",
        ),
        ("Splits", split_sizes),
        ("Image size", f"{config.data.image_size or summary.get('image_size')} px square"),
        ("Augmentation", ", ".join(chosen) if chosen else "off"),
        ("Model", model),
        ("Epochs", epochs),
        ("Batch size", str(train.batch_size)),
        (
            "Learning rate",
            f"{train.learning_rate:.1e} peak, {train.schedule.replace('_', ' ')}, "
            f"{train.optimizer}, weight decay {train.weight_decay:g}",
        ),
        (
            "Regularisation",
            f"label smoothing {train.label_smoothing:g}"
            + (", weight averaging (EMA)" if train.ema else ""),
        ),
    ]
    return rows + [("Note", note) for note in notes]
