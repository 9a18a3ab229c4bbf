"""Tests for transfer learning: ImageNet weights and their cache, the frozen base, fine-tuning depth."""

from __future__ import annotations

import math
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras import layers
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from engine import models, network, transfer
from engine.config import ModelConfig
from engine.errors import UserError

IMAGE_SIZE = 32
NUM_CLASSES = 3
LABELS = np.array([0, 1, 2, 0])
# Tests compile with run_eagerly=True: one eager step of a keras.applications model takes about a
# second, tracing it as a graph twenty; the training flag reaches the layers the same way in both.


def images(count: int = 4, size: int = IMAGE_SIZE) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype("float32")


def weighted_names(base: keras.Model, trainable: bool = True) -> list[str]:
    return [layer.name for layer in base.layers if layer.weights and layer.trainable == trainable]


@pytest.fixture(autouse=True)
def keras_cache(monkeypatch, tmp_path) -> Path:
    """An empty Keras cache folder; Keras' downloader finds files there and never downloads."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(home))
    network.clear_cache()

    # Keras reads KERAS_HOME once, at import, and checks real files against their hashes;
    # this stands in for its get_file and looks in the folder the test set.
    def get_file(fname=None, origin=None, cache_subdir="datasets", **kwargs):
        path = home / cache_subdir / fname
        if not path.is_file():
            raise OSError(f"tests never download ({origin})")
        return str(path)

    monkeypatch.setattr(file_utils, "get_file", get_file)
    return home / "models"


@pytest.fixture
def pretend_pretrained(monkeypatch):
    """Build with random weights but follow the pretrained-weights rules (weights imagenet)."""
    monkeypatch.setattr(transfer, "resolve_weights", lambda config, input_size: None)


def save_imagenet_layout(base: keras.Model, path: Path) -> None:
    """Write weights the way Keras' ImageNet files hold them: the legacy h5 layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, base)


def test_names_are_still_importable_from_engine_models():
    for name in (
        "TransferArchitecture",
        "TRANSFER_ARCHITECTURES",
        "ApplicationPreprocess",
        "make_base",
        "resolve_weights",
        "cached_weights_path",
        "unfreeze_for_fine_tuning",
        "fine_tune_learning_rate",
        "build_transfer_model",
    ):
        assert getattr(models, name) is getattr(transfer, name), name
    assert models.is_transfer("vgg16") and not models.is_transfer("residual_cnn")


def test_cached_imagenet_weights_get_the_imagenet_input_scaling(keras_cache):
    """A cached file must be loaded as weights "imagenet": EfficientNet then adds the ImageNet scaling."""
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    save_imagenet_layout(reference, keras_cache / "efficientnetb0_notop.h5")
    config = ModelConfig(name="efficientnet_b0", weights="imagenet", mode="feature_extraction")
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    base = transfer.base_of(model)
    scales = [layer.scale for layer in base.layers if isinstance(layer, layers.Rescaling)]
    imagenet_scale = [1 / math.sqrt(stddev) for stddev in (0.229, 0.224, 0.225)]
    assert any(np.allclose(scale, imagenet_scale) for scale in scales if isinstance(scale, list))
    for expected, weight in zip(reference.weights, base.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(expected), weight.numpy())


def test_imagenet_weights_available_when_cached_or_online(keras_cache, monkeypatch):
    assert not transfer.imagenet_weights_available("mobilenet_v2", 24)
    keras_cache.mkdir(parents=True)
    (keras_cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5").touch()
    assert transfer.imagenet_weights_available("mobilenet_v2", 96)
    assert not transfer.imagenet_weights_available("mobilenet_v2", 24)  # Keras uses the 224 file
    monkeypatch.setattr(network, "is_online", lambda: True)
    assert transfer.imagenet_weights_available("vgg16", 64)


def test_imagenet_weights_offline_and_uncached_is_a_quick_user_error():
    started = time.monotonic()
    with pytest.raises(UserError, match="not cached and this machine is offline"):
        models.build_model(
            ModelConfig(name="mobilenet_v2", weights="imagenet"), IMAGE_SIZE, NUM_CLASSES
        )
    assert time.monotonic() - started < 10


def test_a_broken_cached_weights_file_is_a_user_error_naming_it(keras_cache):
    keras_cache.mkdir(parents=True)
    broken = keras_cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    broken.write_text("not weights")
    with pytest.raises(UserError, match="could not be loaded") as caught:
        models.build_model(
            ModelConfig(name="mobilenet_v2", weights="imagenet"), IMAGE_SIZE, NUM_CLASSES
        )
    assert str(broken) in str(caught.value)


def test_local_weights_files_that_are_missing_or_broken_are_user_errors(tmp_path):
    missing = tmp_path / "missing.weights.h5"
    with pytest.raises(UserError, match="does not exist") as caught:
        models.build_model(
            ModelConfig(name="mobilenet_v2", weights=str(missing)), IMAGE_SIZE, NUM_CLASSES
        )
    assert str(missing) in str(caught.value)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"junk")
    with pytest.raises(UserError, match="could not be loaded") as caught:
        models.build_model(
            ModelConfig(name="mobilenet_v2", weights=str(broken)), IMAGE_SIZE, NUM_CLASSES
        )
    assert str(broken) in str(caught.value)


