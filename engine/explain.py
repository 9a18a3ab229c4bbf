"""Grad-CAM (Selvaraju et al., 2017): where in an image a model found the evidence for a class.

`GradCam(model).heatmaps(images)` returns, per image, a map at the model's input size with values
in [0, 1] (1 where the evidence is strongest), as NumPy data; `overlay` blends one over its image
as uint8 RGB, and `write_explanations` stores both for `python -m engine predict --explain DIR`.
Figures are drawn in ui/, never here.

The feature map is found by looking at the model's top-level layers: the last one with a spatial
(4-D) output that is a convolution, a layer holding convolutions (a keras.applications base called
as a nested model, or a wrapper such as engine.transfer.InferenceBase that calls one), or a
normalisation, activation or merge right after it. Pooling and dropout are not taken, so a
MaxPooling after the last convolution does not halve the map's resolution.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import UserError

BATCH_SIZE = 32
OVERLAY_OPACITY = 0.45  # how much of the colour map covers the image


def _layer_types():
    from keras import layers

    convolutions = (
        layers.Conv2D,
        layers.DepthwiseConv2D,
        layers.SeparableConv2D,
        layers.Conv2DTranspose,
    )
    after_convolution = (
        layers.BatchNormalization,
        layers.LayerNormalization,
        layers.GroupNormalization,
        layers.ReLU,
        layers.Activation,
        layers.LeakyReLU,
        layers.ELU,
        layers.PReLU,
        layers.Add,
        layers.Concatenate,
        layers.Multiply,
        layers.Average,
        layers.Maximum,
    )
    return convolutions, after_convolution


def _holds_convolution(layer, convolutions, depth: int = 0) -> bool:
    """Whether a layer is a convolution or holds one (a nested model, or a wrapper's attribute)."""
    import keras

    if isinstance(layer, convolutions):
        return True
    if depth > 8:
        return False
    inner = list(getattr(layer, "layers", None) or [])
    inner += [value for value in vars(layer).values() if isinstance(value, keras.layers.Layer)]
    return any(
        _holds_convolution(sub, convolutions, depth + 1) for sub in inner if sub is not layer
    )


def _outer_output(layer):
    """The tensor a top-level layer gives in the model's own graph.

    A nested Functional model's `.output` is its inner graph's output; Operation's property gives
    the output of its call in the outer model, as for any other layer.
    """
    import keras

    return keras.Operation.output.fget(layer)


def feature_layer(model):
    """The top-level layer whose output is the model's last convolutional feature map."""
    import keras

    convolutions, after_convolution = _layer_types()
    spatial = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        output = _outer_output(layer)
        if not isinstance(output, (list, tuple)) and len(output.shape) == 4:
            spatial.append(layer)
    holding = [i for i, layer in enumerate(spatial) if _holds_convolution(layer, convolutions)]
    if not holding:
        raise UserError(
            "This model has no convolutional layer, so Grad-CAM cannot show where it looks; "
            "train a CNN (such as default_cnn or residual_cnn) to see heatmaps."
        )
    last = holding[-1]
    for index in range(len(spatial) - 1, last, -1):
        if isinstance(spatial[index], after_convolution):
            return spatial[index]
    return spatial[last]


def _softmax_head(model):
    """The final Dense layer when it ends in softmax: Grad-CAM then uses its pre-softmax scores."""
    from keras import layers

    head = model.layers[-1]
    activation = getattr(getattr(head, "activation", None), "__name__", "")
    return head if isinstance(head, layers.Dense) and activation == "softmax" else None


class GradCam:
    """Grad-CAM heatmaps of one Keras model; building it checks the model has a feature map."""

    def __init__(self, model):
        import keras

        if not isinstance(model, keras.Model):
            raise UserError("This model is not a Keras model, so Grad-CAM cannot explain it.")
        self.model = model
        self.layer = feature_layer(model)
        self.head = _softmax_head(model)
        score_input = self.head.input if self.head is not None else model.outputs[0]
        try:
            self._grad_model = keras.Model(model.input, [_outer_output(self.layer), score_input])
        except (ValueError, TypeError, AttributeError) as error:  # a graph Keras cannot cut
            raise UserError(
                f"Grad-CAM cannot follow this model's layers to {self.layer.name} "
                f"({type(error).__name__}); it explains models built by this studio."
            ) from None
        self.input_size = tuple(int(side) for side in model.inputs[0].shape[1:3])

    def heatmaps(self, images: np.ndarray, class_ids: np.ndarray | None = None) -> np.ndarray:
        """Heatmaps (N x height x width, float32 in [0, 1]) of images (N x H x W x 3, [0, 255])
        for class_ids, or for each image's predicted class."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:3] != self.input_size:
            raise UserError(
                f"Grad-CAM needs images of {self.input_size[0]}x{self.input_size[1]} pixels, "
                f"as the model takes, not {images.shape[1:3]}."
            )
        maps = []
        for start in range(0, len(images), BATCH_SIZE):
            chosen = None if class_ids is None else class_ids[start : start + BATCH_SIZE]
            maps.append(self._batch(images[start : start + BATCH_SIZE], chosen))
        if not maps:
            return np.zeros((0, *self.input_size), np.float32)
        return np.concatenate(maps)

    def _batch(self, images: np.ndarray, class_ids: np.ndarray | None) -> np.ndarray:
        import tensorflow as tf

        images = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            # Watching the input records every operation, also through a frozen base whose
            # weights are not trainable (the tape watches only trainable variables by itself).
            tape.watch(images)
            feature_maps, scores = self._grad_model(images, training=False)
            feature_maps = tf.cast(feature_maps, tf.float32)
            scores = tf.cast(scores, tf.float32)
            if self.head is not None:
                kernel = tf.cast(self.head.kernel, tf.float32)
                scores = tf.matmul(scores, kernel)
                if self.head.use_bias:
                    scores = scores + tf.cast(self.head.bias, tf.float32)
            else:  # a model whose scores are probabilities: their logarithm does not saturate
                scores = tf.math.log(tf.maximum(scores, 1e-12))
            if class_ids is None:
                class_ids = tf.argmax(scores, axis=1)
            chosen = tf.gather(scores, tf.cast(class_ids, tf.int32), axis=1, batch_dims=1)
        gradients = tape.gradient(chosen, feature_maps)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * feature_maps, axis=-1))
        resized = tf.image.resize(cams[..., None], self.input_size, method="bilinear")[..., 0]
        # Scaled after resizing, so each map's strongest pixel is exactly 1 (0 everywhere when
        # nothing speaks for the class).
        peak = tf.reduce_max(resized, axis=(1, 2), keepdims=True)
        return np.clip(tf.math.divide_no_nan(resized, peak).numpy(), 0.0, 1.0).astype(np.float32)


def colour_map(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] map as uint8 RGB on the "jet" scale: blue (0) through green to red (1)."""
    value = np.clip(np.asarray(heatmap, np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], np.float32)  # where red, green and blue peak
    rgb = np.clip(1.5 - np.abs(4.0 * (value - centres)), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = OVERLAY_OPACITY) -> np.ndarray:
    """The heatmap's colours blended over an RGB image of the same height and width (uint8)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[:2] != heatmap.shape:
        resized = Image.fromarray(np.asarray(heatmap, np.float32)).resize(
            (image.shape[1], image.shape[0]), Image.BILINEAR
        )
        heatmap = np.clip(np.asarray(resized), 0.0, 1.0)
    blended = (1 - opacity) * image[..., :3].astype(np.float32) + opacity * colour_map(heatmap)
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


def peak_position(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, column) of a heatmap's maximum."""
    row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(column)


def explain_folder(folder: str | os.PathLike) -> Path:
    """The folder explanations are written into, made when missing; a UserError when it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{folder} is a file, not a folder; give --explain a folder.") from None
    except OSError as error:
        raise UserError(
            f"The folder {folder} cannot be made ({error.strerror}); give --explain another folder."
        ) from None
    return folder


def write_explanations(grad_cam: GradCam, results: list[dict], folder: str | os.PathLike) -> None:
    """For each result with an "image" (Predictor.predict(with_images=True)): its heatmap as
    FOLDER/<stem>.cam.npy and its overlay as FOLDER/<stem>.cam.png, each written atomically, and
    their paths under result["explanation"]. Two files with the same stem get -2, -3...; files
    of earlier calls with the same names are replaced whole."""
    from engine.jsonio import atomic_write_bytes

    folder = explain_folder(folder)
    usable = [result for result in results if "image" in result and "top_k" in result]
    if not usable:
        return
    images = np.stack([result["image"] for result in usable])
    heatmaps = grad_cam.heatmaps(images)
    taken: set[str] = set()
    for result, image, heatmap in zip(usable, images, heatmaps, strict=True):
        stem = Path(result["file"]).stem or "image"
        name, number = stem, 1
        while name in taken:
            number += 1
            name = f"{stem}-{number}"
        taken.add(name)
        array, picture = io.BytesIO(), io.BytesIO()
        np.save(array, heatmap)
        Image.fromarray(overlay(image, heatmap)).save(picture, format="PNG")
        paths = {"heatmap": folder / f"{name}.cam.npy", "overlay": folder / f"{name}.cam.png"}
        try:
            atomic_write_bytes(paths["heatmap"], array.getvalue())
            atomic_write_bytes(paths["overlay"], picture.getvalue())
        except OSError as error:
            raise UserError(
                f"The explanation of {result['file']} cannot be written to {folder} "
                f"({error.strerror or error}); give --explain another folder."
            ) from None
        result["explanation"] = {key: str(path) for key, path in paths.items()}
