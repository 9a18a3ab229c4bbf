"""Training: steady-state images per second of an engine run against a plain model.fit.

The engine contender is a whole run in this process: engine.runs.create_run + engine.training.
train_run, with its history, status, checkpoints, TensorBoard and cancel checks (early stopping off);
its speed is history.jsonl's images_per_second of every epoch after the first. The plain contender
is the same model (engine.models.build_model), compiled the same way (Adam, categorical
cross-entropy, accuracy), fitted on the same Dataset.pipeline for the same epochs and steps, timed
with a callback the same way (first to last training batch of an epoch, validation excluded).

Two variants run once after them, to inform: the engine with steps_per_execution=4 and plain fit
with XLA (jit_compile=True; Keras leaves XLA off on a CPU-only machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import keras

from bench.common import (
    alternate,
    median,
    require_folder,
    result_row,
    scratch_space,
    subset_folder,
)

IMAGE_SIZE = 128
SEED = 42
# The train folder of cats_vs_dogs cut to this many photos per class (70% train, 15% validation,
# 15% test carved by the engine): enough steps for a stable epoch time within the time budget.
PER_CLASS = 240
QUICK_PER_CLASS = 48
EPOCHS = 3
# Two epochs even in quick mode: the first epoch includes tracing, so it is never compared.
QUICK_EPOCHS = 2


class EpochTimer(keras.callbacks.Callback):
    """Images per second of each epoch's training batches, as the engine's RunRecorder counts."""

    def __init__(self, train_images: int):
        super().__init__()
        self.train_images = train_images
        self.speeds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.last_batch_end = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch_end = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = max(self.last_batch_end - self.started, 1e-9)
        self.speeds.append(self.train_images / seconds)


@contextlib.contextmanager
def same_priority(niceness: int = 0):
    """Give a contender the niceness train_run gives itself, then restore ours and our signals.

    train_run calls os.nice(5) and installs SIGINT / SIGTERM handlers; both stay with the process.
    On Linux a niceness belongs to one thread and threads inherit it, so the calling thread and
    the tf.data threads it starts run at +5 in an engine run; the plain contender gets the same.
    """
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with contextlib.suppress(PermissionError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, priority + niceness)
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        with contextlib.suppress(PermissionError, OSError):  # lowering it needs root
            os.setpriority(os.PRIO_PROCESS, 0, priority)


def engine_run(config, runs_dir: Path) -> list[float]:
    """Train a whole engine run in this process; images/s of each epoch from its history."""
    from engine import runs
    from engine.training import train_run

    run_dir = runs.create_run(config, runs_dir)
    with same_priority():  # train_run adds its own NICENESS
        status = train_run(run_dir)
    keras.backend.clear_session()
    if status.get("state") != "completed":
        raise RuntimeError(f"the engine run ended {status.get('state')}: {status.get('error')}")
    epochs, _ = runs.read_history(run_dir)
    return [float(row["images_per_second"]) for row in epochs]


def plain_fit(config, jit_compile: bool = False) -> list[float]:
    """The same model, compile and data through a bare model.fit; images/s of each epoch."""
    from engine.data import load_dataset
    from engine.models import build_model
    from engine.training import NICENESS

    keras.utils.set_random_seed(config.train.seed)
    dataset = load_dataset(config.data)
    dataset.prepare()
    batch_size = config.train.batch_size
    model = build_model(config.model, dataset.image_size, dataset.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.train.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    timer = EpochTimer(len(dataset.indices("train")))
    with same_priority(NICENESS):
        model.fit(
            dataset.pipeline("train", batch_size, shuffle=True, seed=SEED, one_hot=True),
            validation_data=dataset.pipeline("validation", max(batch_size, 64), one_hot=True),
            epochs=config.train.epochs,
            callbacks=[timer],
            verbose=0,
            shuffle=False,
        )
    keras.backend.clear_session()
    return timer.speeds


def steady(speeds: list[float]) -> float:
    """Median images/s of the epochs after the first (the first includes tracing)."""
    return median(speeds[1:] if len(speeds) > 1 else speeds)


def run(data_root: Path, quick: bool, repeats: int) -> list[dict]:
    from engine.config import DataConfig, RunConfig
    from engine.data import load_dataset

    source = require_folder(data_root, "cats_vs_dogs")
    epochs = QUICK_EPOCHS if quick else EPOCHS
    with scratch_space("bench-training-") as scratch:
        folder = subset_folder(
            source, scratch / "images", QUICK_PER_CLASS if quick else PER_CLASS, splits=("train",)
        )
        config = RunConfig(data=DataConfig(spec=str(folder), image_size=IMAGE_SIZE)).replace(
            train={"epochs": epochs, "early_stopping_patience": 0, "seed": SEED}
        )
        dataset = load_dataset(config.data)
        dataset.prepare()  # decode once, untimed: both contenders read the same cache
        # Start TensorFlow's compute threads now, at our own priority, for every contender alike.
        keras.ops.convert_to_numpy(keras.ops.ones(1) + 1)
        train_images = len(dataset.indices("train"))
        steps = -(-train_images // config.train.batch_size)
        batched = config.replace(train={"steps_per_execution": 4})
        runs_dir = scratch / "runs"
        speeds = alternate(
            {
                "engine run": lambda: engine_run(config, runs_dir),
                "plain model.fit": lambda: plain_fit(config),
            },
            repeats,
        )
        # The variants only inform, and XLA compiles for long on a CPU: one run each.
        speeds |= alternate(
            {
                "engine, steps_per_execution=4": lambda: engine_run(batched, runs_dir),
                "plain model.fit, jit_compile=True": lambda: plain_fit(config, jit_compile=True),
            },
            1,
        )
    rate = {name: median([steady(each) for each in runs]) for name, runs in speeds.items()}
    engine, plain = rate["engine run"], rate["plain model.fit"]
    setup = (
        f"default_cnn, {IMAGE_SIZE}x{IMAGE_SIZE}, {train_images} training images ({steps} steps "
        f"of {config.train.batch_size}), {epochs} epochs; speed of the epochs after the first, "
        f"median over {len(speeds['engine run'])} repeat(s)"
    )
    spe_note = (
        f"; {steps} steps is not a multiple of 4, so the engine's epoch clock includes validation"
        if steps % 4
        else ""
    )
    return [
        result_row(
            "training: engine run vs plain model.fit",
            "images/s",
            engine,
            baseline=plain,
            goal="ratio ≥ 0.95",
            met=engine / plain >= 0.95,
            notes=f"{setup}; engine with history, status, checkpoints, TensorBoard, cancel checks",
        ),
        result_row(
            "training: engine steps_per_execution=4 vs plain model.fit",
            "images/s",
            rate["engine, steps_per_execution=4"],
            baseline=plain,
            notes=f"TrainConfig.steps_per_execution=4, one run{spe_note}",
        ),
        result_row(
            "training: plain fit jit_compile=True vs plain model.fit",
            "images/s",
            rate["plain model.fit, jit_compile=True"],
            baseline=plain,
            notes="XLA on the CPU, one run; its compile time falls in the first epoch, which is "
            "not compared",
        ),
    ]
