"""Model registry and builders: reference CNNs and configurable CNNs; transfer models live in transfer.py."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from engine.config import ModelConfig
from engine.errors import UserError

# Re-exported: engine.training and saved models' callers use these through engine.models.
from engine.transfer import (  # noqa: F401
    TRANSFER_ARCHITECTURES,
    TRANSFER_MODES,
    ApplicationPreprocess,
    InferenceBase,
    TransferArchitecture,
    base_of,
    build_transfer_model,
    cached_weights_path,
    fine_tune_learning_rate,
    imagenet_weights_available,
    make_base,
    resolve_weights,
    transfer_notes,
    unfreeze_for_fine_tuning,
)

# Every model ends in a float32 softmax, so losses take probabilities, never logits.
LOSS_FROM_LOGITS = False

MODEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "reference": ("eurosat_cnn", "catsdogs_cnn", "tutorial_cnn"),
    "configurable": ("residual_cnn", "default_cnn", "custom_cnn"),
    "transfer": ("mobilenet_v2", "efficientnet_b0", "resnet50_v2", "vgg16"),
}

DESCRIPTIONS = {
    "eurosat_cnn": "A small two-block CNN with a dense head, as used for EuroSAT satellite tiles.",
    "catsdogs_cnn": "A three-block CNN with a wide dense head, as used for cats versus dogs.",
    "tutorial_cnn": "The three-convolution CNN from the TensorFlow image classification tutorial.",
    "residual_cnn": "A small residual CNN with BatchNorm and global pooling: the default for photos.",
    "default_cnn": "The configurable CNN with its default settings; the default for small images.",
    "custom_cnn": "A CNN of doubling convolution blocks, shaped by the model settings.",
    "mobilenet_v2": "MobileNetV2 from keras.applications: small and fast, good on a CPU.",
    "efficientnet_b0": "EfficientNetB0 from keras.applications: accurate for its size.",
    "resnet50_v2": "ResNet50V2 from keras.applications: a large, robust residual network.",
    "vgg16": "VGG16 from keras.applications: a classic, heavy plain convolution stack.",
}

# The smallest square side each scratch architecture accepts (valid convolutions and poolings).
SCRATCH_MIN_INPUT_SIZE = {
    "eurosat_cnn": 4,
    "catsdogs_cnn": 22,
    "tutorial_cnn": 8,
    "residual_cnn": 1,
    "default_cnn": 1,
    "custom_cnn": 1,
}

# residual_cnn: strided stem convolutions bring any input down to this side; four stages then
# halve it three times. 32 keeps the cost per image the same from 32 px to 128 px inputs.
RESIDUAL_WORKING_SIDE = 32
RESIDUAL_WIDTHS = (32, 64, 128, 256)


def model_names() -> list[str]:
    return [name for names in MODEL_FAMILIES.values() for name in names]


def is_transfer(name: str) -> bool:
    """True when `name` is a keras.applications transfer-learning model."""
    return name in TRANSFER_ARCHITECTURES


def list_models() -> list[dict[str, Any]]:
    """One dict per model: name, family, description, and input sizes."""
    entries = []
    for family, names in MODEL_FAMILIES.items():
        for name in names:
            entry: dict[str, Any] = {
                "name": name,
                "family": family,
                "description": DESCRIPTIONS[name],
            }
            if is_transfer(name):
                entry["default_input_size"] = TRANSFER_ARCHITECTURES[name].default_input_size
                entry["min_input_size"] = TRANSFER_ARCHITECTURES[name].min_input_size
            else:
                entry["min_input_size"] = SCRATCH_MIN_INPUT_SIZE[name]
            entries.append(entry)
    return entries


def build_model(config: ModelConfig, image_size: int, num_classes: int) -> keras.Model:
    """Build the model `config.name` for square RGB float32 images with pixel values in [0, 255]."""
    if config.name not in DESCRIPTIONS:
        raise UserError(
            f"There is no model '{config.name}'; choose one of {', '.join(model_names())}."
        )
    if num_classes < 2:
        raise UserError(f"A classifier needs at least 2 classes, but the data has {num_classes}.")
    if image_size < 1:
        raise UserError(f"The image size must be a positive number of pixels, not {image_size}.")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if is_transfer(config.name):
        return build_transfer_model(config, inputs, num_classes)
    minimum = SCRATCH_MIN_INPUT_SIZE[config.name]
    if image_size < minimum:
        raise UserError(
            f"The model {config.name} needs images of at least {minimum}x{minimum} pixels, "
            f"not {image_size}x{image_size}; raise the image size."
        )
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    builders = {
        "eurosat_cnn": eurosat_features,
        "catsdogs_cnn": catsdogs_features,
        "tutorial_cnn": tutorial_features,
        "residual_cnn": residual_features,
        "default_cnn": custom_features,
        "custom_cnn": custom_features,
    }
    x = builders[config.name](x, config)
    return keras.Model(inputs, prediction_layer(num_classes)(x), name=config.name)


def prediction_layer(num_classes: int) -> layers.Dense:
    # float32 so the softmax stays stable under mixed precision.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")


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
    """A ResNet-style CNN: strided stem, four stages of one basic residual block, global pooling.

    The stages are `filters` wide, then twice, four and eight times that (32: 32 to 256).

    The stem halves photos down to about 32x32 before any residual stage, which is where most of
    the speed comes from on a CPU; each later stage halves the side and doubles the width.
    The last BatchNormalization of each block starts at zero (as in "Bag of Tricks"), so every
    block starts as the identity and a deep stack trains from the first step.
    """
    if not 0 <= config.dropout < 1:
        raise UserError(f"The dropout must be at least 0 and below 1, not {config.dropout}.")
    size = x.shape[1]
    stem_width = config.filters
    x = _conv_bn_relu(x, stem_width, strides=2 if size > RESIDUAL_WORKING_SIDE else 1, name="stem1")
    size = (size + 1) // 2 if size > RESIDUAL_WORKING_SIDE else size
    stem = 2
    while size > RESIDUAL_WORKING_SIDE:
        x = _conv_bn_relu(x, stem_width, strides=2, name=f"stem{stem}")
        size, stem = (size + 1) // 2, stem + 1
    if config.filters < 1:
        raise UserError(f"The number of filters must be at least 1, not {config.filters}.")
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
    if config.blocks < 1 or config.filters < 1 or config.kernel_size < 1 or config.dense_units < 0:
        raise UserError(
            "The CNN settings blocks, filters and kernel_size must be at least 1 and dense_units at "
            f"least 0 (got {config.blocks}, {config.filters}, {config.kernel_size}, {config.dense_units})."
        )
    if config.pooling not in ("global_average", "flatten"):
        raise UserError(
            f"The pooling '{config.pooling}' is unknown; use global_average or flatten."
        )
    if not 0 <= config.dropout < 1:
        raise UserError(f"The dropout must be at least 0 and below 1, not {config.dropout}.")


def count_parameters(model: keras.Model) -> dict[str, int]:
    """The total and trainable parameter counts of a built model."""
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return {"total": int(model.count_params()), "trainable": trainable}
