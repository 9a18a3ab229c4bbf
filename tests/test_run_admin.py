"""Managing runs: names, notes, delete, continuing a run (also after a kill), cancel at any moment,
and an ETA that waits for one epoch's speed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import engine_cli

from engine import continuation, processes, run_admin, runs
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import append_jsonl, read_json, write_json

PROJECT = Path(__file__).resolve().parent.parent
SMALL = {"data": {"image_size": 16}, "train": {"epochs": 2, "batch_size": 64}}


def mark_running_here(run_dir: Path) -> None:
    """Make a run read as training: its status names this (live) test process."""
    pid = os.getpid()
    runs.update_status(
        run_dir, state="running", pid=pid, pid_start_time=processes.process_start_time(pid)
    )


def mark_killed(run_dir: Path) -> None:
    """A run whose status says running but whose process is gone (a kill -9, a power loss)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    runs.update_status(run_dir, state="running", pid=ended.pid, pid_start_time=1)


def epoch_numbers(run_dir: Path) -> list[int]:
    return [row["epoch"] for row in runs.read_history(run_dir)[0]]


# ----- names and notes ------------------------------------------------------------------------
def test_new_runs_get_short_unique_default_names(tmp_path):
    config = RunConfig()
    first, second = runs.create_run(config, tmp_path), runs.create_run(config, tmp_path)
    prefix = f"{config.model.name}-digits"
    assert runs.read_status(first)["name"] == f"{prefix}-1"
    assert runs.read_status(second)["name"] == f"{prefix}-2"
    run_admin.set_name(first, f"{prefix}-7")
    assert run_admin.default_name(tmp_path, config) == f"{prefix}-8"
    rows = {row["run_id"]: row for row in runs.list_runs(tmp_path)}
    assert rows[second.name]["name"] == f"{prefix}-2" and rows[second.name]["notes"] == ""


def test_set_name_strips_and_refuses_duplicates_and_bad_text(tmp_path):
    first, second = runs.create_run(RunConfig(), tmp_path), runs.create_run(RunConfig(), tmp_path)
    assert run_admin.set_name(first, "  baseline  ") == "baseline"
    assert runs.read_status(first)["name"] == "baseline"
    assert run_admin.set_name(first, "baseline") == "baseline"  # its own name is no duplicate
    with pytest.raises(UserError, match="already named 'Baseline'"):
        run_admin.set_name(second, "Baseline")
    for bad, why in (("   ", "cannot be empty"), ("x" * 61, "at most 60"), ("a\nb", "one line")):
        with pytest.raises(UserError, match=why):
            run_admin.set_name(second, bad)
    assert runs.read_status(second)["name"] == "default_cnn-digits-2"
    assert run_admin.display_name(runs.read_status(first)) == "baseline"
    assert run_admin.display_name({"run_id": "20250101-x"}) == "20250101-x"
    assert run_admin.display_name({"run_id": "r", "name": None, "status": {"name": "s"}}) == "s"


def test_notes_are_stored_apart_from_the_recipe_notes(tmp_path):
    run_dir = runs.create_run(RunConfig(), tmp_path)
    runs.update_status(run_dir, notes=["the recipe chose default_cnn"])
    assert run_admin.set_notes(run_dir, "  lr too high?\nretry with 1e-3 ") == (
        "lr too high?\nretry with 1e-3"
    )
    status = runs.read_status(run_dir)
    assert status["notes_text"] == "lr too high?\nretry with 1e-3"
    assert status["notes"] == ["the recipe chose default_cnn"]
    assert runs.list_runs(tmp_path)[0]["notes"] == "lr too high?\nretry with 1e-3"
    with pytest.raises(UserError, match="at most 2,000 characters, not 2,001"):
        run_admin.set_notes(run_dir, "n" * 2001)
    assert runs.read_status(run_dir)["notes_text"] == "lr too high?\nretry with 1e-3"


