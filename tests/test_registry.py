"""Tests for the model registry (one spec per model) and the option lists the engine exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from engine import config, models, optim, registry, scratch_models
from engine.config import ModelConfig, RunConfig
from engine.errors import UserError
from engine.transfer import check_transfer_config

PROJECT = Path(__file__).resolve().parent.parent
SCRATCH = [spec for spec in registry.SPECS if not spec.is_transfer]
TRANSFER = [spec for spec in registry.SPECS if spec.is_transfer]


def test_one_spec_per_model_and_the_names_follow_it():
    names = [spec.name for spec in registry.SPECS]
    assert len(names) == len(set(names)) == 10
    assert registry.MODEL_NAMES == tuple(names) == tuple(models.model_names())
    assert config.MODEL_NAMES is registry.MODEL_NAMES
    assert registry.TRANSFER_MODEL_NAMES == (
        "mobilenet_v2",
        "efficientnet_b0",
        "resnet50_v2",
        "vgg16",
    )
    assert [entry["name"] for entry in models.list_models()] == names
    assert {spec.family for spec in registry.SPECS} == set(config.MODEL_FAMILIES)
    for spec in registry.SPECS:
        assert spec.description.endswith("."), spec.name
        assert models.is_transfer(spec.name) is (spec.family == "transfer")


def test_list_models_gives_each_specs_fields():
    entries = {entry["name"]: entry for entry in models.list_models()}
    assert entries["catsdogs_cnn"] == {
        "name": "catsdogs_cnn",
        "family": "reference",
        "description": registry.get_spec("catsdogs_cnn").description,
        "min_input_size": 22,
    }
    assert entries["vgg16"]["default_input_size"] == 224
    assert entries["vgg16"]["min_input_size"] == 32


@pytest.mark.parametrize("spec", SCRATCH, ids=lambda spec: spec.name)
def test_a_scratch_spec_names_its_builder_and_nothing_of_transfer(spec):
    assert spec.features is getattr(scratch_models, spec.builder)
    assert spec.application == spec.preprocess_module == spec.weights_file == ""
    assert spec.default_input_size is None


@pytest.mark.parametrize("spec", TRANSFER, ids=lambda spec: spec.name)
def test_a_transfer_spec_resolves_its_keras_application(spec):
    assert spec.constructor is getattr(keras.applications, spec.application)
    module = getattr(keras.applications, spec.preprocess_module)
    assert spec.preprocess_input is module.preprocess_input
    assert spec.builder == ""
    assert spec.fine_tune_from and spec.weights_file.endswith(".h5")
    assert (spec.min_input_size, spec.default_input_size) == (32, 224)
    assert models.TRANSFER_ARCHITECTURES[spec.name] is spec


def test_cached_file_names_follow_the_sizes_keras_has_weights_for():
    mobilenet = registry.get_spec("mobilenet_v2")
    assert mobilenet.cached_file_name(96).endswith("_1.0_96_no_top.h5")
    assert mobilenet.cached_file_name(100).endswith("_1.0_224_no_top.h5")
    assert registry.get_spec("vgg16").cached_file_name(64) == (
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )


def test_an_unknown_model_is_one_sentence_naming_the_choices():
    with pytest.raises(UserError) as error:
        registry.get_spec("resnet")
    assert str(error.value) == (
        f"There is no model 'resnet'; choose one of {', '.join(registry.MODEL_NAMES)}."
    )


@pytest.mark.parametrize(
    "spec", [spec for spec in SCRATCH if spec.min_input_size > 1], ids=lambda spec: spec.name
)
def test_a_scratch_models_minimum_size_builds_and_one_less_is_refused(spec):
    side = spec.min_input_size
    model = models.build_model(ModelConfig(name=spec.name), side, 3)
    assert model.output_shape == (None, 3)
    with pytest.raises(UserError, match=f"at least {side}x{side} pixels, not {side - 1}x"):
        models.build_model(ModelConfig(name=spec.name), side - 1, 3)


def test_the_registry_and_the_option_lists_import_no_tensorflow():
    code = (
        "import json, sys\n"
        "import engine.config, engine.registry, engine.imagenet_weights\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == []


def test_pooling_and_transfer_mode_checks_accept_exactly_the_exported_lists():
    for pooling in config.POOLINGS:
        scratch_models.check_custom_config(ModelConfig(name="custom_cnn", pooling=pooling))
    with pytest.raises(UserError) as error:
        scratch_models.check_custom_config(ModelConfig(name="custom_cnn", pooling="max"))
    assert str(error.value) == "The pooling 'max' is unknown; use global_average or flatten."
    for mode in config.TRANSFER_MODES:
        check_transfer_config(ModelConfig(name="vgg16", mode=mode))
    with pytest.raises(UserError) as error:
        check_transfer_config(ModelConfig(name="vgg16", mode="linear_probe"))
    assert str(error.value) == (
        "The transfer mode 'linear_probe' is unknown; use one of "
        "feature_extraction, fine_tuning, two_phase."
    )


@pytest.mark.parametrize(
    ("section", "key", "choices", "unknown"),
    [
        ("train", "optimizer", config.OPTIMIZERS, "adagrad"),
        ("train", "schedule", config.SCHEDULES, "step"),
        ("data", "resize", config.RESIZE_MODES, "pad"),
        ("model", "pooling", config.POOLINGS, "max"),
        ("model", "mode", config.TRANSFER_MODES, "linear_probe"),
    ],
)
def test_config_validation_accepts_exactly_the_exported_lists(section, key, choices, unknown):
    for choice in choices:
        assert RunConfig().replace(**{section: {key: choice}}).validate()
    with pytest.raises(UserError, match=f"{section}.{key}='{unknown}' is not allowed"):
        RunConfig().replace(**{section: {key: unknown}}).validate()


def test_the_optimizer_module_knows_the_same_optimizers_and_schedules():
    assert tuple(optim.OPTIMIZERS) == config.OPTIMIZERS
    assert tuple(optim.SCHEDULES) == config.SCHEDULES