def test_a_frozen_base_runs_in_inference_mode_during_training(pretend_pretrained):
    """EfficientNet's blocks hold Dropout and BatchNorm: neither may act while the base is frozen."""
    config = ModelConfig(name="efficientnet_b0", weights="imagenet", mode="two_phase")
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    base = transfer.base_of(model)
    assert any(isinstance(layer, layers.Dropout) for layer in base.layers)
    # The base's features, before the head's own Dropout, which must act in training.
    features = keras.Model(model.input, model.get_layer("global_average_pooling").output)
    batch = images()
    inference = features(batch, training=False).numpy()
    assert inference.any()
    np.testing.assert_array_equal(features(batch, training=True).numpy(), inference)
    np.testing.assert_array_equal(features(batch, training=True).numpy(), inference)

    # Fine-tuning keeps the base in inference mode, yet its unfrozen layers learn.
    models.unfreeze_for_fine_tuning(model, config)
    np.testing.assert_array_equal(features(batch, training=True).numpy(), inference)
    unfrozen = base.get_layer("top_conv")
    batch_norm = base.get_layer("top_bn")
    before = unfrozen.kernel.numpy().copy(), batch_norm.moving_mean.numpy().copy()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(batch, LABELS)
    assert not np.array_equal(unfrozen.kernel.numpy(), before[0])
    np.testing.assert_array_equal(batch_norm.moving_mean.numpy(), before[1])


def test_transfer_model_saves_and_loads_with_identical_predictions(pretend_pretrained, tmp_path):
    config = ModelConfig(name="mobilenet_v2", weights="imagenet", mode="feature_extraction")
    model = models.build_model(config, 24, NUM_CLASSES)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert isinstance(loaded.get_layer("preprocess"), transfer.ApplicationPreprocess)
    assert loaded.get_layer("preprocess").architecture == "mobilenet_v2"
    assert isinstance(loaded.get_layer("inference_base"), transfer.InferenceBase)
    assert not transfer.base_of(loaded).trainable
    assert models.count_parameters(loaded) == models.count_parameters(model)
    batch = images(size=24)
    np.testing.assert_array_equal(model(batch).numpy(), loaded(batch).numpy())
    np.testing.assert_array_equal(
        loaded(batch, training=True).numpy(), loaded(batch, training=False).numpy()
    )


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"mode": "feature_extraction"}, "mode feature_extraction"),
        ({"mode": "two_phase", "fine_tune_layers": 0}, "mode two_phase"),
        ({"mode": "fine_tuning", "fine_tune_layers": 20}, "fine_tune_layers 20"),
        ({"mode": "fine_tuning", "fine_tune_from": "block5_conv3"}, "fine_tune_from block5_conv3"),
    ],
)
def test_weights_none_refuses_to_train_a_head_on_random_features(settings, named):
    with pytest.raises(UserError, match="residual_cnn") as caught:
        models.build_model(ModelConfig(name="vgg16", weights="none", **settings), 32, 3)
    message = str(caught.value)
    assert "Weights none" in message and named in message
    assert "imagenet" in message and "fine_tuning" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_weights_none_fine_tuning_trains_everything_in_training_mode():
    config = ModelConfig(
        name="mobilenet_v2", weights="none", mode="fine_tuning", fine_tune_layers=0
    )
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    base = transfer.base_of(model)
    assert not any(isinstance(layer, transfer.InferenceBase) for layer in model.layers)
    assert all(layer.trainable for layer in base.layers)
    assert (
        models.count_parameters(model)["trainable"]
        == sum(int(np.prod(weight.shape)) for weight in base.trainable_weights)
        + 1280 * NUM_CLASSES
        + NUM_CLASSES
    )
    batch = images()
    assert not np.allclose(model(batch, training=True), model(batch, training=False))
    batch_norm = base.get_layer("Conv_1_bn")
    before = batch_norm.moving_mean.numpy().copy()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(batch, LABELS)
    assert not np.array_equal(batch_norm.moving_mean.numpy(), before)


def test_transfer_notes():
    def notes(**settings) -> str:
        return " ".join(transfer.transfer_notes(ModelConfig(**settings)))

    assert transfer.transfer_notes(ModelConfig(name="residual_cnn")) == []
    random_init = notes(name="vgg16", weights="none", mode="fine_tuning", fine_tune_layers=0)
    assert "weights none: the whole network trains from random initialisation" in random_init
    assert "BatchNorm included" in random_init

    single = notes(
        name="vgg16",
        mode="fine_tuning",
        fine_tune_layers=0,
        fine_tune_learning_rate_factor=0.1,
    )
    assert "learning_rate x 0.1" in single and "two_phase" in single
    assert "from the first step" in single
    assert "block5_conv1" in single
    two_phase = notes(name="resnet50_v2", mode="two_phase", fine_tune_layers=0)
    assert "conv5_block1_preact_bn" in two_phase and "first step" not in two_phase
    assert "top 7 layers" in notes(name="vgg16", mode="two_phase", fine_tune_layers=7)
    assert "inference mode" in notes(name="efficientnet_b0", mode="feature_extraction")
    assert all(
        note.endswith(".") for note in transfer.transfer_notes(ModelConfig(name="mobilenet_v2"))
    )


