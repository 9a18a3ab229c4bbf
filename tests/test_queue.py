"""Tests for the training queue: a waiting run holds no TensorFlow, and the queue has a limit."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import processes, run_queue, runs
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import DamagedFile, read_json_object

PROJECT = Path(__file__).resolve().parent.parent


def tensorflow_mapped(pid: int) -> bool:
    """True once the process has TensorFlow's shared libraries in its memory map."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any("/tensorflow/" in line for line in maps.splitlines())


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")


def worker_status(run_dir: Path) -> dict:
    try:
        return read_json_object(run_dir / "status.json") or {}
    except DamagedFile:
        return {}


def fill_queue(runs_dir: Path, count: int) -> list[Path]:
    return [runs.create_run(RunConfig(), runs_dir) for _ in range(count)]


def test_the_worker_module_imports_no_tensorflow():
    code = (
        "import json, sys\n"
        "import engine.training, engine.run_queue, engine.runs\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_a_queued_run_imports_tensorflow_only_when_its_turn_comes(tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    config = RunConfig().replace(data={"image_size": 16}, train={"epochs": 1, "batch_size": 64})
    with open(runs_dir / run_queue.LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run is training
        run_dir = runs.launch_run(config, runs_dir)
        deadline = time.monotonic() + 60
        # The worker's own word that it waits (read_status would take the launcher's pid file).
        while "pid" not in worker_status(run_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # time enough to import TensorFlow, were it imported while waiting
        status = runs.read_status(run_dir)
        pid = status["pid"]
        assert status["state"] == "queued", (run_dir / "log.txt").read_text()[-2000:]
        assert not tensorflow_mapped(pid)
        assert resident_mib(pid) < 150  # a process with TensorFlow holds about 690 MiB
    # The lock is free: the run's turn has come, and now it loads TensorFlow.
    deadline = time.monotonic() + 180
    while not tensorflow_mapped(pid) and time.monotonic() < deadline:
        assert processes.process_alive(pid), (run_dir / "log.txt").read_text()[-2000:]
        time.sleep(0.1)
    assert tensorflow_mapped(pid)
    runs.request_cancel(run_dir)
    final = runs.wait_for(run_dir, timeout=180)
    assert final["state"] in ("cancelled", "completed"), (run_dir / "log.txt").read_text()[-2000:]


def test_wait_for_turn_holds_the_lock_or_gives_up_when_told(tmp_path):
    run_dir = runs.create_run(RunConfig(), tmp_path)
    asked = []
    with open(tmp_path / run_queue.LOCK_FILE, "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert run_queue.wait_for_turn(run_dir, lambda: asked.append(1) or len(asked) > 2) is None
    assert len(asked) == 3  # it asked while it waited, and stopped when told
    handle = run_queue.wait_for_turn(run_dir, lambda: pytest.fail("the lock was free"))
    try:
        with open(tmp_path / run_queue.LOCK_FILE, "w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        handle.close()


def test_a_launch_beyond_the_queue_limit_is_refused_with_a_sentence(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    fill_queue(runs_dir, run_queue.MAX_QUEUED)

    def no_process(*args, **kwargs):
        raise AssertionError("a refused launch must start no process")

    monkeypatch.setattr(runs.subprocess, "Popen", no_process)
    with pytest.raises(UserError) as error:
        runs.launch_run(RunConfig(), runs_dir)
    assert str(error.value) == (
        f"The training queue in {runs_dir} is full: 8 runs are waiting their turn (at most 8); "
        "wait for one to start or cancel one, then start this run again."
    )
    assert len(list(runs_dir.iterdir())) == run_queue.MAX_QUEUED  # no folder for the refused run


def test_ended_and_dead_runs_leave_room_in_the_queue(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    finished, dead = fill_queue(runs_dir, run_queue.MAX_QUEUED)[:2]
    runs.update_status(finished, state="completed")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    runs.update_status(dead, pid=ended.pid, pid_start_time=1)  # its process is gone
    assert len(run_queue.queued_runs(runs_dir)) == run_queue.MAX_QUEUED - 2

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(runs.subprocess, "Popen", lambda *args, **kwargs: child)
    try:
        run_dir = runs.launch_run(RunConfig(), runs_dir)
        assert json.loads((run_dir / runs.PID_FILE).read_text())["pid"] == child.pid
        assert len(run_queue.queued_runs(runs_dir)) == run_queue.MAX_QUEUED - 1
    finally:
        child.kill()
        child.wait()


def test_launch_starts_the_light_worker_entry(tmp_path, monkeypatch):
    started = []

    class Child:
        pid = 2**22 + 1  # never read as alive: no /proc entry has this start time

    monkeypatch.setattr(
        runs.subprocess, "Popen", lambda command, **kwargs: started.append(command) or Child()
    )
    run_dir = runs.launch_run(RunConfig(), tmp_path)
    assert started == [[sys.executable, "-m", "engine.training", str(run_dir)]]
