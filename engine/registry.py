"""The model registry: one ModelSpec per model the studio can train, and the questions asked of it.

Importing this module imports neither TensorFlow nor Keras: a spec names its builder and its
keras.applications constructor, and resolves them only when a model is built. So the command line,
config validation and the dashboard's forms can list models without starting TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import UserError

MODEL_FAMILIES = ("reference", "configurable", "transfer")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the studio knows about one model."""

    name: str
    family: str  # one of MODEL_FAMILIES
    description: str  # one sentence, for the model list and the Train page
    min_input_size: int  # the smallest square side it accepts (valid convolutions and poolings)
    default_input_size: int | None = None  # transfer: the side its ImageNet weights were trained at
    builder: str = ""  # scratch: the function of engine.scratch_models that makes its features
    # transfer: the keras.applications constructor and the module whose preprocess_input it uses
    application: str = ""
    preprocess_module: str = ""
    weights_file: str = ""  # transfer: the no-top weights file in Keras' cache; {rows} is its size
    fine_tune_from: str = ""  # transfer: the first layer fine-tuning unfreezes by default

    @property
    def is_transfer(self) -> bool:
        return self.family == "transfer"

    @property
    def features(self) -> Callable[[Any, Any], Any]:
        """The scratch builder: features(rescaled_inputs, model_config) -> the features tensor."""
        from engine import scratch_models  # imports Keras

        return getattr(scratch_models, self.builder)

    @property
    def constructor(self) -> Callable[..., Any]:
        """The keras.applications constructor, such as keras.applications.MobileNetV2."""
        import keras

        return getattr(keras.applications, self.application)

    @property
    def preprocess_input(self) -> Callable[[Any], Any]:
        """The architecture's own keras.applications preprocess_input."""
        import keras

        return getattr(keras.applications, self.preprocess_module).preprocess_input

    def cached_file_name(self, input_size: int) -> str:
        # Keras falls back to the 224 MobileNet weights for sizes it has no weights for.
        rows = input_size if input_size in (96, 128, 160, 192, 224) else 224
        return self.weights_file.format(rows=rows)

    def describe(self) -> dict[str, Any]:
        """The spec as list_models gives it: name, family, description and input sizes."""
        entry: dict[str, Any] = {
            "name": self.name,
            "family": self.family,
            "description": self.description,
        }
        if self.default_input_size is not None:
            entry["default_input_size"] = self.default_input_size
        entry["min_input_size"] = self.min_input_size
        return entry


def _scratch(name: str, family: str, description: str, min_input_size: int, builder: str):
    return ModelSpec(name, family, description, min_input_size, builder=builder)


def _transfer(name: str, description: str, application: str, preprocess: str, **spec: str):
    return ModelSpec(
        name,
        "transfer",
        description,
        min_input_size=32,
        default_input_size=224,
        application=application,
        preprocess_module=preprocess,
        **spec,
    )


SPECS: tuple[ModelSpec, ...] = (
    _scratch(
        "eurosat_cnn",
        "reference",
        "A small two-block CNN with a dense head, as used for EuroSAT satellite tiles.",
        4,
        "eurosat_features",
    ),
    _scratch(
        "catsdogs_cnn",
        "reference",
        "A three-block CNN with a wide dense head, as used for cats versus dogs.",
        22,
        "catsdogs_features",
    ),
    _scratch(
        "tutorial_cnn",
        "reference",
        "The three-convolution CNN from the TensorFlow image classification tutorial.",
        8,
        "tutorial_features",
    ),
    _scratch(
        "residual_cnn",
        "configurable",
        "A small residual CNN with BatchNorm and global pooling: the default for photos.",
        1,
        "residual_features",
    ),
    _scratch(
        "default_cnn",
        "configurable",
        "The configurable CNN with its default settings; the default for small images.",
        1,
        "custom_features",
    ),
    _scratch(
        "custom_cnn",
        "configurable",
        "A CNN of doubling convolution blocks, shaped by the model settings.",
        1,
        "custom_features",
    ),
    _transfer(
        "mobilenet_v2",
        "MobileNetV2 from keras.applications: small and fast, good on a CPU.",
        "MobileNetV2",
        "mobilenet_v2",
        weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
        fine_tune_from="block_13_expand",  # the 7x7 stage: blocks 13 to 16 and Conv_1
    ),
    _transfer(
        "efficientnet_b0",
        "EfficientNetB0 from keras.applications: accurate for its size.",
        "EfficientNetB0",
        "efficientnet",
        weights_file="efficientnetb0_notop.h5",
        fine_tune_from="block6a_expand_conv",  # stages 6 and 7 and top_conv
    ),
    _transfer(
        "resnet50_v2",
        "ResNet50V2 from keras.applications: a large, robust residual network.",
        "ResNet50V2",
        "resnet_v2",
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        fine_tune_from="conv5_block1_preact_bn",  # the whole conv5 stage
    ),
    _transfer(
        "vgg16",
        "VGG16 from keras.applications: a classic, heavy plain convolution stack.",
        "VGG16",
        "vgg16",
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        fine_tune_from="block5_conv1",  # the three block5 convolutions
    ),
)

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in SPECS}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)
TRANSFER_MODEL_NAMES: tuple[str, ...] = tuple(spec.name for spec in SPECS if spec.is_transfer)


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name`; a UserError naming the choices when there is none."""
    if name not in REGISTRY:
        raise UserError(f"There is no model '{name}'; choose one of {', '.join(MODEL_NAMES)}.")
    return REGISTRY[name]


def model_names() -> list[str]:
    return list(MODEL_NAMES)


def is_transfer(name: str) -> bool:
    """True when `name` is a keras.applications transfer-learning model."""
    return name in TRANSFER_MODEL_NAMES


def list_models() -> list[dict[str, Any]]:
    """One dict per model: name, family, description, and input sizes."""
    return [spec.describe() for spec in SPECS]
