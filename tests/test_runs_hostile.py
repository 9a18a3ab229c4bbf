"""Hostile run folders: forged pids, damaged files, non-finite numbers, failed writes, a full disk."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import jsonio, processes, runs
from engine.config import RunConfig
from engine.errors import UserError

PROJECT = Path(__file__).resolve().parent.parent


def make_run(runs_dir: Path, **status) -> Path:
    run_dir = runs.create_run(RunConfig(), runs_dir)
    if status:
        runs.update_status(run_dir, **status)
    return run_dir


def strict_json(path: Path):
    """Parse as a strict JSON reader (a browser, jq) would: NaN and Infinity are errors."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture
def kill_spy(monkeypatch):
    """Records every real signal request_cancel would send and sends none (signal 0 only probes)."""
    sent = []
    real_kill = os.kill

    def spy(pid, sig):
        if sig == 0:
            return real_kill(pid, 0)
        sent.append((pid, sig))

    monkeypatch.setattr(os, "kill", spy)
    return sent


# ----- 1. cancel signals only the run's own process ----------------------------------------------

FORGED_PIDS = {
    "minus one (every process)": {"pid": -1},
    "zero (the process group)": {"pid": 0},
    "a bool": {"pid": True},
    "a string": {"pid": str(os.getpid())},
    "a float": {"pid": float(os.getpid())},
    "too large": {"pid": 2**40},
    "an unrelated live process, no start time": {"pid": os.getpid()},
    "an unrelated live process, another start time": {
        "pid": os.getpid(),
        "pid_start_time": processes.process_start_time(os.getpid()) + 1,
    },
    "a start time that is a string": {
        "pid": os.getpid(),
        "pid_start_time": str(processes.process_start_time(os.getpid())),
    },
}


@pytest.mark.parametrize("forged", FORGED_PIDS.values(), ids=FORGED_PIDS.keys())
def test_cancel_never_signals_a_pid_it_cannot_prove(tmp_path, kill_spy, forged):
    run_dir = make_run(tmp_path, state="running", **forged)

    status = runs.request_cancel(run_dir)

    assert kill_spy == []
    assert status["state"] == "failed"
    assert "ended without reporting" in status["error"]
    assert runs.cancel_requested(run_dir)  # the file still asks a real trainer to stop


FORGED_PID_FILES = {
    "minus one": b"-1",
    "zero": b"0",
    "a JSON minus one": b'{"pid": -1}',
    "a JSON bool": b'{"pid": true}',
    "a JSON string": b'{"pid": "1"}',
    "no start time": json.dumps({"pid": os.getpid()}).encode(),
}


@pytest.mark.parametrize("content", FORGED_PID_FILES.values(), ids=FORGED_PID_FILES.keys())
def test_cancel_never_signals_a_forged_pid_file(tmp_path, kill_spy, content):
    run_dir = make_run(tmp_path)  # queued, before the trainer wrote its own pid
    (run_dir / runs.PID_FILE).write_bytes(content)

    status = runs.request_cancel(run_dir)

    assert kill_spy == []
    assert status["state"] == "failed"


def test_cancel_signals_the_runs_own_trainer(tmp_path):
    """The check above can fail: a process whose start time matches is signalled."""
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = make_run(
            tmp_path,
            state="running",
            pid=trainer.pid,
            pid_start_time=processes.process_start_time(trainer.pid),
        )
        assert runs.read_status(run_dir)["state"] == "running"
        runs.request_cancel(run_dir)
        assert trainer.wait(timeout=10) == -signal.SIGTERM
    finally:
        trainer.kill()


