"""The trainer and the worker: model selection only on validation, reproducible runs, two phases,
epochs fitted to a time budget, and the command line's progress."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from engine import runs
from engine.budget import MAX_BUDGET_EPOCHS, MIN_BUDGET_EPOCHS, fit_epochs_to_budget
from engine.config import RunConfig
from engine.data import load_dataset
from engine.jsonio import read_json, read_jsonl
from engine.training import train_run

ROOT = Path(__file__).resolve().parent.parent
TINY = {"data": {"image_size": 12}, "train": {"batch_size": 64}}


def tiny(**sections) -> RunConfig:
    config = RunConfig().replace(**TINY)
    return config.replace(**sections) if sections else config


def epoch_rows(run_dir: Path) -> list[dict]:
    keep = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
    return [
        {key: row[key] for key in keep if key in row}
        for row in read_jsonl(run_dir / "history.jsonl")
        if "step" not in row
    ]


def test_without_a_validation_split_nothing_chooses_the_model(tmp_path):
    """Old code fell back to the test split for early stopping and best.keras, then reported
    accuracy on that same split."""
    config = tiny(
        data={"validation_fraction": 0.0},
        train={"epochs": 3, "early_stopping_patience": 1, "schedule": "plateau"},
    )
    run_dir = runs.create_run(config, tmp_path)
    status = train_run(run_dir)
    assert status["state"] == "completed", status
    assert status["model_selection"] is False
    assert status["validation_split"] is None
    assert status["best_epoch"] == 0
    assert status["epochs_done"] == 3  # no early stopping on the test split
    assert not (run_dir / "best.keras").exists()
    evaluation = read_json(run_dir / "evaluation.json")
    assert evaluation["model_file"] == "last.keras"
    assert evaluation["split"] == "test"
    assert all("val_loss" not in row for row in epoch_rows(run_dir))


def test_same_config_and_seed_give_the_same_run_with_augmentation(tmp_path):
    """Old code mapped the random layers over batches in parallel, so two runs differed."""
    config = tiny(
        augment={"horizontal_flip": True, "zoom": 0.2, "translation": 0.1, "contrast": 0.2},
        train={"epochs": 1},
    )
    histories = []
    for _ in range(2):
        run_dir = runs.create_run(config, tmp_path)
        assert train_run(run_dir)["state"] == "completed"
        histories.append(epoch_rows(run_dir))
    assert len(histories[0]) == 1
    assert histories[0] == histories[1]
    different_seed = runs.create_run(config.replace(train={"seed": 7}), tmp_path)
    assert train_run(different_seed)["state"] == "completed"
    assert epoch_rows(different_seed) != histories[0]


def test_the_model_is_validated_kept_and_evaluated_with_averaged_weights(tmp_path):
    """best.keras holds the weights whose val_loss history.jsonl reports (the EMA ones)."""
    from engine.predict import load_model

    config = tiny(train={"epochs": 2, "ema": True})
    run_dir = runs.create_run(config, tmp_path)
    status = train_run(run_dir)
    assert status["state"] == "completed"
    dataset = load_dataset(config.data)
    dataset.prepare()
    model = load_model(run_dir / "best.keras")
    model.compile(
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing)
    )
    val_loss = model.evaluate(dataset.pipeline("validation", 64, one_hot=True), verbose=0)
    best = epoch_rows(run_dir)[status["best_epoch"] - 1]
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-4)


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.model.stop_training = True


@pytest.fixture
def local_mobilenet_weights(tmp_path) -> str:
    """MobileNetV2 base weights saved locally (random, in the layout of Keras' no-top files)."""
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet_v2_notop.weights.h5"
    base.save_weights(path)
    return str(path)


def two_phase_config(weights: str) -> RunConfig:
    return tiny(
        data={"image_size": 32},
        model={"name": "mobilenet_v2", "weights": weights, "mode": "two_phase", "head_epochs": 2},
        train={"epochs": 4, "batch_size": 128, "early_stopping_patience": 5},
    )


def test_two_phase_fine_tunes_even_when_the_head_phase_stops_early(local_mobilenet_weights):
    """Old code skipped the fine-tuning phase whenever the head phase stopped early."""
    from engine.trainer import Trainer

    config = two_phase_config(local_mobilenet_weights)
    dataset = load_dataset(config.data)
    dataset.prepare()
    trainer = Trainer(config, dataset)
    result = trainer.fit([StopAfterFirstEpoch()])
    assert [phase["phase"] for phase in result.phases] == ["head", "fine-tuning"]
    assert result.phases[1]["first_epoch"] == 3
    assert result.epochs_done == 4


def test_two_phase_head_schedule_spans_the_head_epochs(local_mobilenet_weights):
    """Old code stretched the head phase's schedule over all epochs."""
    from engine.trainer import Trainer

    config = two_phase_config(local_mobilenet_weights).replace(train={"schedule": "cosine"})
    dataset = load_dataset(config.data)
    dataset.prepare()
    trainer = Trainer(config, dataset)
    model = trainer.build_model()
    schedule = model.optimizer._learning_rate  # the schedule object Keras was given
    assert schedule.decay_steps == trainer.steps_per_epoch * 2


def test_epochs_fit_the_time_budget(tmp_path):
    from engine.devices import choose_strategy

    config = tiny(train={"epochs": 0, "time_budget_minutes": 0.05})
    dataset = load_dataset(config.data)
    dataset.prepare()
    strategy, _ = choose_strategy()
    epochs, estimate = fit_epochs_to_budget(config, dataset, strategy)
    assert MIN_BUDGET_EPOCHS <= epochs <= MAX_BUDGET_EPOCHS
    assert estimate["images_per_second"] > 0
    # epoch_seconds is reported to 2 decimals; the epochs come from the unrounded value
    seconds = estimate["epoch_seconds"]
    fewest, most = (int(3.0 // max(seconds + delta, 1e-9)) for delta in (0.005, -0.005))

    def clamp(count: int) -> int:
        return max(MIN_BUDGET_EPOCHS, min(MAX_BUDGET_EPOCHS, count))

    assert clamp(fewest) <= epochs <= clamp(most)


def test_a_budgeted_run_writes_its_resolved_epochs_into_config_json(tmp_path):
    config = tiny(train={"epochs": 0, "time_budget_minutes": 0.02})
    run_dir = runs.create_run(config, tmp_path)
    status = train_run(run_dir)
    assert status["state"] == "completed", status
    written = RunConfig.load(run_dir / "config.json")
    assert written.train.epochs >= MIN_BUDGET_EPOCHS
    assert written.train.epochs == status["epochs_done"]
    assert status["budget_estimate"]["epochs"] == written.train.epochs


def test_class_weights_are_scikit_learns_balanced_weights():
    from sklearn.utils.class_weight import compute_class_weight

    from engine.trainer import _class_weights

    dataset = load_dataset(tiny().data)
    labels = dataset.labels[dataset.indices("train")]
    expected = compute_class_weight("balanced", classes=np.unique(labels), y=labels)
    weights = _class_weights(dataset)
    assert [weights[i] for i in range(dataset.num_classes)] == pytest.approx(list(expected))


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quiet TensorFlow by itself
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_train_prints_progress_on_stderr_and_the_run_folder_last(tmp_path):
    done = run_cli(
        "train",
        "--dataset",
        "digits",
        "--image-size",
        "12",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--runs-dir",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert Path(last).parent == tmp_path and (Path(last) / "config.json").is_file()
    lines = done.stderr.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "images/s", "ETA"):
        assert key in epoch_lines[0]
    assert any(line.startswith("decoding images 1797/1797") for line in lines)
    assert any(line.startswith("recipe: grey images") for line in lines)
    noise = [line for line in lines if "oneDNN" in line or "cuda" in line.lower() or "absl" in line]
    assert noise == []
    verbose = run_cli(
        "lr-find", "--dataset", "digits", "--image-size", "8", "--steps", "12", "--verbose"
    )
    assert verbose.returncode == 0, verbose.stderr
    result = json.loads(verbose.stdout.strip().splitlines()[-1])
    assert 1e-6 < result["suggested_learning_rate"] < 1.0
    assert len(result["learning_rates"]) == len(result["losses"])
    assert all(math.isfinite(loss) for loss in result["losses"])
    assert "oneDNN" in verbose.stderr  # --verbose shows what TensorFlow says at start-up
