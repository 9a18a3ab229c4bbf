"""Which devices TensorFlow sees, and the tf.distribute strategy a training process uses.

Chosen once at process start: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy
over several GPUs, the default strategy on one GPU or the CPU. STUDIO_CPU_DEVICES=N splits the CPU
into N logical devices under MirroredStrategy, which is how the several-device path is tested
on a machine without GPUs. MultiWorkerMirroredStrategy must exist before TensorFlow initialises
its devices, so a training process makes it in quiet_tensorflow_start (start_multi_worker).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any


@functools.cache
def describe_devices() -> dict[str, Any]:
    """CPU and GPUs TensorFlow sees, with GPU names, for the dashboard's home page."""
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        gpus.append({"name": gpu.name, "model": details.get("device_name", "GPU")})
    return {
        "tensorflow": tf.__version__,
        "cpus": len(tf.config.list_physical_devices("CPU")),
        "cpu_cores": os.cpu_count(),
        "gpus": gpus,
        "built_with_cuda": tf.test.is_built_with_cuda(),
    }


_MULTI_WORKER: list = []  # the process's MultiWorkerMirroredStrategy, once made


def start_multi_worker():
    """This process's MultiWorkerMirroredStrategy over TF_CONFIG's cluster, made once.

    It has to come before any other TensorFlow op (it configures the collective ops of the
    runtime), and it waits until every worker of the cluster has started.
    """
    if not _MULTI_WORKER:
        import tensorflow as tf

        from engine.distributed import cluster_config

        cluster_config()  # a malformed TF_CONFIG is a sentence, not a TensorFlow traceback
        for gpu in tf.config.list_physical_devices("GPU"):
            # Before the strategy starts the runtime: workers on one machine share its GPUs.
            tf.config.experimental.set_memory_growth(gpu, True)

        class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
            """tf.distribute's strategy, with reduce() taking what Keras 3's fit() gives it.

            Keras 3 reduces a whole (images, labels) batch at once before it builds the metrics,
            and reduces each step's scalar logs along axis 0 (keras-team/keras#20585); the
            strategy refuses both. Here a nest is reduced item by item, as MirroredStrategy
            does, and a scalar across the replicas only.
            """

            def reduce(self, reduce_op, value, axis):
                def one(item):
                    local = self.experimental_local_results(item)[0]
                    scalar = getattr(local, "shape", None) is not None and local.shape.rank == 0
                    return super(MultiWorkerMirroredStrategy, self).reduce(
                        reduce_op, item, None if scalar else axis
                    )

                return tf.nest.map_structure(one, value)

        _MULTI_WORKER.append(MultiWorkerMirroredStrategy())
    return _MULTI_WORKER[0]


def quiet_tensorflow_start(
    verbose: bool = False, multi_worker: bool = False, devices: bool = True
) -> None:
    """Import TensorFlow with its start-up lines (oneDNN, CUDA, absl) kept off the terminal.

    absl writes them straight to file descriptor 2 before any logging is set up, so no log level
    reaches them: fd 2 points at a temporary file while TensorFlow starts, and what it caught is
    replayed only with verbose, or when the start fails. With multi_worker, the process joins
    TF_CONFIG's cluster here, before TensorFlow initialises its devices; without devices, the
    process sees no GPU (a launcher of workers must leave them to its workers).
    """
    import sys
    import tempfile

    if verbose or "tensorflow" in sys.modules:
        _start(multi_worker, devices)
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            _start(multi_worker, devices)
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _start(multi_worker: bool, devices: bool) -> None:
    """Import TensorFlow and set up its devices: join the cluster, split the CPU, or hide GPUs."""
    import tensorflow as tf

    # The device set-up prints its lines too; a cluster or a CPU split must come before it.
    if multi_worker:
        start_multi_worker()
    elif not devices:  # should anything run a TensorFlow op here, it runs on the CPU
        with contextlib.suppress(RuntimeError):  # the devices were set up already
            tf.config.set_visible_devices([], "GPU")
        return
    else:
        split_cpu(int(os.environ.get("STUDIO_CPU_DEVICES", "0") or 0))
    tf.config.list_logical_devices()


def choose_strategy(cpu_devices: int | None = None):
    """Configure devices and return (strategy, description); call before building any model."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Already initialised devices cannot change growth any more, and that is harmless.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    cpu_devices = (
        cpu_devices
        if cpu_devices is not None
        else int(os.environ.get("STUDIO_CPU_DEVICES", "0") or 0)
    )
    workers = 1
    if os.environ.get("TF_CONFIG"):
        from engine.distributed import cluster_config, worker_count

        strategy = start_multi_worker()
        workers = worker_count()
        task = cluster_config()["task"]
        place = f"{task.get('type', 'worker')} {task.get('index', 0)} of {workers} workers"
        device = f"{len(gpus)} GPU(s) per worker, {place}" if gpus else f"CPU, {place}"
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        device = f"{len(gpus)} GPUs: " + ", ".join(_gpu_model(g) for g in gpus)
    elif gpus:
        strategy = tf.distribute.get_strategy()
        device = f"GPU: {_gpu_model(gpus[0])}"
    elif cpu_devices > 1:
        split_cpu(cpu_devices)
        logical = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(logical)
        device = f"CPU split into {len(logical)} logical devices"
    else:
        strategy = tf.distribute.get_strategy()
        device = "CPU"
    return strategy, {
        "device": device,
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": workers,
        "gpus": len(gpus),
    }


def split_cpu(count: int) -> None:
    """Split the CPU into count logical devices (before TensorFlow initialises its devices)."""
    if count < 2:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    with contextlib.suppress(RuntimeError):  # already split earlier in this process
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )


def _gpu_model(gpu) -> str:
    import tensorflow as tf

    try:
        return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
    except (ValueError, RuntimeError):
        return gpu.name
