"""Tests for the model registry, the builders, fine-tuning, saving and the offline weights check."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
from keras import layers

from engine import models, network
from engine.config import ModelConfig
from engine.errors import UserError

IMAGE_SIZE = 32
NUM_CLASSES = 3


def images(count: int = 4, size: int = IMAGE_SIZE) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype("float32")


def layers_of(model: keras.Model, kind: type) -> list[layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def base_trainable_names(model: keras.Model) -> list[str]:
    return [
        layer.name for layer in model.get_layer("base").layers if layer.trainable and layer.weights
    ]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Never touch the network or the real Keras cache."""
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


def test_list_models_describes_every_family():
    entries = {entry["name"]: entry for entry in models.list_models()}
    assert set(entries) == set(models.model_names())
    assert {entry["family"] for entry in entries.values()} == {
        "reference",
        "configurable",
        "transfer",
    }
    for name in ("mobilenet_v2", "efficientnet_b0", "resnet50_v2", "vgg16"):
        assert entries[name]["family"] == "transfer" and models.is_transfer(name)
        assert entries[name]["default_input_size"] == 224
        assert entries[name]["min_input_size"] == 32
    assert not models.is_transfer("default_cnn")
    assert all(entry["description"].endswith(".") for entry in entries.values())


@pytest.mark.parametrize("name", models.model_names())
def test_every_model_builds_and_trains_one_step(name):
    model = models.build_model(ModelConfig(name=name, weights="none"), IMAGE_SIZE, NUM_CLASSES)
    assert model.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert model.output_shape == (None, NUM_CLASSES)
    output = model.get_layer("predictions")
    assert output.dtype_policy.compute_dtype == "float32"
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=models.LOSS_FROM_LOGITS),
    )
    loss = model.train_on_batch(images(), np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)
    probabilities = model.predict(images(), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()


def test_scratch_models_begin_with_rescaling():
    for name in ("eurosat_cnn", "catsdogs_cnn", "tutorial_cnn", "default_cnn", "custom_cnn"):
        model = models.build_model(ModelConfig(name=name), IMAGE_SIZE, NUM_CLASSES)
        rescaling = model.layers[1]
        assert isinstance(rescaling, layers.Rescaling)
        assert rescaling.scale == pytest.approx(1 / 255)


@pytest.mark.parametrize(
    "name, filters, dense_units, dropout_rates, batch_norms",
    [
        ("eurosat_cnn", [32, 64], [128, 64, NUM_CLASSES], [0.3, 0.3], 2),
        ("catsdogs_cnn", [32, 64, 128], [256, NUM_CLASSES], [0.5], 3),
        ("tutorial_cnn", [16, 32, 64], [128, NUM_CLASSES], [0.2], 0),
    ],
)
def test_reference_architectures(name, filters, dense_units, dropout_rates, batch_norms):
    model = models.build_model(ModelConfig(name=name), IMAGE_SIZE, NUM_CLASSES)
    convolutions = layers_of(model, layers.Conv2D)
    assert [layer.filters for layer in convolutions] == filters
    assert all(layer.kernel_size == (3, 3) for layer in convolutions)
    assert [layer.units for layer in layers_of(model, layers.Dense)] == dense_units
    assert [layer.rate for layer in layers_of(model, layers.Dropout)] == dropout_rates
    assert len(layers_of(model, layers.BatchNormalization)) == batch_norms
    assert len(layers_of(model, layers.MaxPooling2D)) == len(filters)
    assert len(layers_of(model, layers.Flatten)) == 1


def test_custom_cnn_honours_its_settings():
    config = ModelConfig(
        name="custom_cnn", blocks=2, filters=8, kernel_size=5, pooling="flatten", dense_units=0
    )
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    convolutions = layers_of(model, layers.Conv2D)
    assert [layer.filters for layer in convolutions] == [8, 8, 16, 16]
    assert all(layer.kernel_size == (5, 5) and not layer.use_bias for layer in convolutions)
    assert len(layers_of(model, layers.BatchNormalization)) == 4
    assert len(layers_of(model, layers.Flatten)) == 1
    assert not layers_of(model, layers.GlobalAveragePooling2D)
    assert [layer.units for layer in layers_of(model, layers.Dense)] == [NUM_CLASSES]

    plain = models.build_model(
        ModelConfig(name="custom_cnn", blocks=3, batch_norm=False), 8, NUM_CLASSES
    )
    assert not layers_of(plain, layers.BatchNormalization)
    assert all(layer.use_bias for layer in layers_of(plain, layers.Conv2D))
    assert len(layers_of(plain, layers.MaxPooling2D)) == 2  # 8 -> 4 -> 2, then no further
    assert len(layers_of(plain, layers.GlobalAveragePooling2D)) == 1
    assert [layer.units for layer in layers_of(plain, layers.Dense)] == [128, NUM_CLASSES]


def test_default_cnn_is_custom_cnn_with_the_defaults():
    default = models.build_model(ModelConfig(), IMAGE_SIZE, NUM_CLASSES)
    custom = models.build_model(ModelConfig(name="custom_cnn"), IMAGE_SIZE, NUM_CLASSES)
    assert default.name == "default_cnn"
    assert [type(layer) for layer in default.layers] == [type(layer) for layer in custom.layers]
    assert models.count_parameters(default) == models.count_parameters(custom)
    assert [layer.filters for layer in layers_of(default, layers.Conv2D)] == [
        32,
        32,
        64,
        64,
        128,
        128,
    ]


def test_bad_names_and_class_counts_are_user_errors():
    with pytest.raises(UserError, match="default_cnn"):
        models.build_model(ModelConfig(name="resnet"), IMAGE_SIZE, NUM_CLASSES)
    with pytest.raises(UserError, match="at least 2 classes"):
        models.build_model(ModelConfig(), IMAGE_SIZE, 1)
    with pytest.raises(UserError, match="pooling"):
        models.build_model(ModelConfig(pooling="max"), IMAGE_SIZE, NUM_CLASSES)
    with pytest.raises(UserError, match="22x22"):
        models.build_model(ModelConfig(name="catsdogs_cnn"), 16, NUM_CLASSES)


def test_feature_extraction_freezes_the_base_and_resizes_small_images():
    model = models.build_model(ModelConfig(name="mobilenet_v2", weights="none"), 16, NUM_CLASSES)
    assert model.get_layer("resize_to_minimum").height == 32
    assert not model.get_layer("base").trainable
    assert model.get_layer("base").trainable_weights == []
    assert {weight.path.split("/")[0] for weight in model.trainable_weights} == {"predictions"}
    assert models.count_parameters(model)["trainable"] == 1280 * NUM_CLASSES + NUM_CLASSES


def test_fine_tuning_unfreezes_the_top_layers_but_not_batch_norm():
    config = ModelConfig(
        name="mobilenet_v2", weights="none", mode="fine_tuning", fine_tune_layers=20
    )
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    base_layers = model.get_layer("base").layers
    for index, layer in enumerate(base_layers):
        expected = index >= len(base_layers) - 20 and not isinstance(
            layer, layers.BatchNormalization
        )
        assert layer.trainable == expected, layer.name
    assert any(layer.trainable for layer in base_layers)
    assert not any(
        layer.trainable for layer in base_layers if isinstance(layer, layers.BatchNormalization)
    )

    batch_norm = [layer for layer in base_layers if isinstance(layer, layers.BatchNormalization)][
        -1
    ]
    before = [weight.numpy().copy() for weight in batch_norm.weights]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(images(), np.array([0, 1, 2, 0]))
    for old, weight in zip(before, batch_norm.weights, strict=True):
        np.testing.assert_array_equal(old, weight.numpy())


def test_fine_tune_from_a_named_layer():
    config = ModelConfig(
        name="vgg16", weights="none", mode="fine_tuning", fine_tune_from="block5_conv3"
    )
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    assert [layer.name for layer in model.get_layer("base").layers if layer.trainable] == [
        "block5_conv3",
        "block5_pool",
    ]
    with pytest.raises(UserError, match="block5_conv2"):
        models.build_model(
            ModelConfig(name="vgg16", weights="none", mode="fine_tuning", fine_tune_from="block9"),
            IMAGE_SIZE,
            NUM_CLASSES,
        )


def test_two_phase_starts_frozen_and_unfreezes_like_fine_tuning():
    config = ModelConfig(name="vgg16", weights="none", mode="two_phase", fine_tune_layers=4)
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    assert model.get_layer("base").trainable_weights == []
    assert models.count_parameters(model)["trainable"] == 512 * NUM_CLASSES + NUM_CLASSES
    models.unfreeze_for_fine_tuning(model, config)
    assert base_trainable_names(model) == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert [layer.name for layer in model.get_layer("base").layers if layer.trainable] == [
        "block5_conv1",
        "block5_conv2",
        "block5_conv3",
        "block5_pool",
    ]
    assert models.fine_tune_learning_rate(config, 1e-3) == pytest.approx(1e-4)


def test_transfer_model_saves_and_loads_with_identical_predictions(tmp_path):
    model = models.build_model(ModelConfig(name="mobilenet_v2", weights="none"), 24, NUM_CLASSES)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("preprocess"), models.ApplicationPreprocess)
    assert loaded.get_layer("preprocess").architecture == "mobilenet_v2"
    batch = images(size=24)
    np.testing.assert_array_equal(model.predict(batch, verbose=0), loaded.predict(batch, verbose=0))


