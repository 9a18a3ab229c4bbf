"""Training across worker processes with tf.distribute.MultiWorkerMirroredStrategy.

TF_CONFIG names the cluster and this process's place in it. Every worker runs the same training
on its share of each batch; the chief (task 0) alone writes the run folder, the other workers
write theirs into a temporary folder that is removed when they end.

`launch_local_workers` is `python -m engine train --local-workers N`: it starts N workers on this
machine (TF_CONFIG on 127.0.0.1, free ports), forwards a cancel to the chief, and stops the other
workers once the chief has ended, or all of them when one fails. (Workers that lose a peer stop
by themselves too: tf.distribute's coordination service aborts their collectives at once.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.errors import UserError

STOP_GRACE_SECONDS = 10.0  # how long a stopped worker may take to end before it is killed
POLL_SECONDS = 0.25


# The TF_CONFIG helpers live in engine.cluster; callers use them through this module too.
from engine.cluster import (  # noqa: E402, F401
    MAX_LOCAL_WORKERS,
    check_config,
    check_local_workers,
    cluster_config,
    in_cluster,
    is_chief,
    local_tf_configs,
    scratch_run_dir,
    wait_for_every_worker,
    worker_count,
)


def launch_local_workers(run_dir: Path, count: int, verbose: bool = False) -> int:
    """Train run_dir on count worker processes here; the chief's exit code."""
    from engine import runs

    run_dir = Path(run_dir).resolve()
    config = runs.load_config(run_dir)
    check_local_workers(count)
    check_config(config, count)
    cluster = LocalCluster(run_dir, count, verbose)
    try:
        with cluster.cancel_on_signals():
            runs.update_status(run_dir, workers=count, phase="decoding images for the workers")
            if _prepare_data(config, cluster):
                cluster.start()
                cluster.wait()
    except UserError as error:  # the data cannot be used: a sentence, and no worker started
        cluster.finish(error=str(error))
        raise
    return cluster.finish()


