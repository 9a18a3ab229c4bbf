"""Tests for the augmentation layers, their dataset mapping and the preview."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from engine import augment
from engine.config import AugmentConfig
from engine.errors import UserError

EVERYTHING = AugmentConfig(
    horizontal_flip=True,
    vertical_flip=True,
    rotation=0.1,
    zoom=0.1,
    translation=0.1,
    brightness=0.2,
    contrast=0.2,
    random_crop=0.2,
)


def asymmetric_image(height: int = 16, width: int = 16) -> np.ndarray:
    """An image that differs from its own mirror images."""
    rows, columns = np.mgrid[0:height, 0:width]
    image = np.stack([columns * 15, rows * 15, (rows * columns) % 256], axis=-1)
    return image.astype(np.uint8)


def test_disabled_config_builds_nothing_and_previews_copies():
    assert augment.build_augmentation(AugmentConfig(), 16) is None
    image = asymmetric_image()
    copies = augment.preview(image, AugmentConfig(), 3)
    assert copies.shape == (3, 16, 16, 3) and copies.dtype == np.uint8
    assert all(np.array_equal(copy, image) for copy in copies)


def test_build_augmentation_chooses_the_configured_layers():
    augmentation = augment.build_augmentation(EVERYTHING, 20, seed=1)
    kinds = [type(layer) for layer in augmentation.layers]
    assert kinds[:-1] == [
        layers.RandomFlip,
        layers.RandomRotation,
        layers.RandomZoom,
        layers.RandomTranslation,
        layers.RandomCrop,
        layers.Resizing,
        layers.RandomBrightness,
        layers.RandomContrast,
    ]
    assert augmentation.layers[0].mode == "horizontal_and_vertical"
    assert augmentation.layers[1].fill_mode == "reflect"
    crop = augmentation.layers[4]
    assert (crop.height, crop.width) == (16, 16)  # round(20 * 0.8)
    seeds = [
        layer.seed for layer in augmentation.layers if getattr(layer, "seed", None) is not None
    ]
    assert len(seeds) == len(set(seeds)) == 7
    only_vertical = augment.build_augmentation(AugmentConfig(vertical_flip=True), 20)
    assert only_vertical.layers[0].mode == "vertical"


def test_augmented_batches_keep_shape_and_pixel_range():
    augmentation = augment.build_augmentation(EVERYTHING, 16, seed=0)
    batch = np.stack([asymmetric_image()] * 4).astype(np.float32)
    output = augmentation(batch, training=True).numpy()
    assert output.shape == (4, 16, 16, 3) and output.dtype == np.float32
    assert output.min() >= 0 and output.max() <= 255


def test_preview_shape_dtype_and_seed_determinism():
    image = asymmetric_image()
    first = augment.preview(image, EVERYTHING, 5, seed=3)
    again = augment.preview(image, EVERYTHING, 5, seed=3)
    other = augment.preview(image, EVERYTHING, 5, seed=4)
    assert first.shape == (5, 16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not all(np.array_equal(first[0], version) for version in first[1:])


def test_flip_only_preview_gives_the_image_or_its_mirror():
    image = asymmetric_image()
    versions = augment.preview(image, AugmentConfig(horizontal_flip=True), 12, seed=0)
    mirrored = [np.array_equal(version, image[:, ::-1]) for version in versions]
    unchanged = [np.array_equal(version, image) for version in versions]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert any(mirrored) and any(unchanged)


def test_preview_accepts_non_square_images_and_refuses_bad_shapes():
    versions = augment.preview(asymmetric_image(12, 20), AugmentConfig(random_crop=0.25), 2)
    assert versions.shape == (2, 12, 20, 3)
    with pytest.raises(ValueError, match="H x W x 3"):
        augment.preview(np.zeros((8, 8), np.uint8), EVERYTHING, 2)


def test_out_of_range_settings_are_user_errors():
    with pytest.raises(UserError, match="random_crop"):
        augment.build_augmentation(AugmentConfig(random_crop=1.0), 16)
    with pytest.raises(UserError, match="rotation"):
        augment.build_augmentation(AugmentConfig(rotation=-0.1), 16)


def test_apply_to_dataset_keeps_shapes_and_labels_and_varies_per_epoch():
    images = np.stack([asymmetric_image()] * 6)
    labels = np.arange(6)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    augmentation = augment.build_augmentation(EVERYTHING, 16, seed=0)
    augmented = augment.apply_to_dataset(dataset, augmentation)
    first_epoch = list(augmented.as_numpy_iterator())
    second_epoch = list(augmented.as_numpy_iterator())
    assert [batch.shape for batch, _ in first_epoch] == [(3, 16, 16, 3), (3, 16, 16, 3)]
    assert all(batch.dtype == np.float32 for batch, _ in first_epoch)
    np.testing.assert_array_equal(
        np.concatenate([batch_labels for _, batch_labels in first_epoch]), labels
    )
    assert not np.array_equal(first_epoch[0][0], second_epoch[0][0])
    assert augment.apply_to_dataset(dataset, None) is dataset


def test_resized_crop_keeps_size_varies_by_image_and_repeats_with_its_seed():
    image = asymmetric_image(24, 36)
    config = AugmentConfig(resized_crop=0.7)
    first = augment.preview(image, config, 4, seed=3)
    again = augment.preview(image, config, 4, seed=3)
    other = augment.preview(image, config, 4, seed=4)
    assert first.shape == (4, 24, 36, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len({version.tobytes() for version in first}) == 4
    # A crop resized back never invents values outside the image's range.
    assert first.min() >= image.min() and first.max() <= image.max()


def test_resized_crop_passes_images_through_outside_training():
    layer = augment.RandomResizedCrop(0.3, seed=0)
    batch = tf.constant(np.stack([asymmetric_image()] * 2), tf.float32)
    assert layer(batch, training=True).shape == batch.shape
    assert not np.allclose(layer(batch, training=True).numpy(), batch.numpy())
    assert np.array_equal(layer(batch, training=False).numpy(), batch.numpy())


def test_resized_crop_is_refused_outside_its_range():
    with pytest.raises(UserError, match="resized_crop"):
        augment.build_augmentation(AugmentConfig(resized_crop=1.0), 16)


def test_mixup_blends_images_and_labels_by_the_same_weight():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 8, 8, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(6)
    mixed_images, mixed_labels = next(iter(augment.apply_to_dataset(data, None, mixup=0.4, seed=1)))
    mixed_images, mixed_labels = mixed_images.numpy(), mixed_labels.numpy()
    assert np.allclose(mixed_labels.sum(axis=1), 1.0)
    rolled = np.roll(np.arange(6), 1)
    for index in range(6):
        weight = mixed_labels[index, labels[index].argmax()]
        if labels[index].argmax() == labels[rolled[index]].argmax():
            continue
        assert 0.5 <= weight <= 1.0  # each image keeps the larger share
        expected = weight * images[index] + (1 - weight) * images[rolled[index]]
        assert np.allclose(mixed_images[index], expected, atol=1e-3)
    again = next(iter(augment.apply_to_dataset(data, None, mixup=0.4, seed=1)))[1].numpy()
    assert np.array_equal(mixed_labels, again)


def test_mixup_is_refused_below_zero():
    data = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 4, 3)), np.eye(2))).batch(2)
    with pytest.raises(UserError, match="mixup"):
        augment.apply_to_dataset(data, None, mixup=-0.1)
