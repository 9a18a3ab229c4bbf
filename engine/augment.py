"""AugmentConfig -> Keras preprocessing layers for the training split; preview() uses the same layers."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from engine.config import AugmentConfig
from engine.errors import UserError

PIXEL_RANGE = (0.0, 255.0)


@keras.saving.register_keras_serializable(package="studio")
class ClipPixels(layers.Layer):
    """Clip values to the pixel range [0, 255], so augmented images stay valid images."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.clip(inputs, *PIXEL_RANGE)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@keras.saving.register_keras_serializable(package="studio")
class RandomResizedCrop(layers.Layer):
    """A random crop of min_area to all of the image's area, aspect ratio 3:4 to 4:3, resized
    back to the input's size: one bilinear resample per image, cheaper than zoom plus shift."""

    def __init__(self, min_area: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_area = float(min_area)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool = True) -> Any:
        if not training:
            return inputs
        images = tf.convert_to_tensor(inputs)
        batch = tf.shape(images)[0]
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        area = keras.random.uniform((batch,), self.min_area, 1.0, seed=self.seed_generator)
        log_ratio = keras.random.uniform(
            (batch,), np.log(3 / 4), np.log(4 / 3), seed=self.seed_generator
        )
        ratio = tf.exp(log_ratio)
        aspect = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
        # Box sides as fractions of the image's height and width; ratio is width over height.
        box_height = tf.minimum(tf.sqrt(area / ratio * aspect), 1.0)
        box_width = tf.minimum(tf.sqrt(area * ratio / aspect), 1.0)
        top = keras.random.uniform((batch,), seed=self.seed_generator) * (1.0 - box_height)
        left = keras.random.uniform((batch,), seed=self.seed_generator) * (1.0 - box_width)
        boxes = tf.stack([top, left, top + box_height, left + box_width], axis=1)
        return tf.image.crop_and_resize(
            tf.cast(images, tf.float32),
            boxes,
            tf.range(batch),
            tf.stack([height, width]),
            method="bilinear",
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "min_area": self.min_area, "seed": self.seed}


def build_augmentation(
    config: AugmentConfig, image_size: int, seed: int | None = None
) -> keras.Sequential | None:
    """Random layers for float32 batches (batch, image_size, image_size, 3) in [0, 255]; None when off.

    Call the result with training=True. Each layer gets its own seed derived from `seed`, so the
    same seed gives the same augmentations.
    """
    if not config.enabled:
        return None
    return keras.Sequential(
        augmentation_layers(config, image_size, image_size, seed), name="augmentation"
    )


def augmentation_layers(
    config: AugmentConfig, height: int, width: int, seed: int | None
) -> list[layers.Layer]:
    """The layers of build_augmentation for images of any height and width."""
    check_config(config)
    seeds = iter(range(seed, seed + 100)) if seed is not None else None

    def next_seed() -> int | None:
        return None if seeds is None else next(seeds)

    # float32 whatever the global policy: the pipeline feeds pixel values, not activations.
    common: dict[str, Any] = {"dtype": "float32"}
    geometric: dict[str, Any] = {"fill_mode": "reflect", **common}
    chosen: list[layers.Layer] = []
    if config.horizontal_flip or config.vertical_flip:
        if config.horizontal_flip and config.vertical_flip:
            mode = "horizontal_and_vertical"
        else:
            mode = "horizontal" if config.horizontal_flip else "vertical"
        chosen.append(layers.RandomFlip(mode, seed=next_seed(), **common))
    if config.resized_crop:
        chosen.append(RandomResizedCrop(1.0 - config.resized_crop, seed=next_seed(), **common))
    if config.rotation:
        chosen.append(layers.RandomRotation(config.rotation, seed=next_seed(), **geometric))
    if config.zoom:
        chosen.append(layers.RandomZoom(config.zoom, seed=next_seed(), **geometric))
    if config.translation:
        chosen.append(
            layers.RandomTranslation(
                config.translation, config.translation, seed=next_seed(), **geometric
            )
        )
    if config.random_crop:
        crop_height = max(1, round(height * (1 - config.random_crop)))
        crop_width = max(1, round(width * (1 - config.random_crop)))
        chosen.append(layers.RandomCrop(crop_height, crop_width, seed=next_seed(), **common))
        chosen.append(layers.Resizing(height, width, **common))
    if config.brightness:
        chosen.append(
            layers.RandomBrightness(
                config.brightness, value_range=PIXEL_RANGE, seed=next_seed(), **common
            )
        )
    if config.contrast:
        chosen.append(
            layers.RandomContrast(
                config.contrast, value_range=PIXEL_RANGE, seed=next_seed(), **common
            )
        )
    chosen.append(ClipPixels(**common))
    return chosen


