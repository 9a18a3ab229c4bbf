"""The scratch models' feature builders: reference CNNs, the configurable CNN and the residual CNN.

Each builder takes the rescaled input tensor (pixel values in [0, 1]) and the ModelConfig and
returns the features the classifier head sits on; engine.registry names which model uses which,
and engine.models.build_model adds the input, the rescaling and the head.
"""

from __future__ import annotations

from typing import Any

from keras import layers

from engine.config import POOLINGS, ModelConfig
from engine.errors import UserError

# residual_cnn: stem convolutions with max pooling bring any input down to this side; four stages
# then halve it three times. 32 keeps the cost per image the same from 32 px to 128 px inputs.
RESIDUAL_WORKING_SIDE = 32
RESIDUAL_WIDTHS = (32, 64, 128, 256)


def eurosat_features(x: Any, config: ModelConfig) -> Any:
    for filters in (32, 64):
        x = layers.BatchNormalization()(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    for units in (128, 64):
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(0.3)(x)
    return x


def catsdogs_features(x: Any, config: ModelConfig) -> Any:
    for filters in (32, 64, 128):
        x = layers.BatchNormalization()(x)
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    return layers.Dropout(0.5)(x)


def tutorial_features(x: Any, config: ModelConfig) -> Any:
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    return layers.Dense(128, activation="relu")(x)


def custom_features(x: Any, config: ModelConfig) -> Any:
    check_custom_config(config)
    size = x.shape[1]
    # A strided stem, as in ResNet: full-resolution blocks on 128 or 224 pixel photos cost most
    # of the time and memory of training while adding little that a halved image lacks.
    while config.stem_size and size > config.stem_size:
        x = layers.Conv2D(
            config.filters, 3, strides=2, padding="same", use_bias=not config.batch_norm
        )(x)
        if config.batch_norm:
            x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        size = (size + 1) // 2
    for block in range(config.blocks):
        filters = config.filters * 2**block
        for _ in range(2):
            x = layers.Conv2D(
                filters, config.kernel_size, padding="same", use_bias=not config.batch_norm
            )(x)
            if config.batch_norm:
                # momentum 0.9: small data sets give few steps per epoch, and with Keras' 0.99 the
                # moving statistics lag far behind, so validation looks broken for many epochs.
                x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(x)
        if size // 2 >= 2:  # pooling below 2x2 would throw away the whole picture
            x = layers.MaxPooling2D(2)(x)
            size //= 2
    x = (
        layers.GlobalAveragePooling2D()(x)
        if config.pooling == "global_average"
        else layers.Flatten()(x)
    )
    x = layers.Dropout(config.dropout)(x)
    if config.dense_units > 0:
        x = layers.Dense(config.dense_units, activation="relu")(x)
        x = layers.Dropout(config.dropout)(x)
    return x


def residual_features(x: Any, config: ModelConfig) -> Any:
    """A ResNet-style CNN: a pooled stem, four stages of one basic residual block, global pooling.

    The stages are `filters` wide, then twice, four and eight times that (32: 32 to 256).

    The stem brings photos down to 32x32 or less (20x20 from 160 px) before any residual stage,
    which is where most of the speed comes from on a CPU; each later stage halves the side and
    doubles the width. Each stem step is a 3x3 convolution at its full resolution, then a 2x2 max
    pooling (half of
    `filters` wide at the input's resolution, `filters` after): a strided convolution in its
    place runs twice as fast but drops the fine detail some classes differ by (fur, eyes: on
    cats_vs_dogs the defaults reached 0.780 test accuracy with two stride-2 convolutions and
    0.832 with this stem at 128 px, in the same 15-minute budget). Inputs of 32 px or less get one
    convolution at full resolution and no pooling.
    The last BatchNormalization of each block starts at zero (as in "Bag of Tricks"), so every
    block starts as the identity and a deep stack trains from the first step.
    """
    if not 0 <= config.dropout < 1:
        raise UserError(f"The dropout must be at least 0 and below 1, not {config.dropout}.")
    if config.filters < 1:
        raise UserError(f"The number of filters must be at least 1, not {config.filters}.")
    size = x.shape[1]
    if size <= RESIDUAL_WORKING_SIDE:
        x = _conv_bn_relu(x, config.filters, strides=1, name="stem1")
    stem = 1
    while size > RESIDUAL_WORKING_SIDE:
        width = max(1, config.filters // 2) if stem == 1 else config.filters
        x = _conv_bn_relu(x, width, strides=1, name=f"stem{stem}")
        x = layers.MaxPooling2D(2, padding="same", name=f"stem{stem}_pool")(x)
        size, stem = (size + 1) // 2, stem + 1
    widths = [config.filters * 2**stage for stage in range(len(RESIDUAL_WIDTHS))]
    for stage, width in enumerate(widths):
        strides = 2 if stage > 0 and size >= 2 else 1
        size = (size + 1) // 2 if strides == 2 else size
        x = _residual_block(x, width, strides, name=f"stage{stage + 1}")
    x = layers.GlobalAveragePooling2D(name="global_average_pooling")(x)
    return layers.Dropout(config.dropout, name="head_dropout")(x)


def _conv_bn_relu(x: Any, filters: int, strides: int, name: str) -> Any:
    x = layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x: Any, filters: int, strides: int, name: str) -> Any:
    shortcut = x
    y = _conv_bn_relu(x, filters, strides, name=f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    y = layers.BatchNormalization(momentum=0.9, gamma_initializer="zeros", name=f"{name}_b_bn")(y)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv"
        )(shortcut)
        shortcut = layers.BatchNormalization(momentum=0.9, name=f"{name}_shortcut_bn")(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def check_custom_config(config: ModelConfig) -> None:
    """Raise a UserError for configurable-CNN settings that cannot build a model."""
    if config.blocks < 1 or config.filters < 1 or config.kernel_size < 1 or config.dense_units < 0:
        raise UserError(
            "The CNN settings blocks, filters and kernel_size must be at least 1 and dense_units at "
            f"least 0 (got {config.blocks}, {config.filters}, {config.kernel_size}, {config.dense_units})."
        )
    if config.pooling not in POOLINGS:
        raise UserError(f"The pooling '{config.pooling}' is unknown; use {' or '.join(POOLINGS)}.")
    if not 0 <= config.dropout < 1:
        raise UserError(f"The dropout must be at least 0 and below 1, not {config.dropout}.")
