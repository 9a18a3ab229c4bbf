"""Which weights a transfer model starts from: none, ImageNet (in Keras' cache or downloadable), or a file.

Nothing here imports TensorFlow or Keras, so the recipe can ask whether ImageNet weights are at hand
before any model is built.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine import network
from engine.config import ModelConfig
from engine.errors import UserError
from engine.registry import TRANSFER_MODEL_NAMES, get_spec


def uses_pretrained_weights(config: ModelConfig) -> bool:
    """True for weights imagenet or a local file, False for weights none."""
    return config.weights.strip().lower() not in ("", "none")


def resolve_weights(config: ModelConfig, input_size: int) -> str | None:
    """None, "imagenet" (cached, or to download), or the path of a weights file to load."""
    choice = config.weights.strip()
    if not uses_pretrained_weights(config):
        return None
    if choice.lower() != "imagenet":
        path = Path(choice).expanduser()
        if not path.is_file():
            raise UserError(
                f"The weights file {choice} does not exist; check the path, or use weights 'imagenet' or 'none'."
            )
        return str(path)
    # A cached file is still passed as "imagenet", never as its path: Keras then finds it in its
    # cache, and adds the input scaling that only ImageNet weights get (EfficientNet's
    # Rescaling by 1/sqrt(stddev)); loading the path skips that and feeds inputs 2x too small.
    cached = cached_weights_path(get_spec(config.name).cached_file_name(input_size))
    if cached is None and not network.is_online():
        raise UserError(
            f"ImageNet weights for {config.name} are not cached and this machine is offline; "
            "connect to the internet once, or use a local weights file or a scratch model "
            "such as residual_cnn."
        )
    return "imagenet"


def cached_weights_path(file_name: str) -> Path | None:
    """The weights file in Keras' cache ($KERAS_HOME/models or ~/.keras/models), if it is there."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or "~/.keras")
    if not os.access(home, os.W_OK):  # as keras.utils.get_file, which then uses /tmp/.keras
        home = "/tmp/.keras"
    candidate = Path(home) / "models" / file_name
    return candidate if candidate.is_file() else None


def imagenet_weights_available(name: str, image_size: int) -> bool:
    """True when the ImageNet weights of transfer model `name` are cached or can be downloaded."""
    if name not in TRANSFER_MODEL_NAMES:
        raise ValueError(
            f"'{name}' is not a transfer model; use one of {', '.join(TRANSFER_MODEL_NAMES)}."
        )
    spec = get_spec(name)
    input_size = max(image_size, spec.min_input_size)
    cached = cached_weights_path(spec.cached_file_name(input_size))
    return cached is not None or network.is_online()
