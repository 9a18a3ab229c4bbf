"""Transfer learning from keras.applications: the saved layers, the frozen base, its head and fine-tuning.

Which architectures there are lives in engine.registry; which weights they start from in
engine.imagenet_weights.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from engine.config import TRANSFER_MODES, ModelConfig
from engine.errors import UserError

# Re-exported: the weights' rules were part of this module; make_base looks resolve_weights up here.
from engine.imagenet_weights import (  # noqa: F401
    cached_weights_path,
    imagenet_weights_available,
    resolve_weights,
    uses_pretrained_weights,
)
from engine.registry import REGISTRY, TRANSFER_MODEL_NAMES, ModelSpec

# The transfer models' specs by name, a view of the registry; ModelSpec was TransferArchitecture.
TRANSFER_ARCHITECTURES: dict[str, ModelSpec] = {
    name: REGISTRY[name] for name in TRANSFER_MODEL_NAMES
}
TransferArchitecture = ModelSpec


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


@keras.saving.register_keras_serializable(package="studio")
class InferenceBase(layers.Layer):
    """Runs a pretrained base in inference mode, in fit() too: its Dropout off, BatchNorm frozen.

    A Functional model passes fit()'s training=True to every layer whose call() takes `training`,
    overriding a `base(x, training=False)` written in the graph. This call() takes none, so the
    flag stops here. Unfrozen layers of the base still learn: gradients flow as usual.
    """

    def __init__(self, base: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base

    def build(self, input_shape: tuple) -> None:
        self.built = True  # the base arrives built

    def call(self, inputs: Any) -> Any:
        return self.base(inputs, training=False)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.base.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "base": keras.saving.serialize_keras_object(self.base)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InferenceBase:
        base = keras.saving.deserialize_keras_object(config.pop("base"))
        return cls(base, **config)


def base_of(model: keras.Model) -> keras.Model:
    """The keras.applications base of a transfer model, inside its InferenceBase or not."""
    for layer in model.layers:
        if isinstance(layer, InferenceBase):
            return layer.base
    return model.get_layer("base")


def check_transfer_config(config: ModelConfig) -> None:
    """Raise a UserError for transfer settings that cannot train a useful model."""
    if config.mode not in TRANSFER_MODES:
        raise UserError(
            f"The transfer mode '{config.mode}' is unknown; use one of {', '.join(TRANSFER_MODES)}."
        )
    if not 0 <= config.head_dropout < 1:
        raise UserError(
            f"The head dropout must be at least 0 and below 1, not {config.head_dropout}."
        )
    if config.fine_tune_layers < 0:
        raise UserError(f"fine_tune_layers must be 0 or more, not {config.fine_tune_layers}.")
    if uses_pretrained_weights(config):
        return
    if config.mode != "fine_tuning":
        setting = f"mode {config.mode}"
    elif config.fine_tune_from:
        setting = f"fine_tune_from {config.fine_tune_from}"
    elif config.fine_tune_layers > 0:
        setting = f"fine_tune_layers {config.fine_tune_layers}"
    else:
        return
    raise UserError(
        f"Weights none with {setting} trains only part of {config.name} on top of random, frozen "
        "layers, so it cannot learn; use weights imagenet or a local weights file, mode "
        "fine_tuning with fine_tune_layers 0 and no fine_tune_from (the whole network trains), "
        "or a scratch model such as residual_cnn."
    )


def build_transfer_model(config: ModelConfig, inputs: Any, num_classes: int) -> keras.Model:
    """A keras.applications base with a new head, frozen or unfrozen by `config.mode`."""
    from engine.models import prediction_layer  # engine.models imports this module

    check_transfer_config(config)
    spec = TRANSFER_ARCHITECTURES[config.name]
    image_size = inputs.shape[1]
    input_size = max(image_size, spec.min_input_size)
    base = make_base(config, input_size)
    x = inputs
    if input_size != image_size:
        x = layers.Resizing(input_size, input_size, name="resize_to_minimum")(x)
    x = ApplicationPreprocess(config.name, name="preprocess")(x)
    if uses_pretrained_weights(config):
        x = InferenceBase(base, name="inference_base")(x)
    else:
        x = base(x)  # random BatchNorm statistics must be learnt: training mode in fit()
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
    spec = TRANSFER_ARCHITECTURES[config.name]
    weights = resolve_weights(config, input_size)
    try:
        # Named after construction: EfficientNet builds its weights file name from `name`, so
        # name="base" would make Keras look for base_notop.h5, which does not exist.
        base = spec.constructor(
            include_top=False, weights=weights, input_shape=(input_size, input_size, 3)
        )
    except Exception as error:
        if weights is None:
            raise
        if weights != "imagenet":
            raise UserError(
                f"The weights file {weights} could not be loaded into {config.name} ({error}); "
                f"it must hold {config.name} weights saved without the top classifier."
            ) from None
        cached = cached_weights_path(spec.cached_file_name(input_size))
        if cached is not None:
            raise UserError(
                f"The cached ImageNet weights file {cached} could not be loaded into "
                f"{config.name} ({error}); delete it so Keras downloads it again, "
                "or use a local weights file."
            ) from None
        raise UserError(
            f"The ImageNet weights for {config.name} could not be downloaded ({error}); "
            "check the internet connection, or use a local weights file or a scratch model "
            "such as residual_cnn."
        ) from None
    base.name = "base"
    return base


def unfreeze_for_fine_tuning(model: keras.Model, config: ModelConfig) -> None:
    """Unfreeze the base by the fine-tuning rule; recompile afterwards.

    With pretrained weights: every layer from `fine_tune_from` on, else the top `fine_tune_layers`
    layers, else (both unset) from the architecture's default block; BatchNormalization layers
    stay frozen. With weights none: every layer, BatchNormalization included.
    """
    check_transfer_config(config)
    base = base_of(model)
    base.trainable = True
    if not uses_pretrained_weights(config):
        for layer in base.layers:
            layer.trainable = True
        return
    first = first_unfrozen_index(base, config)
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(layer, layers.BatchNormalization)


def first_unfrozen_index(base: keras.Model, config: ModelConfig) -> int:
    """The index in `base.layers` of the first layer that fine-tuning unfreezes."""
    names = [layer.name for layer in base.layers]
    if config.fine_tune_layers > 0 and not config.fine_tune_from:
        return max(len(names) - config.fine_tune_layers, 0)
    start = config.fine_tune_from or TRANSFER_ARCHITECTURES[config.name].fine_tune_from
    if start not in names:
        examples = ", ".join([layer.name for layer in base.layers if layer.weights][-5:])
        raise UserError(
            f"The base of {config.name} has no layer named '{start}'; "
            f"use one of its layer names, such as {examples}."
        )
    return names.index(start)


def fine_tune_learning_rate(config: ModelConfig, learning_rate: float) -> float:
    """The learning rate for fine-tuning (modes fine_tuning and two_phase)."""
    return learning_rate * config.fine_tune_learning_rate_factor


def transfer_notes(config: ModelConfig) -> list[str]:
    """Plain sentences on how a transfer model will train, for the Train page and the CLI."""
    if config.name not in TRANSFER_ARCHITECTURES:
        return []
    if not uses_pretrained_weights(config):
        return [
            "weights none: the whole network trains from random initialisation, BatchNorm included."
        ]
    if config.mode == "feature_extraction":
        return [
            "feature_extraction: only the new head trains; the pretrained base stays frozen "
            "and runs in inference mode."
        ]
    if config.fine_tune_from:
        depth = f"from layer {config.fine_tune_from} on"
    elif config.fine_tune_layers > 0:
        depth = f"in its top {config.fine_tune_layers} layers"
    else:
        depth = f"from layer {TRANSFER_ARCHITECTURES[config.name].fine_tune_from} on (its default block)"
    factor = f"learning_rate x {config.fine_tune_learning_rate_factor:g}"
    notes = [
        f"Fine-tuning unfreezes {config.name} {depth}; its BatchNorm layers stay frozen and the "
        "base runs in inference mode."
    ]
    if config.mode == "fine_tuning":
        notes.append(
            f"fine_tuning: the random head trains at the fine-tuning learning rate ({factor}) "
            "from the first step, and its first large gradients reach the unfrozen layers; "
            "two_phase, which trains the head on the frozen base first, is usually better."
        )
    else:
        notes.append(
            "two_phase: the head trains first on the frozen base at learning_rate, then "
            f"fine-tuning continues at {factor}."
        )
    return notes