def test_application_preprocess_matches_keras():
    batch = images(2)
    for name in ("vgg16", "resnet50_v2"):
        layer = models.ApplicationPreprocess(name)
        module = {"vgg16": keras.applications.vgg16, "resnet50_v2": keras.applications.resnet_v2}
        expected = module[name].preprocess_input(batch.copy())
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(batch)), expected, atol=1e-4)
    assert (
        models.ApplicationPreprocess.from_config(layer.get_config()).architecture == "resnet50_v2"
    )


def test_imagenet_weights_offline_and_uncached_is_a_quick_user_error():
    started = time.monotonic()
    with pytest.raises(UserError, match="not cached and this machine is offline"):
        models.build_model(
            ModelConfig(name="mobilenet_v2", weights="imagenet"), IMAGE_SIZE, NUM_CLASSES
        )
    assert time.monotonic() - started < 10


def test_cached_imagenet_weights_are_used_without_the_network(tmp_path):
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    broken = cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    broken.write_text("not weights")
    with pytest.raises(UserError, match="could not be loaded") as caught:
        models.build_model(ModelConfig(name="vgg16", weights="imagenet"), IMAGE_SIZE, NUM_CLASSES)
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


def test_is_online_honours_the_offline_variable_and_caches(monkeypatch):
    calls = []

    def fake_probe(host, port, timeout):
        calls.append((host, port))
        return True

    monkeypatch.setattr(network, "probe", fake_probe)
    network.clear_cache()
    assert network.is_online() is False
    assert calls == []
    monkeypatch.setenv("STUDIO_OFFLINE", "0")
    assert network.is_online() is True
    assert network.is_online() is True
    assert calls == [("storage.googleapis.com", 443)]
    network.clear_cache()


def test_probe_gives_up_within_its_timeout():
    started = time.monotonic()
    assert network.probe("127.0.0.1", 1, 1.0) is False
    assert time.monotonic() - started < 2