# ----- delete ---------------------------------------------------------------------------------
def test_delete_refuses_an_active_run_and_a_folder_that_is_no_run(tmp_path):
    run_dir = runs.create_run(RunConfig(), tmp_path / "runs")
    mark_running_here(run_dir)
    with pytest.raises(UserError, match="is running; cancel it"):
        run_admin.delete_run(run_dir)
    assert (run_dir / "config.json").is_file()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="is not a run folder"):
        run_admin.delete_run(other)
    with pytest.raises(UserError, match="is not a run folder"):
        run_admin.delete_run(tmp_path / "missing")
    assert (other / "cat.jpg").read_bytes() == b"x"


def test_delete_removes_a_finished_run_whole(tmp_path):
    keep, doomed = runs.create_run(RunConfig(), tmp_path), runs.create_run(RunConfig(), tmp_path)
    runs.update_status(doomed, state="completed")
    (doomed / "best.keras").write_bytes(b"model")
    run_admin.delete_run(doomed)
    assert not doomed.exists()
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_dir()) == [keep.name]
    assert [row["run_id"] for row in runs.list_runs(tmp_path)] == [keep.name]


# ----- continuing: the checks that need no training --------------------------------------------
def test_resume_refuses_active_runs_runs_without_checkpoint_and_bad_epochs(tmp_path):
    run_dir = runs.create_run(RunConfig(), tmp_path)
    runs.update_status(run_dir, state="cancelled", epochs_done=0)
    with pytest.raises(UserError, match="no saved model to continue from"):
        run_admin.prepare_resume(run_dir, 2)
    (run_dir / "last.keras").write_bytes(b"model")
    write_json(run_dir / "last.json", {"epoch": 3})
    with pytest.raises(UserError, match="at least 1, not 0"):
        run_admin.prepare_resume(run_dir, 0)
    mark_running_here(run_dir)
    with pytest.raises(UserError, match="is running; wait for it to end"):
        run_admin.prepare_resume(run_dir, 2)
    assert not (run_dir / continuation.RESUME_FILE).exists()


def test_resume_starts_from_the_later_checkpoint_and_cuts_history_back(tmp_path):
    run_dir = runs.create_run(RunConfig(), tmp_path)
    for name, epoch in (("last", 2), ("best", 3)):
        (run_dir / f"{name}.keras").write_bytes(b"model")
        write_json(run_dir / f"{name}.json", {"epoch": epoch})
    assert continuation.latest_checkpoint(run_dir) == ("best.keras", 3)
    write_json(run_dir / "last.json", {"epoch": 4})
    assert continuation.latest_checkpoint(run_dir) == ("last.keras", 4)
    (run_dir / runs.CANCEL_FILE).write_text("x")
    mark_killed(run_dir)
    assert runs.read_status(run_dir)["state"] == "failed"  # "ended without reporting"
    request = run_admin.prepare_resume(run_dir, 3)
    assert request | {"requested_at": None} == {
        "checkpoint": "last.keras",
        "from_epoch": 4,
        "epochs": 3,
        "total_epochs": 7,
        "requested_at": None,
    }
    status = runs.read_status(run_dir)
    assert (status["state"], status["epochs"], status["resumed_from_epoch"]) == ("queued", 7, 4)
    assert "pid" not in status and not (run_dir / runs.CANCEL_FILE).exists()
    assert continuation.pending_resume(run_dir) == request
    with pytest.raises(UserError, match="is queued"):  # a second click queues nothing more
        run_admin.prepare_resume(run_dir, 3)

    for epoch in (1, 2, 3):
        append_jsonl(run_dir / "history.jsonl", {"epoch": epoch, "step": 5, "loss": 1.0})
        append_jsonl(run_dir / "history.jsonl", {"epoch": epoch, "loss": 1.0 / epoch})
    kept = continuation.truncate_history(run_dir, 2)
    assert [row["epoch"] for row in kept] == [1, 2]
    epochs, steps = runs.read_history(run_dir)
    assert [row["epoch"] for row in epochs] == [1, 2] and [row["epoch"] for row in steps] == [1, 2]


