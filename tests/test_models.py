"""Tests for the model registry, the scratch builders and the network check (transfer: test_transfer.py)."""

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
    # Transfer models with random weights train only as a whole (see test_transfer.py).
    config = ModelConfig(name=name, weights="none", mode="fine_tuning", fine_tune_layers=0)
    model = models.build_model(config, IMAGE_SIZE, NUM_CLASSES)
    assert model.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert model.output_shape == (None, NUM_CLASSES)
    output = model.get_layer("predictions")
    assert output.dtype_policy.compute_dtype == "float32"
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=models.LOSS_FROM_LOGITS),
        run_eagerly=models.is_transfer(name),  # tracing a whole application takes ~20 s on a CPU
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


@pytest.mark.parametrize(
    "image_size, stem_widths, stem_sides",
    [(128, [16, 32], [128, 64]), (64, [16], [64]), (32, [32], [32]), (24, [32], [24])],
)
def test_residual_cnn_stem_convolves_at_full_resolution_then_pools(
    image_size, stem_widths, stem_sides
):
    """The stem's convolutions see every pixel (stride 1) and max pooling halves the side down
    to 32 px, where the four residual stages start (32 px and smaller: no pooling)."""
    model = models.build_model(ModelConfig(name="residual_cnn"), image_size, NUM_CLASSES)
    stem = [layer for layer in layers_of(model, layers.Conv2D) if layer.name.startswith("stem")]
    assert [layer.filters for layer in stem] == stem_widths
    assert all(layer.strides == (1, 1) for layer in stem)
    assert [layer.input.shape[1] for layer in stem] == stem_sides
    pools = layers_of(model, layers.MaxPooling2D)
    assert len(pools) == (len(stem) if image_size > 32 else 0)
    assert model.get_layer("stage1_out").output.shape[1] == min(image_size, 32)
    assert model.get_layer("stage4_out").output.shape[1] == -(-min(image_size, 32) // 8)


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