class LocalCluster:
    """count `python -m engine train --run-dir` workers on 127.0.0.1; worker 0 trains run_dir."""

    def __init__(self, run_dir: Path, count: int, verbose: bool = False):
        self.run_dir, self.count, self.verbose = Path(run_dir), count, verbose
        self.scratch = Path(tempfile.mkdtemp(prefix="studio-workers-"))
        self.chief: subprocess.Popen | None = None  # worker 0, which writes the run folder
        self.others: list[subprocess.Popen] = []
        self.cancelled = False
        self.failed: int | None = None  # the first worker other than the chief that failed

    @contextlib.contextmanager
    def cancel_on_signals(self):
        """SIGTERM or Ctrl-C cancels the run through the chief; every worker is stopped after."""
        from engine import runs

        def on_signal(signum, frame):
            self.cancelled = True
            with contextlib.suppress(OSError):
                (self.run_dir / runs.CANCEL_FILE).touch()
            if self.chief is not None and self.chief.poll() is None:
                # The chief stops at its next batch and writes the run's end itself.
                with contextlib.suppress(ProcessLookupError):
                    self.chief.send_signal(signal.SIGTERM)

        numbers = (signal.SIGTERM, signal.SIGINT)
        previous = {number: signal.signal(number, on_signal) for number in numbers}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            # The others first: once the chief has ended they only wait for it.
            for worker in self.others:
                _stop(worker, grace=0)
            if self.chief is not None:
                _stop(self.chief, grace=STOP_GRACE_SECONDS)

    def start(self) -> None:
        """The other workers first, then the chief: once it runs, only it writes status.json."""
        from engine import runs

        tf_configs = local_tf_configs(self.count)
        for index, tf_config in enumerate(tf_configs[1:], start=1):
            # A parent folder each: a run waits for the lock file in its parent folder.
            parent = self.scratch / f"worker-{index}"
            run_dir = runs.create_run(runs.load_config(self.run_dir), parent)
            self.others.append(_start_worker(run_dir, tf_config, parent / "output.log"))
        runs.update_status(self.run_dir, worker_pids=[worker.pid for worker in self.others])
        if not self.cancelled:
            # The chief's output is this command's; it writes its own pid into status.json.
            self.chief = _start_worker(self.run_dir, tf_configs[0], None, self.verbose)

    def wait(self) -> None:
        """Until the chief ends, or another worker fails (its peers would wait for it forever)."""
        while self.chief is not None and self.chief.poll() is None:
            for index, worker in enumerate(self.others, start=1):
                if worker.poll() not in (None, 0):
                    self.failed = index
                    return
            time.sleep(POLL_SECONDS)

    def finish(self, error: str = "") -> int:
        """Say how the run ended where the chief could not, remove the scratch; an exit code."""
        from engine import runs

        try:
            ended = {"state": "failed", "ended_at": runs.now_iso(), "phase": "failed"}
            if self.failed is not None:
                print(_tail(self.scratch / f"worker-{self.failed}" / "output.log"), file=sys.stderr)
                error = (
                    f"Worker {self.failed} of {self.count} stopped with exit code "
                    f"{self.others[self.failed - 1].returncode}, so the run was stopped; its last "
                    "output is above."
                )
                print(f"error: {error}", file=sys.stderr)
            if error:
                runs.update_status(self.run_dir, **ended, error=error)
                return 1 if self.failed is not None else 2
            code = self.chief.returncode if self.chief is not None else 1
            if runs.read_status(self.run_dir).get("state") in runs.ACTIVE_STATES:
                # The chief ended before it could say so, or was never started.
                if self.cancelled or runs.cancel_requested(self.run_dir):
                    ended |= {"state": "cancelled", "phase": "cancelled"}
                else:
                    ended["error"] = f"The chief worker ended with exit code {code}."
                runs.update_status(self.run_dir, **ended)
            return code
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _prepare_data(config, cluster: LocalCluster) -> bool:
    """Decode the images into the cache once, so the workers do not each decode them all;
    False when the run was cancelled meanwhile."""
    from engine.data import load_dataset

    last = [time.monotonic(), 0]  # when progress was last shown, and how far

    def progress(done: int, total: int) -> None:
        if cluster.cancelled:
            raise _Cancelled()
        if (time.monotonic() - last[0] > 5 or done == total) and done != last[1]:
            last[:] = [time.monotonic(), done]
            print(f"decoding images {done}/{total}", file=sys.stderr, flush=True)

    try:
        load_dataset(config.data).prepare(progress)
    except _Cancelled:
        return False
    return not cluster.cancelled


class _Cancelled(Exception):
    """A cancel while the launcher decodes the images."""


def _start_worker(
    run_dir: Path, tf_config: str, log: Path | None, verbose: bool = False
) -> subprocess.Popen:
    project_root = str(Path(__file__).resolve().parent.parent)
    environment = dict(os.environ, TF_CONFIG=tf_config)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [project_root, environment.get("PYTHONPATH")])
    )
    command = [sys.executable, "-m", "engine", "train", "--run-dir", str(run_dir)]
    output = open(log, "wb") if log else None  # noqa: SIM115  the worker holds it open
    try:
        return subprocess.Popen(
            [*command, "--verbose"] if verbose else command,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,  # a Ctrl-C reaches the launcher, which cancels in order
        )
    finally:
        if output:
            output.close()


def _stop(worker: subprocess.Popen, grace: float) -> None:
    """End a worker: SIGTERM, then SIGKILL after grace seconds; with grace 0, SIGKILL at once (a
    worker other than the chief has nothing to save, and may be waiting for a peer that ended)."""
    if worker.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGTERM if grace else signal.SIGKILL)
    try:
        worker.wait(grace or None)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            worker.kill()
        worker.wait()


def _tail(log: Path, lines: int = 20) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(the worker wrote no output)"
