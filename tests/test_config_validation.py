"""Config values and config files are checked before a run folder is made: each wrong one is a
sentence naming the value and its range, and a refused command leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import engine_cli
from PIL import Image

from engine.config import RunConfig
from engine.data import load_dataset
from engine.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


run_engine = engine_cli


def assert_one_sentence(message: str, *parts: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith("."), message
    for part in parts:
        assert part in message, (part, message)


@pytest.mark.parametrize(
    ("section", "values", "parts"),
    [
        ("train", {"epochs": -1}, ("train.epochs=-1", "0 (fit the time budget)")),
        ("train", {"batch_size": 0}, ("train.batch_size=0", "from 1")),
        ("train", {"learning_rate": 0.0}, ("train.learning_rate=0.0", "above 0")),
        ("train", {"learning_rate": -0.1}, ("train.learning_rate=-0.1", "above 0")),
        ("train", {"learning_rate": float("nan")}, ("train.learning_rate=nan", "finite")),
        ("train", {"learning_rate": float("inf")}, ("train.learning_rate=inf", "finite")),
        ("train", {"seed": -1}, ("train.seed=-1", "from 0 to 4294967295")),
        ("train", {"seed": 2**40}, ("train.seed=", "from 0 to 4294967295")),
        ("train", {"optimizer": "adamx"}, ("train.optimizer='adamx'", "adamw, adam")),
        ("train", {"schedule": "steps"}, ("train.schedule='steps'", "warmup_cosine")),
        ("train", {"label_smoothing": 1.0}, ("train.label_smoothing=1.0", "below 1")),
        ("data", {"image_size": 4}, ("data.image_size=4", "from 8 to 1024")),
        ("data", {"image_size": 5000}, ("data.image_size=5000", "from 8 to 1024")),
        ("data", {"image_size": -32}, ("data.image_size=-32",)),
        ("data", {"resize": "stretch"}, ("data.resize='stretch'", "squash or crop")),
        ("data", {"validation_fraction": 1.0}, ("data.validation_fraction=1.0", "below 1")),
        ("data", {"test_fraction": -0.1}, ("data.test_fraction=-0.1", "at least 0")),
        ("data", {"split_seed": -5}, ("data.split_seed=-5",)),
        ("augment", {"zoom": 1.5}, ("augment.zoom=1.5", "between 0 and 1")),
        ("augment", {"resized_crop": 1.0}, ("augment.resized_crop=1.0", "below 1")),
        ("augment", {"mixup": -0.2}, ("augment.mixup=-0.2", "0 (off) or more")),
        ("model", {"dropout": 1.0}, ("model.dropout=1.0", "below 1")),
        ("model", {"pooling": "max"}, ("model.pooling='max'", "global_average or flatten")),
        ("model", {"mode": "frozen"}, ("model.mode='frozen'", "two_phase")),
        ("model", {"name": "resnet9000"}, ("Unknown model 'resnet9000'", "default_cnn")),
    ],
)
def test_a_value_out_of_range_is_refused_with_its_name_and_range(section, values, parts):
    with pytest.raises(UserError) as refused:
        RunConfig().replace(**{section: values}).validate()
    assert_one_sentence(str(refused.value), *parts)


def test_fractions_that_leave_no_training_images_are_refused():
    config = RunConfig().replace(data={"validation_fraction": 0.5, "test_fraction": 0.5})
    with pytest.raises(UserError) as refused:
        config.validate()
    assert_one_sentence(str(refused.value), "leave no images to train on", "below 1")


def test_the_edges_of_each_range_are_accepted():
    config = RunConfig().replace(
        data={"image_size": 8, "validation_fraction": 0.0, "test_fraction": 0.0, "split_seed": 0},
        train={"epochs": 0, "batch_size": 1, "seed": 2**32 - 1, "learning_rate": 1e-9},
        augment={"zoom": 1.0, "mixup": 0.0},
    )
    assert config.validate() is config
    assert RunConfig().replace(data={"image_size": 1024}).validate().data.image_size == 1024
    assert RunConfig().replace(data={"image_size": 0}).validate().data.image_size == 0
    assert RunConfig().validate() == RunConfig()


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("[1, 2]", ("must be a JSON object", "not a list")),
        ("5", ("must be a JSON object", "not a number")),
        ("null", ("must be a JSON object", "not null")),
        ('"train"', ("must be a JSON object", "not a string")),
        ("1e400", ("must be a JSON object", "not a number")),
        ('{"train": {"learning_rate": 1e400}}', ("train.learning_rate=inf", "finite")),
        ('{"train": {"learning_rate": NaN}}', ("train.learning_rate=nan", "finite")),
        ('{"train": {"learning_rate": -Infinity}}', ("train.learning_rate=-inf", "finite")),
        ('{"train": {"epochs": 1e400}}', ("train.epochs=inf", "not a valid int")),
        ('{"train": {"epochs": 2.5}}', ("train.epochs=2.5", "not a valid int")),
        ('{"train": {"epochs": true}}', ("train.epochs=True", "not a valid int")),
        ('{"train": {"ema": "maybe"}}', ("train.ema='maybe'", "not a valid bool")),
        ('{"data": {"spec": ["a"]}}', ("data.spec=['a']", "not a valid str")),
        ('{"train": [1]}', ("section 'train' must be a JSON object",)),
        ('{"training": {}}', ("unknown sections ['training']",)),
        ('{"train": {"epochs": 3', ("is not valid JSON",)),
        ("[" * 100_000, ("nested too deeply",)),
    ],
)
def test_a_config_file_that_is_not_a_run_config_is_refused(tmp_path, text, parts):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(UserError) as refused:
        RunConfig.load_partial(path)
    assert_one_sentence(str(refused.value), *parts)
    with pytest.raises(UserError):
        RunConfig.load(path)


def test_a_config_file_that_is_not_text_or_not_a_file_is_refused(tmp_path):
    binary = tmp_path / "config.json"
    binary.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(UserError) as refused:
        RunConfig.load_partial(binary)
    assert_one_sentence(str(refused.value), str(binary), "not UTF-8 text")
    with pytest.raises(UserError) as refused:
        RunConfig.load_partial(tmp_path)
    assert_one_sentence(str(refused.value), str(tmp_path), "cannot be read")
    with pytest.raises(UserError) as refused:
        RunConfig.load_partial(tmp_path / "missing.json")
    assert_one_sentence(str(refused.value), "does not exist")


def test_a_partial_config_file_keeps_only_what_it_sets(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"train": {"epochs": 4.0, "ema": "off"}, "data": {"image_size": "16"}}')
    assert RunConfig.load_partial(path) == {
        "train": {"epochs": 4, "ema": False},
        "data": {"image_size": 16},
    }


@pytest.mark.parametrize(
    ("flags", "parts"),
    [
        (["--epochs", "-1"], ("train.epochs=-1",)),
        (["--batch-size", "0"], ("train.batch_size=0",)),
        (["--image-size", "5000"], ("data.image_size=5000",)),
        (["--learning-rate", "nan"], ("train.learning_rate=nan", "finite")),
        (["--learning-rate", "0"], ("train.learning_rate=0.0", "above 0")),
        (["--seed", "-1"], ("train.seed=-1",)),
        (["--config", "{list}"], ("not a list",)),
        (["--config", "{number}"], ("not a number",)),
        (["--config", "{null}"], ("not null",)),
        (["--config", "{huge}"], ("train.learning_rate=inf", "finite")),
        (["--config", "{resize}"], ("data.resize='stretch'",)),
    ],
)
def test_a_refused_train_command_says_why_and_leaves_no_run_folder(tmp_path, flags, parts):
    files = {
        "list": "[]",
        "number": "3",
        "null": "null",
        "huge": '{"train": {"learning_rate": 1e400}}',
        "resize": '{"data": {"resize": "stretch"}}',
    }
    for name, text in files.items():
        (tmp_path / f"{name}.json").write_text(text)
    flags = [flag.format(**{name: tmp_path / f"{name}.json" for name in files}) for flag in flags]
    runs_dir = tmp_path / "runs"
    done = run_engine("train", "--dataset", "digits", "--runs-dir", str(runs_dir), *flags)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert_one_sentence(last.removeprefix("error: "), *parts)
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not runs_dir.exists() or list(runs_dir.iterdir()) == []


def write_folder_with_a_large_image(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(6):
            pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    Image.new("1", (400, 300)).save(root / "cat" / "large.png")  # 120,000 pixels, 1.6 KB
    return root


def test_info_reports_images_over_the_pixel_cap_as_training_skips_them(tmp_path):
    root = write_folder_with_a_large_image(tmp_path / "photos")
    done = run_engine("info", str(root), "--max-pixels", "100000")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    reason = "too large: 400x300 pixels is over the cap of 100,000"
    assert summary["skipped"] == [{"file": "cat/large.png", "reason": reason}]
    assert summary["images"] == 12
    assert sum(sum(split.values()) for split in summary["counts"].values()) == 12
    # Training decodes with the same cap and leaves out the same file for the same reason.
    dataset = load_dataset(
        RunConfig().replace(data={"spec": str(root), "max_pixels": 100_000}).data
    )
    dataset.prepare()
    assert dataset.skipped() == summary["skipped"]
    assert sum(len(dataset.indices(split)) for split in ("train", "validation", "test")) == 12
    uncapped = json.loads(run_engine("info", str(root)).stdout)
    assert uncapped["skipped"] == [] and uncapped["images"] == 13


def test_info_refuses_an_image_size_out_of_range(tmp_path):
    done = run_engine("info", "digits", "--image-size", "4")
    assert done.returncode == 2
    assert_one_sentence(done.stderr.strip().removeprefix("error: "), "data.image_size=4")