@pytest.mark.parametrize(
    "name, first",
    [
        ("vgg16", "block5_conv1"),
        ("resnet50_v2", "conv5_block1_preact_bn"),
        ("mobilenet_v2", "block_13_expand"),
        ("efficientnet_b0", "block6a_expand_conv"),
    ],
)
def test_default_fine_tuning_depth_is_the_architectures_last_block(name, first, pretend_pretrained):
    assert transfer.TRANSFER_ARCHITECTURES[name].fine_tune_from == first
    config = ModelConfig(name=name, weights="imagenet", mode="two_phase", fine_tune_layers=0)
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    base = transfer.base_of(model)
    assert weighted_names(base) == []
    models.unfreeze_for_fine_tuning(model, config)
    names = [layer.name for layer in base.layers]
    assert first in names
    expected = [
        layer.name
        for layer in base.layers[names.index(first) :]
        if layer.weights and not isinstance(layer, layers.BatchNormalization)
    ]
    assert expected and weighted_names(base) == expected
    if name == "vgg16":
        assert expected == ["block5_conv1", "block5_conv2", "block5_conv3"]


def test_fine_tune_from_wins_and_fine_tune_layers_counts_from_the_top(pretend_pretrained):
    config = ModelConfig(
        name="vgg16", weights="imagenet", mode="fine_tuning", fine_tune_from="block5_conv3"
    )
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    assert [layer.name for layer in transfer.base_of(model).layers if layer.trainable] == [
        "block5_conv3",
        "block5_pool",
    ]
    with pytest.raises(UserError, match="block5_conv2"):
        models.build_model(
            ModelConfig(name="vgg16", mode="fine_tuning", fine_tune_from="block9"),
            IMAGE_SIZE,
            NUM_CLASSES,
        )
    config = ModelConfig(name="vgg16", weights="imagenet", mode="two_phase", fine_tune_layers=4)
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    assert models.count_parameters(model)["trainable"] == 512 * NUM_CLASSES + NUM_CLASSES
    models.unfreeze_for_fine_tuning(model, config)
    assert weighted_names(transfer.base_of(model)) == [
        "block5_conv1",
        "block5_conv2",
        "block5_conv3",
    ]
    assert models.fine_tune_learning_rate(config, 1e-3) == pytest.approx(1e-4)


def test_pretrained_fine_tuning_keeps_batch_norm_frozen(pretend_pretrained):
    config = ModelConfig(
        name="mobilenet_v2", weights="imagenet", mode="fine_tuning", fine_tune_layers=20
    )
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    base_layers = transfer.base_of(model).layers
    for index, layer in enumerate(base_layers):
        expected = index >= len(base_layers) - 20 and not isinstance(
            layer, layers.BatchNormalization
        )
        assert layer.trainable == expected, layer.name
    batch_norm = [layer for layer in base_layers if isinstance(layer, layers.BatchNormalization)]
    before = [weight.numpy().copy() for weight in batch_norm[-1].weights]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(images(), LABELS)
    for old, weight in zip(before, batch_norm[-1].weights, strict=True):
        np.testing.assert_array_equal(old, weight.numpy())


def test_feature_extraction_freezes_the_base_and_resizes_small_images(pretend_pretrained):
    model = models.build_model(ModelConfig(name="mobilenet_v2"), 16, NUM_CLASSES)
    assert model.get_layer("resize_to_minimum").height == 32
    assert not transfer.base_of(model).trainable
    assert transfer.base_of(model).trainable_weights == []
    assert {weight.path.split("/")[0] for weight in model.trainable_weights} == {"predictions"}
    assert models.count_parameters(model)["trainable"] == 1280 * NUM_CLASSES + NUM_CLASSES


def test_application_preprocess_matches_keras():
    batch = images(2)
    module = {"vgg16": keras.applications.vgg16, "resnet50_v2": keras.applications.resnet_v2}
    for name in ("vgg16", "resnet50_v2"):
        layer = transfer.ApplicationPreprocess(name)
        expected = module[name].preprocess_input(batch.copy())
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(batch)), expected, atol=1e-4)
    assert (
        transfer.ApplicationPreprocess.from_config(layer.get_config()).architecture == "resnet50_v2"
    )
    assert keras.saving.get_registered_name(transfer.ApplicationPreprocess) == (
        "studio>ApplicationPreprocess"
    )
