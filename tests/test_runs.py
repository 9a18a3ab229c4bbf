"""Training runs end to end through the CLI: status, history, models, evaluation, cancel, devices."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import engine_cli
from PIL import Image

from engine import processes, runs
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import read_json, write_json

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One short digits run through the CLI, shared by the assertions below."""
    runs_dir = tmp_path_factory.mktemp("cli-runs")
    cache = tmp_path_factory.mktemp("cli-cache")
    result = engine_cli(
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--image-size",
        "16",
        "--runs-dir",
        str(runs_dir),
        env={"STUDIO_CACHE_DIR": str(cache)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == runs_dir
    return run_dir


@pytest.mark.slow
def test_cli_run_files_agree(digits_run):
    status = runs.read_status(digits_run)
    epochs, steps = runs.read_history(digits_run)
    evaluation = read_json(digits_run / "evaluation.json")
    config = RunConfig.from_dict(read_json(digits_run / "config.json"))

    assert status["state"] == "completed"
    assert status["epochs_done"] == len(epochs) == config.train.epochs == 2
    assert [row["epoch"] for row in epochs] == [1, 2]
    for row in epochs:
        assert {
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate",
            "epoch_seconds",
            "images_per_second",
        } <= set(row)
        assert row["images_per_second"] > 0
    assert steps and all(row["step"] >= 1 for row in steps)
    assert status["best_epoch"] == 1 + int(np.argmin([row["val_loss"] for row in epochs]))
    assert (digits_run / "best.keras").is_file() and (digits_run / "last.keras").is_file()
    assert list((digits_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert read_json(digits_run / "load_report.json")["skipped"] == []
    assert status["device"] == "CPU"
    # The stored evaluation agrees with its own confusion matrix and with the stored predictions.
    matrix = np.array(evaluation["confusion_matrix"])
    assert evaluation["class_names"] == [str(i) for i in range(10)]
    assert evaluation["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    predictions = np.load(digits_run / "predictions.npz")
    assert evaluation["accuracy"] == pytest.approx(
        float(np.mean(predictions["probabilities"].argmax(1) == predictions["labels"]))
    )
    assert len(evaluation["per_class"]) == 10 and matrix.sum() == evaluation["count"]


@pytest.mark.slow
def test_cli_evaluate_and_predict(digits_run, tmp_path):
    evaluated = engine_cli("evaluate", str(digits_run))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    printed, saved = json.loads(evaluated.stdout), read_json(digits_run / "evaluation.json")
    assert printed["accuracy"] == pytest.approx(saved["accuracy"])
    low, high = printed["accuracy_interval"]
    assert low <= printed["accuracy"] <= high and low < high
    assert [low, high] == saved["accuracy_interval"]

    from sklearn.datasets import load_digits

    digit = load_digits().images[0] * (255 / 16)
    Image.fromarray(digit.astype(np.uint8)).resize((64, 64)).save(tmp_path / "zero.png")
    (tmp_path / "notes.png").write_text("not an image")
    predicted = engine_cli(
        "predict",
        str(digits_run),
        str(tmp_path / "zero.png"),
        str(tmp_path / "notes.png"),
        "--top-k",
        "3",
    )
    results = json.loads(predicted.stdout)
    assert predicted.returncode == 1  # one file failed
    assert len(results[0]["top_k"]) == 3
    assert sum(item["probability"] for item in results[0]["top_k"]) <= 1.0 + 1e-6
    assert "error" in results[1] and "notes.png" in results[1]["file"]


@pytest.mark.slow
def test_cancel_stops_the_run_and_keeps_the_best_model(tmp_path):
    config = RunConfig().replace(
        data={"image_size": 16},
        train={"epochs": 200, "batch_size": 16, "early_stopping_patience": 0},
    )
    run_dir = runs.launch_run(config, tmp_path / "runs")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "best.keras").exists():
        assert runs.read_status(run_dir)["state"] in runs.ACTIVE_STATES, (
            run_dir / "log.txt"
        ).read_text()[-2000:]
        time.sleep(0.3)
    assert (run_dir / "best.keras").exists()
    asked = time.monotonic()
    runs.request_cancel(run_dir)
    status = runs.wait_for(run_dir, timeout=30)
    assert status["state"] == "cancelled"
    assert time.monotonic() - asked < 10
    # The trainer process itself ends, not only its status.
    while processes.process_alive(status["pid"]) and time.monotonic() - asked < 20:
        time.sleep(0.1)
    assert not processes.process_alive(status["pid"])
    assert (run_dir / "best.keras").is_file()
    assert status["epochs_done"] < 200


def test_runs_created_in_one_second_never_share_a_folder(tmp_path, monkeypatch):
    """The run id's random suffix may repeat within a second; the second run draws another."""

    class OneSecond(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 1, 22, 25, 1, tzinfo=tz)

    monkeypatch.setattr(runs, "datetime", OneSecond)
    suffixes = iter(["a321", "a321", "a321", "b7c0"])
    monkeypatch.setattr(runs.secrets, "token_hex", lambda _bytes: next(suffixes))
    first = runs.create_run(RunConfig(), tmp_path)
    second = runs.create_run(RunConfig(), tmp_path)
    assert first.name.endswith("-a321") and second.name.endswith("-b7c0")
    assert runs.read_status(first)["run_id"] == first.name
    assert runs.read_status(second)["run_id"] == second.name
    monkeypatch.setattr(runs.secrets, "token_hex", lambda _bytes: "a321")
    monkeypatch.setattr(runs, "RUN_ID_TRIES", 3)
    with pytest.raises(UserError, match="No free run folder name"):
        runs.create_run(RunConfig(), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([first.name, second.name])


def test_a_dead_process_reads_as_failed(tmp_path):
    run_dir = runs.create_run(RunConfig(), tmp_path)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    runs.update_status(run_dir, state="running", pid=finished.pid)
    status = runs.read_status(run_dir)
    assert status["state"] == "failed" and "without reporting" in status["error"]


def test_runs_wait_their_turn(tmp_path):
    """A second run stays queued while another holds the training lock."""
    import fcntl

    run_dir = runs.create_run(RunConfig().replace(train={"epochs": 1}), tmp_path)
    with open(tmp_path / ".training.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "train", "--run-dir", str(run_dir)],
            cwd=PROJECT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while (
                runs.read_status(run_dir).get("pid") != process.pid and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            time.sleep(1.0)
            assert runs.read_status(run_dir)["state"] == "queued"
            runs.request_cancel(run_dir)
            process.wait(timeout=30)
        finally:
            process.kill()
    assert runs.read_status(run_dir)["state"] == "cancelled"


@pytest.mark.slow
def test_two_logical_cpu_devices_use_mirrored_strategy(tmp_path):
    config = RunConfig().replace(data={"image_size": 12}, train={"epochs": 1, "batch_size": 64})
    config_file = tmp_path / "config.json"
    write_json(config_file, config.to_dict())
    result = engine_cli(
        "train",
        "--config",
        str(config_file),
        "--runs-dir",
        str(tmp_path / "runs"),
        env={"STUDIO_CPU_DEVICES": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status = runs.read_status(Path(result.stdout.strip().splitlines()[-1]))
    assert status["strategy"] == "MirroredStrategy" and status["replicas"] == 2
    assert status["state"] == "completed"


def test_unknown_model_is_a_clear_cli_error(tmp_path):
    result = engine_cli("train", "--model", "nonexistent_net", "--runs-dir", str(tmp_path))
    assert result.returncode == 2
    assert "Unknown model 'nonexistent_net'" in result.stderr and "Traceback" not in result.stderr
