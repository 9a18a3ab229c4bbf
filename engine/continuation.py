"""Continuing a run: which checkpoint, the pending request, the history cut back to the checkpoint,
and (Keras, imported only there) the checkpoint's model with its optimizer state and the schedule of
the new epochs. engine.run_admin checks and queues a continuation; engine.fit_run runs it.

Every checkpoint has a sidecar with the epoch it holds (last.json beside last.keras): a run
continues from the later of last.keras and best.keras, and history rows after that epoch (from a
run interrupted by a kill or a power loss) are dropped, so the epochs follow on without gaps.

The learning rate of a continuation: with a cosine schedule (the default, warmup_cosine included)
a fresh cosine over the new epochs, without warm-up (the optimizer's moments are restored), from
the larger of the rate the run had reached and a tenth of its configured rate. A finished cosine
has reached about 0, where more epochs would learn nothing; a tenth of the configured rate
fine-tunes without undoing what was learned, and a run interrupted early goes on at the rate it
had. Constant and plateau schedules keep the rate they had reached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

from engine.errors import UserError
from engine.jsonio import DamagedFile, atomic_write_bytes, dumps, read_json_object, read_jsonl

RESUME_FILE = "resume.json"  # {"checkpoint", "from_epoch", "epochs", "total_epochs"} while pending
CHECKPOINTS = ("last.keras", "best.keras")
RESTART_FRACTION = 0.1  # of the configured learning rate: the least a continuation starts at
COSINE_SCHEDULES = ("cosine", "warmup_cosine")


def checkpoint_epoch(run_dir: Path, checkpoint: str) -> int | None:
    """The epoch a checkpoint holds, from its sidecar (last.json beside last.keras)."""
    try:
        value = read_json_object(Path(run_dir) / sidecar_name(checkpoint)) or {}
    except DamagedFile:
        return None
    epoch = value.get("epoch")
    return epoch if type(epoch) is int and epoch >= 1 else None


def sidecar_name(checkpoint: str) -> str:
    return checkpoint.removesuffix(".keras") + ".json"


def latest_checkpoint(run_dir: Path) -> tuple[str, int]:
    """(file name, epoch) of the checkpoint to continue from: the later of last.keras and
    best.keras (last.keras is saved at most every 30 s, best.keras at every improvement)."""
    run_dir = Path(run_dir)
    try:
        status = read_json_object(run_dir / "status.json") or {}
    except DamagedFile:
        status = {}
    found = []
    # Runs saved before the sidecars existed: their status names the epochs.
    for checkpoint, fallback in zip(CHECKPOINTS, ("epochs_done", "best_epoch"), strict=True):
        if (run_dir / checkpoint).is_file():
            epoch = checkpoint_epoch(run_dir, checkpoint) or status.get(fallback)
            if type(epoch) is int and epoch >= 1:
                found.append((epoch, checkpoint == "last.keras", checkpoint))
    if not found:
        raise UserError(
            f"Run {run_dir.name} has no saved model to continue from (it ended before its first "
            "epoch finished); train it again instead."
        )
    epoch, _, checkpoint = max(found)
    return checkpoint, epoch


def pending_resume(run_dir: Path) -> dict | None:
    """The continuation a worker was started for (resume.json), or None for a new run."""
    try:
        request = read_json_object(Path(run_dir) / RESUME_FILE)
    except DamagedFile as error:
        raise UserError(
            f"Run {Path(run_dir).name} cannot be continued: {error.reason}; continue it again."
        ) from None
    if request is None:
        return None
    start, total = request.get("from_epoch"), request.get("total_epochs")
    if (
        request.get("checkpoint") not in CHECKPOINTS
        or type(start) is not int
        or type(total) is not int
        or not 1 <= start < total
    ):
        raise UserError(
            f"Run {Path(run_dir).name} cannot be continued: {RESUME_FILE} is not one that "
            "engine.run_admin wrote; continue it again."
        )
    return request


def cancelled_early(start: int) -> str:
    """What status.json "message" says of a run cancelled before its first (new) epoch ended."""
    if start:
        return (
            "Cancelled before the first new epoch finished; the run keeps its models from "
            f"epoch {start}."
        )
    return "Cancelled before the first epoch finished; no model was kept."


def finish_resume(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (Path(run_dir) / RESUME_FILE).unlink()


def truncate_history(run_dir: Path, epoch: int) -> list[dict]:
    """Cut history.jsonl back to the rows of epochs 1..epoch (those the checkpoint has seen), so
    the continued epochs follow on without duplicates; returns the epoch rows kept."""
    path = Path(run_dir) / "history.jsonl"
    rows = [row for row in read_jsonl(path) if _row_epoch(row) <= epoch]
    atomic_write_bytes(path, "".join(dumps(row) + "\n" for row in rows).encode())
    return [row for row in rows if "step" not in row]


def _row_epoch(row: dict) -> float:
    epoch = row.get("epoch")
    return epoch if type(epoch) is int else float("inf")


def load_checkpoint(path: Path, strategy):
    """The checkpoint's model, compiled with its saved optimizer (state included) when it has one."""
    import keras

    import engine.models  # noqa: F401  registers the custom layers saved models refer to

    try:
        with strategy.scope():
            return keras.models.load_model(path, compile=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean the same
        raise UserError(
            f"The checkpoint {path.name} of run {path.parent.name} could not be loaded "
            f"({type(error).__name__}); it may be damaged: train the run again instead."
        ) from None


def continue_schedule(model, trainer, earlier: list[dict], new_epochs: int) -> bool:
    """Give a loaded model the continuation's learning rate (see the module's docstring); True
    when its optimizer state was restored from the checkpoint, False when it starts afresh."""
    import keras

    from engine.optim import compile_model, current_learning_rate

    train = trainer.config.train
    new_steps = max(trainer.steps_per_epoch * new_epochs, 1)
    optimizer = getattr(model, "optimizer", None)
    restored = optimizer is not None and int(optimizer.iterations.numpy()) > 0
    if restored:
        reached = current_learning_rate(optimizer)
    else:
        reached = earlier[-1].get("learning_rate") if earlier else None
    if not isinstance(reached, (int, float)) or not math.isfinite(reached) or reached < 0:
        reached = 0.0
    cosine = train.schedule in COSINE_SCHEDULES
    peak = max(reached, train.learning_rate * RESTART_FRACTION) if cosine else reached
    peak = peak or train.learning_rate
    if not restored:
        schedule = dataclasses.replace(train, schedule="cosine" if cosine else train.schedule)
        with trainer.strategy.scope():
            compile_model(model, schedule, peak, new_steps, trainer.steps_per_epoch)
        return False
    if cosine:
        # The optimizer's step count goes on from the checkpoint's: a "warm-up" that holds the
        # peak for those steps makes the decay start at the first new step.
        optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
            peak,
            decay_steps=new_steps,
            warmup_target=peak,
            warmup_steps=int(optimizer.iterations.numpy()),
        )
    return True


def earlier_phases(run_dir: Path, start: int) -> list[dict]:
    """The phases of a continued run's status up to epoch `start` (those the checkpoint saw)."""
    if not start:
        return []
    try:
        phases = (read_json_object(Path(run_dir) / "status.json") or {}).get("phases")
    except DamagedFile:
        return []
    kept = []
    for phase in phases if isinstance(phases, list) else []:
        first, last = (
            phase.get(key) if isinstance(phase, dict) else None
            for key in ("first_epoch", "last_epoch")
        )
        if type(first) is int and type(last) is int and first <= start:
            kept.append(phase | {"last_epoch": min(last, start)})
    return kept