def test_eta_and_speed_wait_for_a_measurement(tmp_path):
    from engine import callbacks as cb

    run_dir = runs.create_run(RunConfig(), tmp_path)
    clock = cb.Clock(train_images=640, steps_per_epoch=10, epochs=3)
    writer = cb.StatusWriter(run_dir, clock)
    clock.on_epoch_begin(0)
    writer.write()
    status = runs.read_status(run_dir)
    assert status["eta_seconds"] is None and status["images_per_second"] is None
    for batch in range(4):
        time.sleep(0.01)
        clock.on_train_batch_end(batch)
    writer.write()
    status = runs.read_status(run_dir)
    assert status["eta_seconds"] is None  # epoch 1: no figure yet
    assert status["images_per_second"] > 0
    for batch in range(4, 10):
        clock.on_train_batch_end(batch)
    clock.on_epoch_end(0)
    writer.on_epoch_end(0)
    status = runs.read_status(run_dir)
    assert status["eta_seconds"] > 0 and status["images_per_second"] > 0


# ----- the command line without training ------------------------------------------------------
def test_cli_rename_note_and_delete(tmp_path):
    first, second = runs.create_run(RunConfig(), tmp_path), runs.create_run(RunConfig(), tmp_path)
    renamed = engine_cli("rename", str(first), "baseline")
    assert renamed.returncode == 0, renamed.stderr
    assert runs.read_status(first)["name"] == "baseline"
    duplicate = engine_cli("rename", str(second), "baseline")
    assert duplicate.returncode == 2 and "already named 'baseline'" in duplicate.stderr
    assert "Traceback" not in duplicate.stderr
    noted = engine_cli("note", str(first), "first try")
    assert noted.returncode == 0 and runs.read_status(first)["notes_text"] == "first try"
    mark_running_here(second)
    refused = engine_cli("delete", str(second))
    assert refused.returncode == 2 and "cancel it and wait" in refused.stderr
    assert second.is_dir()
    runs.update_status(first, state="completed")
    deleted = engine_cli("delete", str(first))
    assert deleted.returncode == 0, deleted.stderr
    assert not first.exists()


