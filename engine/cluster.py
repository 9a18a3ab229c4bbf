"""TF_CONFIG: the cluster a worker process belongs to, its place in it, and what every worker
of a MultiWorkerMirroredStrategy run needs (engine.distributed launches them)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from engine.errors import UserError

MAX_LOCAL_WORKERS = 32


def cluster_config() -> dict | None:
    """TF_CONFIG as a dict, None when it is not set; UserError when it is not a cluster."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(value.get(key), dict) for key in ("cluster", "task")
    ):
        raise UserError(
            'TF_CONFIG must be JSON such as {"cluster": {"worker": ["host:port", ...]}, "task": '
            '{"type": "worker", "index": 0}}; see "Several GPUs or machines" in the README.'
        )
    return value


def in_cluster() -> bool:
    """True when TF_CONFIG names a cluster this process is part of."""
    return cluster_config() is not None


def worker_count() -> int:
    """Workers in TF_CONFIG's cluster (a chief counts as one); 1 without TF_CONFIG."""
    config = cluster_config()
    if config is None:
        return 1
    cluster = config["cluster"]
    return sum(len(cluster.get(job) or []) for job in ("chief", "worker"))


def is_chief() -> bool:
    """True for the process that writes the run folder: the chief, else worker 0, else alone."""
    config = cluster_config()
    if config is None:
        return True
    task, cluster = config["task"], config["cluster"]
    if task.get("type") == "chief":
        return True
    return "chief" not in cluster and task.get("type") == "worker" and task.get("index", 0) == 0


def check_local_workers(count: int) -> None:
    """Refuse a local cluster of no workers, too many, or inside another cluster."""
    if not 1 <= count <= MAX_LOCAL_WORKERS:
        raise UserError(f"--local-workers must be from 1 to {MAX_LOCAL_WORKERS}, not {count}.")
    if in_cluster():
        raise UserError(
            "--local-workers makes its own cluster on this machine; unset TF_CONFIG, or drop "
            "--local-workers to join the cluster TF_CONFIG names."
        )


def check_config(config, workers: int) -> None:
    """Refuse what several workers cannot share: epochs fitted to one machine's speed."""
    if workers > 1 and config.train.epochs == 0:
        raise UserError(
            f"Training on {workers} workers needs a number of epochs (--epochs 1 or more): a "
            "time budget is measured on one machine, and every worker must train the same epochs."
        )


@contextlib.contextmanager
def scratch_run_dir(config):
    """A throwaway run folder for a worker other than the chief, removed when it is done."""
    from engine import runs

    # A parent folder of its own: a run waits for the lock file in its parent folder.
    parent = Path(tempfile.mkdtemp(prefix="studio-worker-"))
    try:
        yield runs.create_run(config, parent)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def wait_for_every_worker() -> None:
    """Hold a worker that trained to the end until every worker has: the chief still evaluates,
    and a peer that ends before it reads as a crash (the chief would log its heartbeats lost)."""
    import tensorflow as tf

    from engine.devices import start_multi_worker

    strategy = start_multi_worker()

    @tf.function  # eagerly, the strategy warns about its overhead
    def barrier():
        return strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    with contextlib.suppress(tf.errors.OpError):  # a peer that failed: nothing to wait for
        barrier()


def local_tf_configs(count: int) -> list[str]:
    """TF_CONFIG of each of count workers on 127.0.0.1, on ports free now; task 0 first."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for handle in sockets:
            handle.bind(("127.0.0.1", 0))  # held until all are chosen, so no two are the same
        ports = [handle.getsockname()[1] for handle in sockets]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(count)
    ]
