"""Building models: build_model over the registry's specs, the shared classifier head, parameter counts.

What each model is lives in engine.registry (one ModelSpec per model); the scratch builders in
engine.scratch_models, transfer learning from keras.applications in engine.transfer.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from engine.config import ModelConfig
from engine.errors import UserError

# Re-exported: the registry's questions are asked through engine.models across the project.
from engine.registry import (  # noqa: F401
    MODEL_NAMES,
    SPECS,
    ModelSpec,
    get_spec,
    is_transfer,
    list_models,
    model_names,
)

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


def build_model(config: ModelConfig, image_size: int, num_classes: int) -> keras.Model:
    """Build the model `config.name` for square RGB float32 images with pixel values in [0, 255]."""
    spec = get_spec(config.name)
    if num_classes < 2:
        raise UserError(f"A classifier needs at least 2 classes, but the data has {num_classes}.")
    if image_size < 1:
        raise UserError(f"The image size must be a positive number of pixels, not {image_size}.")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if spec.is_transfer:
        return build_transfer_model(config, inputs, num_classes)
    minimum = spec.min_input_size
    if image_size < minimum:
        raise UserError(
            f"The model {config.name} needs images of at least {minimum}x{minimum} pixels, "
            f"not {image_size}x{image_size}; raise the image size."
        )
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = spec.features(x, config)
    return keras.Model(inputs, prediction_layer(num_classes)(x), name=config.name)


def prediction_layer(num_classes: int) -> layers.Dense:
    """The classifier head every model ends in."""
    # float32 so the softmax stays stable under mixed precision.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")


def count_parameters(model: keras.Model) -> dict[str, int]:
    """The total and trainable parameter counts of a built model."""
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return {"total": int(model.count_params()), "trainable": trainable}
