"""Training across worker processes: TF_CONFIG, the local launcher, sharding, and one real run on
two workers with MultiWorkerMirroredStrategy (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import engine_cli

from engine import distributed, runs
from engine.config import RunConfig
from engine.errors import UserError
from engine.jsonio import read_json, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
TWO_WORKERS = {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}


def run_engine(*args: str, env: dict | None = None, timeout: float = 600):
    return engine_cli(*args, env=env, timeout=timeout)


def set_tf_config(monkeypatch, cluster: dict, task: dict) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))


def alive(pid: int) -> bool:
    """True while the process runs (a zombie, ended but not yet reaped, counts as ended)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_folders(runs_dir: Path) -> list[Path]:
    return [path for path in runs_dir.glob("*") if (path / "config.json").is_file()]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_tf_config_names_the_workers_and_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert (distributed.worker_count(), distributed.is_chief()) == (1, True)
    set_tf_config(monkeypatch, TWO_WORKERS, {"type": "worker", "index": 0})
    assert (distributed.worker_count(), distributed.is_chief()) == (2, True)
    set_tf_config(monkeypatch, TWO_WORKERS, {"type": "worker", "index": 1})
    assert (distributed.worker_count(), distributed.is_chief()) == (2, False)
    with_chief = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    set_tf_config(monkeypatch, with_chief, {"type": "worker", "index": 0})
    assert (distributed.worker_count(), distributed.is_chief()) == (3, False)
    set_tf_config(monkeypatch, with_chief, {"type": "chief", "index": 0})
    assert distributed.is_chief() is True


@pytest.mark.parametrize(
    "value",
    ["{not json", '{"cluster": {}}', "[]", '{"cluster": [], "task": {}}'],
)
def test_a_malformed_tf_config_is_a_sentence(monkeypatch, value):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(UserError, match="^TF_CONFIG must be JSON such as .*README.$"):
        distributed.worker_count()