def check_config(config: AugmentConfig) -> None:
    """Refuse values the Keras layers would reject, with a sentence that names the setting."""
    for name in ("rotation", "zoom", "translation", "brightness", "contrast"):
        value = getattr(config, name)
        if not 0 <= value <= 1:
            raise UserError(f"The augmentation {name} must be between 0 and 1, not {value}.")
    if not 0 <= config.resized_crop < 1:
        raise UserError(
            "The augmentation resized_crop (the largest share of the area a random crop cuts "
            f"away) must be at least 0 and below 1, not {config.resized_crop}."
        )
    if not 0 <= config.random_crop < 1:
        raise UserError(
            f"The augmentation random_crop must be at least 0 and below 1, not {config.random_crop}."
        )


def apply_to_dataset(
    dataset: tf.data.Dataset,
    augmentation: keras.Sequential | None,
    mixup: float = 0.0,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Map batched (images, one-hot labels) to augmented ones; None and mixup 0 pass through.

    mixup > 0 blends each image and its label with the next one in the batch, by a weight drawn
    from Beta(mixup, mixup) per image (Zhang et al., 2018).

    The map runs one batch at a time: the random layers keep their state in a seed generator, and
    parallel calls would advance it in a different order on every run, so the same seed would not
    give the same augmentations. prefetch overlaps a batch's augmentation with the training step.
    """
    if augmentation is None and not mixup:
        return dataset
    if mixup < 0:
        raise UserError(f"The mixup strength must be 0 (off) or more, not {mixup}.")
    seed_generator = keras.random.SeedGenerator(None if seed is None else seed + 1000)

    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        if augmentation is not None:
            images = augmentation(images, training=True)
        if mixup:
            labels = tf.cast(labels, tf.float32)
            batch = tf.shape(images)[0]
            weight = keras.random.beta((batch,), mixup, mixup, seed=seed_generator)
            weight = tf.maximum(weight, 1.0 - weight)  # the image keeps the larger share
            images = weight[:, None, None, None] * images + (1.0 - weight[:, None, None, None]) * (
                tf.roll(images, 1, axis=0)
            )
            labels = weight[:, None] * labels + (1.0 - weight[:, None]) * tf.roll(labels, 1, 0)
        return images, labels

    return dataset.map(augment, num_parallel_calls=None).prefetch(tf.data.AUTOTUNE)


def preview(image: np.ndarray, config: AugmentConfig, n: int, seed: int = 0) -> np.ndarray:
    """n augmented versions (n, H, W, 3) uint8 of one H x W x 3 uint8 image, by the training layers."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"preview needs one H x W x 3 image, not an array of shape {image.shape}.")
    if n < 1:
        raise ValueError(f"preview needs n of at least 1, not {n}.")
    copies = np.repeat(image[None], n, axis=0)
    if not config.enabled:
        return copies.astype(np.uint8)
    height, width = image.shape[:2]
    augmentation = keras.Sequential(
        augmentation_layers(config, height, width, seed), name="augmentation"
    )
    augmented = augmentation(tf.constant(copies, dtype=tf.float32), training=True)
    return np.clip(np.round(keras.ops.convert_to_numpy(augmented)), *PIXEL_RANGE).astype(np.uint8)