# ----- continuing and cancelling real runs ----------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A 2-epoch digits run, trained once for the continuation tests (each works on a copy)."""
    config = RunConfig().replace(**SMALL)
    config_file = tmp_path_factory.mktemp("config") / "config.json"
    write_json(config_file, config.to_dict())
    runs_dir = tmp_path_factory.mktemp("trained")
    result = engine_cli("train", "--config", str(config_file), "--runs-dir", str(runs_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def copy_run(run_dir: Path, runs_dir: Path) -> Path:
    return Path(shutil.copytree(run_dir, runs_dir / run_dir.name))


@pytest.mark.slow
def test_cli_resume_appends_epochs_and_evaluates_again(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    assert epoch_numbers(run_dir) == [1, 2]
    (run_dir / "evaluation.json").unlink()
    result = engine_cli("resume", str(run_dir), "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip().splitlines()[-1]) == run_dir
    assert "epoch 4/4" in result.stderr  # per-epoch progress on stderr
    assert epoch_numbers(run_dir) == [1, 2, 3, 4]
    status = runs.read_status(run_dir)
    assert status["state"] == "completed" and status["epochs_done"] == 4
    assert (status["epochs"], status["resumed_from_epoch"]) == (4, 2)
    assert status["optimizer_state_restored"] is True
    assert 1 <= status["best_epoch"] <= 4
    assert [phase["phase"] for phase in status["phases"]] == ["train", "continued"]
    evaluation = read_json(run_dir / "evaluation.json")
    assert status["accuracy"] == pytest.approx(evaluation["accuracy"]) and evaluation["count"] > 0
    assert read_json(run_dir / "last.json") == {"epoch": 4}
    assert not (run_dir / continuation.RESUME_FILE).exists()
    # The continuation starts at a tenth of the configured rate and decays from there.
    rates = [row["learning_rate"] for row in runs.read_history(run_dir)[0]]
    assert rates[2] <= 0.002 * 0.1 + 1e-9 and rates[3] < rates[2]
    assert runs.read_history(run_dir)[0][2]["time"] > runs.read_history(run_dir)[0][1]["time"]


@pytest.mark.slow
def test_a_killed_run_continues_from_its_checkpoint_without_duplicate_epochs(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    # Epoch 3 was written to history, but the process died before last.keras held it.
    append_jsonl(run_dir / "history.jsonl", {"epoch": 3, "step": 4, "loss": 123.0})
    append_jsonl(run_dir / "history.jsonl", {"epoch": 3, "loss": 123.0, "val_accuracy": 1.0})
    write_json(run_dir / "last.json", {"epoch": 2})
    write_json(run_dir / "best.json", {"epoch": 2})
    mark_killed(run_dir)
    assert "without reporting" in runs.read_status(run_dir)["error"]
    assert run_admin.resume_run(run_dir, 1) == run_dir.resolve()
    status = runs.wait_for(run_dir, timeout=300)
    assert status["state"] == "completed", (run_dir / "log.txt").read_text()[-3000:]
    assert status["resumed_from_epoch"] == 2 and status["epochs_done"] == 3
    rows, steps = runs.read_history(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(row["loss"] != 123.0 for row in rows + steps)
    assert read_json(run_dir / "last.json") == {"epoch": 3}


@pytest.mark.slow
def test_a_cancel_right_after_launch_ends_as_cancelled(tmp_path):
    run_dir = runs.launch_run(RunConfig().replace(**SMALL), tmp_path)
    assert runs.request_cancel(run_dir)["state"] == "queued"  # its SIGTERM comes during start-up
    status = runs.wait_for(run_dir, timeout=120)
    assert status["state"] == "cancelled", status.get("error")
    assert status["message"] == "Cancelled before the first epoch finished; no model was kept."
    assert not list(run_dir.glob("*.keras"))


@pytest.mark.slow
def test_a_cancel_while_tensorflow_starts_ends_as_cancelled(tmp_path):
    run_dir = runs.launch_run(RunConfig().replace(**SMALL), tmp_path)
    deadline = time.monotonic() + 60
    while runs.read_status(run_dir).get("phase") != "starting TensorFlow":
        assert time.monotonic() < deadline, runs.read_status(run_dir)
        time.sleep(0.02)
    runs.request_cancel(run_dir)  # a SIGTERM, to the worker's own handler
    status = runs.wait_for(run_dir, timeout=120)
    assert status["state"] == "cancelled", status.get("error")
    assert "no model was kept" in status["message"]


@pytest.mark.slow
def test_a_cancel_in_the_first_epoch_keeps_no_model_and_shows_no_eta(tmp_path):
    config = RunConfig().replace(data={"image_size": 16}, train={"epochs": 3, "batch_size": 1})
    run_dir = runs.launch_run(config, tmp_path)
    seen = []
    deadline = time.monotonic() + 120
    while len(seen) < 2:
        status = runs.read_status(run_dir)
        assert status["state"] in runs.ACTIVE_STATES and time.monotonic() < deadline, status
        if status.get("phase") == "training" and status.get("step", 0) >= 1:
            seen.append(status)
        time.sleep(0.25)
    runs.request_cancel(run_dir)
    status = runs.wait_for(run_dir, timeout=60)
    assert all(s["epoch"] == 1 and s["eta_seconds"] is None for s in seen), seen
    assert all(s["images_per_second"] is None or s["images_per_second"] > 0 for s in seen)
    assert status["state"] == "cancelled" and status["epochs_done"] == 0
    assert status["message"] == "Cancelled before the first epoch finished; no model was kept."
    assert not list(run_dir.glob("*.keras"))
    assert json.loads((run_dir / "status.json").read_text())["state"] == "cancelled"