def test_local_workers_get_their_own_free_ports_on_this_machine():
    configs = [json.loads(text) for text in distributed.local_tf_configs(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3
    assert all(address.startswith("127.0.0.1:") for address in addresses)
    assert [config["task"] for config in configs] == [
        {"type": "worker", "index": index} for index in range(3)
    ]
    assert all(config["cluster"] == configs[0]["cluster"] for config in configs)


def test_several_workers_need_a_number_of_epochs():
    with pytest.raises(UserError, match="Training on 2 workers needs a number of epochs"):
        distributed.check_config(RunConfig().replace(train={"epochs": 0}), 2)
    distributed.check_config(RunConfig().replace(train={"epochs": 0}), 1)  # one may budget
    distributed.check_config(RunConfig().replace(train={"epochs": 2}), 2)


@pytest.mark.parametrize(
    ("flags", "env", "part"),
    [
        (["--local-workers", "0"], {}, "--local-workers must be from 1 to 32, not 0."),
        (["--local-workers", "99"], {}, "--local-workers must be from 1 to 32, not 99."),
        (["--local-workers", "2", "--epochs", "0"], {}, "needs a number of epochs"),
        (
            ["--local-workers", "2"],
            {"TF_CONFIG": json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker"}})},
            "unset TF_CONFIG",
        ),
    ],
)
def test_a_refused_local_cluster_leaves_no_run_folder(tmp_path, flags, env, part):
    runs_dir = tmp_path / "runs"
    done = run_engine("train", "--runs-dir", str(runs_dir), *flags, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert part in done.stderr.strip().splitlines()[-1]
    assert not runs_dir.exists() or list(runs_dir.iterdir()) == []


def test_the_training_pipelines_are_sharded_by_data():
    import tensorflow as tf

    from engine.data import load_dataset
    from engine.trainer import Trainer

    config = RunConfig().replace(data={"image_size": 8}, train={"epochs": 1})
    trainer = Trainer(config, load_dataset(config.data))
    data_policy = tf.data.experimental.AutoShardPolicy.DATA
    for data in (trainer.train_data(), trainer.validation_data()):
        assert data.options().experimental_distribute.auto_shard_policy == data_policy


def fake_workers(monkeypatch, chief: str, other: str) -> list[subprocess.Popen]:
    """Workers that are small Python programs, so the launcher is tested without TensorFlow."""
    started = []

    def start(run_dir, tf_config, log, verbose=False):
        code = chief if log is None else other  # the chief writes to this command's output
        output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        started.append(subprocess.Popen([sys.executable, "-c", code], stdout=output))
        return started[-1]

    monkeypatch.setattr(distributed, "_start_worker", start)
    monkeypatch.setattr(distributed, "_prepare_data", lambda config, cluster: True)
    return started


def test_a_failed_worker_stops_the_chief_and_fails_the_run(tmp_path, monkeypatch, capsys):
    workers = fake_workers(
        monkeypatch,
        chief="import time; time.sleep(120)",
        other="import sys; print('the worker ran out of memory'); sys.exit(3)",
    )
    monkeypatch.setattr(distributed.tempfile, "tempdir", str(tmp_path))
    run_dir = runs.create_run(RunConfig().replace(train={"epochs": 2}), tmp_path / "runs")
    started = time.monotonic()
    assert distributed.launch_local_workers(run_dir, 2) == 1
    assert time.monotonic() - started < distributed.STOP_GRACE_SECONDS + 20
    status = read_json(run_dir / "status.json")
    assert status["state"] == "failed" and status["workers"] == 2
    assert status["error"] == (
        "Worker 1 of 2 stopped with exit code 3, so the run was stopped; its last output is above."
    )
    assert status["worker_pids"] == [workers[0].pid]  # the other worker, started first
    assert all(worker.poll() is not None for worker in workers)
    assert not list(tmp_path.glob("studio-workers-*"))  # the other workers' folders are gone
    printed = capsys.readouterr().err.splitlines()
    assert printed == ["the worker ran out of memory", f"error: {status['error']}"]


def test_a_chief_that_ends_without_saying_so_fails_the_run(tmp_path, monkeypatch):
    workers = fake_workers(
        monkeypatch, chief="import sys; sys.exit(7)", other="import time; time.sleep(120)"
    )
    run_dir = runs.create_run(RunConfig().replace(train={"epochs": 2}), tmp_path / "runs")
    assert distributed.launch_local_workers(run_dir, 2) == 7
    status = read_json(run_dir / "status.json")
    assert status["state"] == "failed"
    assert status["error"] == "The chief worker ended with exit code 7."
    assert status["worker_pids"] == [workers[0].pid]  # the other worker, started first
    assert all(worker.poll() is not None for worker in workers)


@pytest.mark.slow
def test_two_local_workers_train_one_run_with_multi_worker_mirrored_strategy(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    runs_dir = tmp_path / "runs"
    done = run_engine(
        *("train", "--dataset", "digits", "--image-size", "16", "--epochs", "3"),
        *("--local-workers", "2"),
        *("--runs-dir", str(runs_dir)),
        env={"TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_folders(runs_dir)  # the chief's run only: the other worker's is gone
    assert done.stdout.strip().splitlines()[-1] == str(run_dir)
    status = read_json(run_dir / "status.json")
    assert status["state"] == "completed"
    assert status["strategy"] == "MultiWorkerMirroredStrategy"
    assert (status["workers"], status["replicas"]) == (2, 2)
    assert status["accuracy_split"] == "test" and status["accuracy"] >= 0.9
    assert [row["epoch"] for row in read_jsonl(run_dir / "history.jsonl") if "step" not in row] == [
        1,
        2,
        3,
    ]
    assert (run_dir / "best.keras").is_file() and (run_dir / "evaluation.json").is_file()
    assert not any(alive(pid) for pid in [status["pid"], *status["worker_pids"]])
    assert list(scratch.glob("studio-worker*")) == []  # the other worker's folder is removed


@pytest.mark.slow
def test_cancel_stops_every_worker(tmp_path):
    runs_dir = tmp_path / "runs"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "engine", "train", "--dataset", "digits", "--image-size", "16"]
        + ["--epochs", "200", "--local-workers", "2", "--runs-dir", str(runs_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: run_folders(runs_dir), 120, "the run folder")
        (run_dir,) = run_folders(runs_dir)
        wait_until(
            lambda: (read_json(run_dir / "status.json", {}).get("global_step") or 0) > 0,
            240,
            "the first training steps",
        )
        status = read_json(run_dir / "status.json")
        pids = [status["pid"], *status["worker_pids"]]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        cancel = run_engine("cancel", str(run_dir), timeout=60)
        assert cancel.returncode == 0, cancel.stderr
        launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1
    status = read_json(run_dir / "status.json")
    assert status["state"] == "cancelled"
    assert status["epochs_done"] < 200
    assert not any(alive(pid) for pid in pids)