def test_the_pid_file_from_launch_carries_the_start_time(tmp_path, monkeypatch):
    """launch_run stores the child's start time beside its pid (a stand-in child, no training)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(runs.subprocess, "Popen", lambda *args, **kwargs: child)
    try:
        run_dir = runs.launch_run(RunConfig(), tmp_path)
        stored = json.loads((run_dir / runs.PID_FILE).read_text())
        assert stored == {
            "pid": child.pid,
            "pid_start_time": processes.process_start_time(child.pid),
        }
        assert isinstance(stored["pid_start_time"], int)
        assert runs.read_status(run_dir)["state"] == "queued"  # proven alive from the pid file
        runs.request_cancel(run_dir)
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        child.kill()


def test_process_start_time_reads_field_22():
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    assert processes.process_start_time(os.getpid()) == int(fields[19])
    assert processes.process_start_time(-1) is None and processes.process_start_time(True) is None
    assert not processes.process_alive(-1) and not processes.process_alive(0)


# ----- 2. damaged files in a run folder ---------------------------------------------------------

BINARY = b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00garbage"
DAMAGED_OBJECTS = {
    "empty": (b"", "is empty"),
    "blank": (b"  \n", "is empty"),
    "truncated": (b'{"state": "runn', "is not valid JSON"),
    "binary": (BINARY, "is not valid JSON"),
    "a list": (b"[1, 2]", "is not a JSON object (it holds a list)"),
    "a number": (b"42", "is not a JSON object (it holds a number)"),
    "null": (b"null", "is not a JSON object (it holds null)"),
    "a string": (b'"running"', "is not a JSON object (it holds a string)"),
    "nested too deep": (b"[" * 100_000, "is not valid JSON"),
}
CASES = [
    (name, kind, content, reason)
    for name in ("status.json", "config.json")
    for kind, (content, reason) in DAMAGED_OBJECTS.items()
] + [
    ("config.json", "a section that is not an object", b'{"model": 5}', "is not a JSON object"),
    ("status.json", "no state", b'{"run_id": "x"}', "names no known state"),
    ("status.json", "an unknown state", b'{"state": "exploded"}', "names no known state"),
    ("status.json", "a state that is a list", b'{"state": ["running"]}', "no known state"),
    ("pid", "empty", b"", "pid is empty"),
    ("pid", "binary", BINARY, "pid is not valid JSON"),
    ("pid", "a list", b"[1]", "pid is not a JSON object"),
    ("pid", "null", b"null", "pid is not a JSON object"),
    ("pid", "minus one", b"-1", "pid is not a JSON object"),
    ("pid", "zero", b"0", "the pid file names no process (0)"),
    ("pid", "an object without a pid", b"{}", "the pid file names no process"),
]
RESULT_CASES = [
    (name, kind, content, reason)
    for name in ("load_report.json", "evaluation.json")
    for kind, (content, reason) in DAMAGED_OBJECTS.items()
]


def damage(runs_dir: Path, name: str, content: bytes) -> Path:
    run_dir = make_run(runs_dir)
    (run_dir / name).write_bytes(content)
    return run_dir


@pytest.mark.parametrize("name,kind,content,reason", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_damaged_run_file_is_listed_with_its_reason(tmp_path, name, content, kind, reason):
    sound = make_run(tmp_path, state="completed", accuracy=0.9, accuracy_split="test")
    damaged = damage(tmp_path, name, content)

    listed = {run["run_id"]: run for run in runs.list_runs(tmp_path)}

    assert listed[sound.name]["damaged"] is None and listed[sound.name]["state"] == "completed"
    run = listed[damaged.name]
    assert reason in run["damaged"] and name.split(".")[0] in run["damaged"]
    assert run["state"] == "failed"
    assert run["status"]["error"].startswith(f"Run {damaged.name} is damaged: ")
    assert isinstance(run["config"], dict)


@pytest.mark.parametrize(
    "name,kind,content,reason", RESULT_CASES, ids=[f"{c[0]}-{c[1]}" for c in RESULT_CASES]
)
def test_a_damaged_result_file_is_listed_and_the_run_keeps_its_state(
    tmp_path, name, content, kind, reason
):
    run_dir = make_run(tmp_path, state="completed", accuracy=0.5, accuracy_split="test")
    (run_dir / name).write_bytes(content)

    [run] = runs.list_runs(tmp_path)

    assert run["damaged"] == f"{name} {reason}" or run["damaged"].startswith(f"{name} {reason}")
    assert run["state"] == "completed" and run["accuracy"] == 0.5  # the model itself is sound


def test_a_folder_where_a_file_should_be_is_damage(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "status.json").unlink()
    (run_dir / "status.json").mkdir()
    (run_dir / "evaluation.json").mkdir()
    [run] = runs.list_runs(tmp_path)
    assert "status.json cannot be read" in run["damaged"]
    assert "evaluation.json cannot be read" in run["damaged"]


def test_status_fields_of_the_wrong_kind_do_not_break_the_list(tmp_path):
    make_run(tmp_path, state="completed", accuracy="high", created_at=5, macro_f1=True)
    make_run(tmp_path, state="completed", accuracy=0.7, accuracy_split=["test"])
    listed = runs.list_runs(tmp_path)  # sorting str and int created_at raised TypeError before
    assert sorted(str(run["accuracy"]) for run in listed) == ["0.7", "None"]
    assert [run["accuracy_split"] for run in listed if run["accuracy"]] == [None]
    assert all(run["macro_f1"] is None for run in listed)


def test_cli_lists_every_damaged_run_and_exits_0(tmp_path):
    expected = {}
    for name, _kind, content, _reason in CASES + RESULT_CASES:
        run_dir = damage(tmp_path, name, content)
        expected[run_dir.name] = "completed" if name in runs.RESULT_FILES else "failed"
        if name in runs.RESULT_FILES:
            runs.update_status(run_dir, state="completed")
    history = make_run(tmp_path, state="completed")
    (history / "history.jsonl").write_bytes(b"[1]\n" + BINARY + b"\nnull\n")
    expected[history.name] = "completed"

    result = subprocess.run(
        [sys.executable, "-m", "engine", "runs", "--runs-dir", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    states = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert states == expected


def test_cli_names_why_a_run_is_damaged(tmp_path):
    damage(tmp_path, "status.json", b"[1, 2]")
    result = subprocess.run(
        [sys.executable, "-m", "engine", "runs", "--runs-dir", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "status.json is not a JSON object (it holds a list)" in result.stdout


def test_history_keeps_only_object_rows(tmp_path):
    run_dir = make_run(tmp_path)
    lines = [
        b'{"epoch": 1, "loss": 0.5}',
        b"[1, 2]",
        b"3",
        b"null",
        b'"text"',
        b"garbage",
        BINARY.replace(b"\n", b""),
        b"[" * 100_000,
        b'{"epoch": 1, "step": 3, "loss": NaN}',
        b'{"epoch": 2, "loss": Infinity, "accuracy": 1e400}',
        b'{"epoch": 3, "loss": 0.1',  # a line still being written
    ]
    (run_dir / "history.jsonl").write_bytes(b"\n".join(lines))

    epochs, steps = runs.read_history(run_dir)

    assert epochs == [
        {"epoch": 1, "loss": 0.5},
        {"epoch": 2, "loss": None, "accuracy": None},
    ]
    assert steps == [{"epoch": 1, "step": 3, "loss": None}]


def test_load_config_of_a_damaged_run_is_one_sentence(tmp_path):
    run_dir = damage(tmp_path, "config.json", b"[1]")
    with pytest.raises(UserError) as raised:
        runs.load_config(run_dir)
    assert str(raised.value) == (
        f"Run {run_dir.name} cannot be used: config.json is not a JSON object (it holds a list); "
        "train it again or delete its folder."
    )
    with pytest.raises(UserError, match="is not a run directory"):
        runs.request_cancel(tmp_path / "no-such-run")


def test_the_trainer_replaces_a_damaged_status(tmp_path):
    run_dir = damage(tmp_path, "status.json", BINARY)
    status = runs.update_status(run_dir, state="running", epoch=2)
    assert status == {"state": "running", "epoch": 2}
    assert strict_json(run_dir / "status.json") == status


def test_written_json_has_no_nan_or_infinity(tmp_path):
    run_dir = make_run(tmp_path)
    runs.update_status(
        run_dir,
        state="cancelled",
        best_val_loss=float("inf"),
        eta_seconds=-math.inf,
        images_per_second=np.float32("nan"),
        curve=np.array([1.0, np.nan, np.inf]),
        nested={"values": [float("nan"), (np.float64("inf"), 2.5)]},
    )
    jsonio.append_jsonl(run_dir / "history.jsonl", {"epoch": 1, "loss": float("nan")})

    status = strict_json(run_dir / "status.json")
    assert status["best_val_loss"] is None and status["eta_seconds"] is None
    assert status["images_per_second"] is None
    assert status["curve"] == [1.0, None, None]
    assert status["nested"] == {"values": [None, [None, 2.5]]}
    assert json.loads((run_dir / "history.jsonl").read_text()) == {"epoch": 1, "loss": None}


def test_non_finite_numbers_read_from_older_runs_become_none(tmp_path):
    run_dir = make_run(tmp_path)
    (run_dir / "status.json").write_text(
        '{"state": "completed", "accuracy": NaN, "best_val_loss": Infinity, "macro_f1": 1e400}'
    )
    [run] = runs.list_runs(tmp_path)
    assert run["damaged"] is None and run["accuracy"] is None and run["macro_f1"] is None
    assert run["status"]["best_val_loss"] is None


# ----- 3. temporary files: fsynced before the rename, removed when a write fails ---------------


def test_the_temporary_file_is_fsynced_before_it_replaces_the_target(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        return real_fsync(descriptor)

    def replace(source, target):
        events.append(("replace", os.fspath(source)))
        return real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    jsonio.write_json(tmp_path / "status.json", {"state": "running"})

    [(_, temporary)] = [event for event in events if event[0] == "replace"]
    assert ".status.json." in temporary and temporary.endswith(".tmp")
    assert events.index(("fsync", temporary)) < events.index(("replace", temporary))
    assert strict_json(tmp_path / "status.json") == {"state": "running"}


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failing):
    target = tmp_path / "status.json"
    jsonio.write_json(target, {"state": "queued"})

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, failing, no_space)
    with pytest.raises(OSError) as raised:
        jsonio.write_json(target, {"state": "running"})

    assert raised.value.errno == errno.ENOSPC
    assert sorted(path.name for path in tmp_path.iterdir()) == ["status.json"]
    assert strict_json(target) == {"state": "queued"}


def test_a_failed_model_save_leaves_no_temporary(tmp_path):
    from engine.callbacks import Checkpoints

    class FullDiskModel:
        def save(self, path):
            Path(path).write_bytes(b"PK\x03\x04 half a model")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        Checkpoints(tmp_path, select_best=True).save(FullDiskModel(), "best.keras")
    assert list(tmp_path.iterdir()) == []


# ----- 4. a full disk ends the run as failed, with a sentence ----------------------------------


@pytest.fixture
def worker(monkeypatch):
    """engine.training in this process, without lowering its priority or keeping its handlers."""
    from engine import training

    monkeypatch.setattr(os, "nice", lambda increment: 0)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield training
    for number, handler in handlers.items():
        signal.signal(number, handler)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_status_ends_the_run_as_failed(tmp_path, monkeypatch, worker):
    run_dir = make_run(tmp_path / "runs")

    def train_until_the_disk_fills(config, run_dir, cancel_flag, echo):
        runs.update_status(run_dir, phase="training", epoch=1, eta_seconds=12.0)
        monkeypatch.setattr(runs, "write_json", no_space)  # from now on no temporary file fits
        runs.update_status(run_dir, epoch=2)
        raise AssertionError("update_status should have raised")

    monkeypatch.setattr(worker, "_train", train_until_the_disk_fills)
    final = worker.train_run(run_dir)

    sentence = (
        f"Training stopped because the disk is full at {run_dir}; free some space there and "
        "train the run again."
    )
    assert final["state"] == "failed" and final["error"] == sentence
    status = runs.read_status(run_dir)  # written in place, as valid JSON
    assert status["state"] == "failed" and status["error"] == sentence
    assert strict_json(run_dir / "status.json")["state"] == "failed"
    assert not [path for path in run_dir.iterdir() if path.name.endswith(".tmp")]


def test_a_full_disk_while_writing_history_ends_the_run_as_failed(tmp_path, monkeypatch, worker):
    """A real ENOSPC: history.jsonl is a link to /dev/full, which refuses every write."""
    from engine import callbacks

    if not Path("/dev/full").exists():
        pytest.skip("this system has no /dev/full")
    run_dir = make_run(tmp_path / "runs")
    (run_dir / "history.jsonl").symlink_to("/dev/full")

    def train_one_batch(config, run_dir, cancel_flag, echo):
        clock = callbacks.Clock(train_images=100, steps_per_epoch=10, epochs=1)
        callbacks.HistoryWriter(run_dir, clock, every_steps=1).on_train_batch_end(0, {"loss": 1.0})
        raise AssertionError("the history write should have raised")

    monkeypatch.setattr(worker, "_train", train_one_batch)
    worker.train_run(run_dir)

    status = runs.read_status(run_dir)
    assert status["state"] == "failed"
    assert f"the disk is full at {run_dir};" in status["error"]


def test_disk_full_is_found_behind_a_wrapping_error(worker):
    try:
        try:
            no_space()
        except OSError as error:
            raise RuntimeError("saving the model failed") from error
    except RuntimeError as wrapped:
        assert worker.disk_full_error(wrapped).errno == errno.ENOSPC
    assert worker.disk_full_error(RuntimeError("other")) is None


def test_a_trainer_that_died_on_a_full_disk_says_so(tmp_path, monkeypatch):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    run_dir = make_run(tmp_path, state="running", pid=finished.pid, pid_start_time=1)
    assert "disk is full" not in runs.read_status(run_dir)["error"]

    class Usage:
        free = 0

    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: Usage())
    error = runs.read_status(run_dir)["error"]
    assert "ended without reporting because the disk is full at " + str(run_dir) in error
