"""Model registry and builders: reference CNNs, a configurable CNN and keras.applications transfer models."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from engine import network
from engine.config import ModelConfig
from engine.errors import UserError

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


@dataclass(frozen=True)
class TransferArchitecture:
    """How to build one keras.applications base and where Keras caches its ImageNet weights."""

    constructor: Callable[..., keras.Model]
    preprocess_input: Callable[[Any], Any]
    weights_file: str  # the no-top weights file in Keras' cache; {rows} is MobileNet's input size
    default_input_size: int = 224
    min_input_size: int = 32

    def cached_file_name(self, input_size: int) -> str:
        # Keras falls back to the 224 MobileNet weights for sizes it has no weights for.
        rows = input_size if input_size in (96, 128, 160, 192, 224) else 224
        return self.weights_file.format(rows=rows)


applications = keras.applications
TRANSFER_ARCHITECTURES = {
    "mobilenet_v2": TransferArchitecture(
        applications.MobileNetV2,
        applications.mobilenet_v2.preprocess_input,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
    ),
    "efficientnet_b0": TransferArchitecture(
        applications.EfficientNetB0,
        applications.efficientnet.preprocess_input,
        "efficientnetb0_notop.h5",
    ),
    "resnet50_v2": TransferArchitecture(
        applications.ResNet50V2,
        applications.resnet_v2.preprocess_input,
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg16": TransferArchitecture(
        applications.VGG16,
        applications.vgg16.preprocess_input,
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}

TRANSFER_MODES = ("feature_extraction", "fine_tuning", "two_phase")


@keras.saving.register_keras_serializable(package="studio")
class ApplicationPreprocess(layers.Layer):
    """The architecture's own keras.applications preprocess_input, as a layer that saves and loads."""

    def __init__(self, architecture: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if architecture not in TRANSFER_ARCHITECTURES:
            raise ValueError(
                f"ApplicationPreprocess has no architecture '{architecture}'; "
                f"use one of {sorted(TRANSFER_ARCHITECTURES)}."
            )
        self.architecture = architecture

    def call(self, inputs: Any) -> Any:
        return TRANSFER_ARCHITECTURES[self.architecture].preprocess_input(inputs)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "architecture": self.architecture}


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

    The stem halves photos down to about 32x32 before any residual stage, which is where most of
    the speed comes from on a CPU; each later stage halves the side and doubles the width.
    The last BatchNormalization of each block starts at zero (as in "Bag of Tricks"), so every
    block starts as the identity and a deep stack trains from the first step.
    """
    if not 0 <= config.dropout < 1:
        raise UserError(f"The dropout must be at least 0 and below 1, not {config.dropout}.")
    size = x.shape[1]
    stem_width = RESIDUAL_WIDTHS[0]
    x = _conv_bn_relu(x, stem_width, strides=2 if size > RESIDUAL_WORKING_SIDE else 1, name="stem1")
    size = (size + 1) // 2 if size > RESIDUAL_WORKING_SIDE else size
    stem = 2
    while size > RESIDUAL_WORKING_SIDE:
        x = _conv_bn_relu(x, stem_width, strides=2, name=f"stem{stem}")
        size, stem = (size + 1) // 2, stem + 1
    for stage, width in enumerate(RESIDUAL_WIDTHS):
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


def build_transfer_model(config: ModelConfig, inputs: Any, num_classes: int) -> keras.Model:
    architecture = TRANSFER_ARCHITECTURES[config.name]
    if config.mode not in TRANSFER_MODES:
        raise UserError(
            f"The transfer mode '{config.mode}' is unknown; use one of {', '.join(TRANSFER_MODES)}."
        )
    if not 0 <= config.head_dropout < 1:
        raise UserError(
            f"The head dropout must be at least 0 and below 1, not {config.head_dropout}."
        )
    image_size = inputs.shape[1]
    input_size = max(image_size, architecture.min_input_size)
    base = make_base(config, input_size)
    x = inputs
    if input_size != image_size:
        x = layers.Resizing(input_size, input_size, name="resize_to_minimum")(x)
    x = ApplicationPreprocess(config.name, name="preprocess")(x)
    # training=False documents the intent; Keras 3 overrides it from fit(), but BatchNormalization
    # stays in inference mode anyway because its layers are never trainable here.
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="global_average_pooling")(x)
    x = layers.Dropout(config.head_dropout, name="head_dropout")(x)
    model = keras.Model(inputs, prediction_layer(num_classes)(x), name=config.name)
    if config.mode == "fine_tuning":
        unfreeze_for_fine_tuning(model, config)
    else:
        base.trainable = False
    return model


def make_base(config: ModelConfig, input_size: int) -> keras.Model:
    """The keras.applications base without its top, named "base", with the requested weights."""
    architecture = TRANSFER_ARCHITECTURES[config.name]
    weights = resolve_weights(config, input_size)
    try:
        base = architecture.constructor(
            include_top=False, weights=weights, input_shape=(input_size, input_size, 3), name="base"
        )
    except Exception as error:
        if weights is None:
            raise
        if weights == "imagenet":
            raise UserError(
                f"The ImageNet weights for {config.name} could not be downloaded ({error}); "
                "check the internet connection, or use weights 'none'."
            ) from None
        raise UserError(
            f"The weights file {weights} could not be loaded into {config.name} ({error}); "
            f"it must hold {config.name} weights saved without the top classifier."
        ) from None
    return base


def resolve_weights(config: ModelConfig, input_size: int) -> str | None:
    """None, "imagenet" (to download), or the path of a weights file to load."""
    choice = config.weights.strip()
    if choice.lower() in ("", "none"):
        return None
    if choice.lower() != "imagenet":
        path = Path(choice).expanduser()
        if not path.is_file():
            raise UserError(
                f"The weights file {choice} does not exist; check the path, or use weights 'imagenet' or 'none'."
            )
        return str(path)
    cached = cached_weights_path(TRANSFER_ARCHITECTURES[config.name].cached_file_name(input_size))
    if cached is not None:
        return str(cached)
    if not network.is_online():
        raise UserError(
            f"ImageNet weights for {config.name} are not cached and this machine is offline; "
            "connect to the internet once, or use weights 'none' or a local weights file."
        )
    return "imagenet"


def cached_weights_path(file_name: str) -> Path | None:
    """Where Keras keeps a downloaded weights file: $KERAS_HOME/models, ~/.keras/models or /tmp/.keras/models."""
    home = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()
    for folder in (home, Path("/tmp/.keras")):  # Keras falls back to /tmp when home is read-only
        candidate = folder / "models" / file_name
        if candidate.is_file():
            return candidate
    return None


def unfreeze_for_fine_tuning(model: keras.Model, config: ModelConfig) -> None:
    """Unfreeze the top of the "base" sub-model by the fine-tuning rule; recompile afterwards.

    The top `fine_tune_layers` layers of the base are unfrozen, or every layer from the one named
    `fine_tune_from` on. BatchNormalization layers always stay frozen.
    """
    base = model.get_layer("base")
    base_layers = base.layers
    if config.fine_tune_from:
        names = [layer.name for layer in base_layers]
        if config.fine_tune_from not in names:
            examples = ", ".join([layer.name for layer in base_layers if layer.weights][-5:])
            raise UserError(
                f"The base of {config.name} has no layer named '{config.fine_tune_from}'; "
                f"use one of its layer names, such as {examples}."
            )
        first = names.index(config.fine_tune_from)
    else:
        if config.fine_tune_layers < 0:
            raise UserError(f"fine_tune_layers must be 0 or more, not {config.fine_tune_layers}.")
        first = max(len(base_layers) - config.fine_tune_layers, 0)
    base.trainable = True
    for index, layer in enumerate(base_layers):
        layer.trainable = index >= first and not isinstance(layer, layers.BatchNormalization)


def fine_tune_learning_rate(config: ModelConfig, learning_rate: float) -> float:
    """The learning rate for fine-tuning (modes fine_tuning and two_phase)."""
    return learning_rate * config.fine_tune_learning_rate_factor


def count_parameters(model: keras.Model) -> dict[str, int]:
    """The total and trainable parameter counts of a built model."""
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return {"total": int(model.count_params()), "trainable": trainable}
