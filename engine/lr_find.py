"""A learning-rate finder as fastai's lr_find: train briefly on an exponentially growing rate.

`lr_find(config)` trains a throw-away copy of the configured model for up to `steps` batches while
the learning rate grows from `min_lr` to `max_lr`, records the loss of every batch, stops once the
smoothed loss has diverged, and suggests a rate by fastai's "valley" rule. Nothing is written to
disk except the dataset's decoded cache.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from engine.config import RunConfig
from engine.errors import UserError

if TYPE_CHECKING:
    from engine.data import Dataset

Progress = Callable[[int, int], None]  # (done, total)

SMOOTHING_BETA = 0.98  # fastai's AvgSmoothLoss
DIVERGENCE_FACTOR = 4.0  # stop once the smoothed loss exceeds 4x its minimum, as fastai
SKIP_END = 5  # fastai leaves out the last 5 points, where the loss shoots up, when suggesting
MIN_STEPS = 10


class ExponentialRamp(keras.optimizers.schedules.LearningRateSchedule):
    """min_lr at step 0, growing by a constant factor per step to max_lr at step steps - 1."""

    def __init__(self, min_lr: float, max_lr: float, steps: int) -> None:
        self.min_lr, self.max_lr, self.steps = float(min_lr), float(max_lr), int(steps)

    def __call__(self, step: Any) -> Any:
        fraction = keras.ops.cast(step, "float32") / float(max(self.steps - 1, 1))
        return self.min_lr * keras.ops.power(self.max_lr / self.min_lr, fraction)

    def get_config(self) -> dict[str, Any]:
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps}


def smooth_losses(losses: Sequence[float], beta: float = SMOOTHING_BETA) -> list[float]:
    """Exponential moving average with bias correction (Adam's), so early values are not pulled to 0."""
    average, smoothed = 0.0, []
    for count, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * float(loss)
        smoothed.append(average / (1 - beta**count))
    return smoothed


def suggest_learning_rate(
    learning_rates: Sequence[float], smoothed_losses: Sequence[float]
) -> float:
    """fastai's "valley" rule: the middle of the longest descending stretch of the smoothed curve.

    As fastai, the first tenth of the points (noise before learning starts) and the last five (the
    blow-up) are left out. The "stretch" is the longest strictly decreasing subsequence of the
    smoothed losses; its middle index is the suggestion. The result is capped at the rate of the
    smallest smoothed loss, so it never lies in the rising part of the curve, and it is never the
    last point. With too few points for the rule, the smallest rate tried is returned.
    """
    rates = np.asarray(learning_rates, dtype=float)
    losses = np.asarray(smoothed_losses, dtype=float)
    if len(rates) != len(losses):
        raise ValueError(
            f"learning_rates and smoothed_losses differ in length ({len(rates)} and {len(losses)})."
        )
    finite = np.flatnonzero(~np.isfinite(losses))
    end = int(finite[0]) if len(finite) else len(losses)
    start = len(rates) // 10
    stop = end - SKIP_END
    if stop - start < 3:  # too short once trimmed: keep the start, drop only the last point
        start, stop = 0, end - 1
    if stop - start < 2:
        return float(rates[0])
    window = losses[start:stop]
    # Longest decreasing subsequence, O(n^2) as fastai; n is at most a few hundred.
    length = np.ones(len(window), dtype=int)
    for i in range(1, len(window)):
        earlier = length[:i][window[:i] > window[i]]
        if len(earlier):
            length[i] = earlier.max() + 1
    valley_end = int(np.argmax(length))  # the first index reaching the longest length
    valley_start = valley_end - int(length[valley_end]) + 1
    middle = start + (valley_start + valley_end) // 2
    lowest = start + int(np.argmin(window))
    return float(rates[min(middle, lowest)])


class _LossRecorder(keras.callbacks.Callback):
    """Records each batch's loss and rate; stops on divergence, as fastai's LRFinder callback."""

    def __init__(self, steps: int, progress: Progress | None) -> None:
        super().__init__()
        self.steps, self.progress = steps, progress
        self.learning_rates: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.best = math.inf
        self.diverged_at: float | None = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._rate = float(np.asarray(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            self.diverged_at = self._rate
            self.model.stop_training = True
            return
        self.learning_rates.append(self._rate)
        self.losses.append(loss)
        smoothed = smooth_losses(self.losses)[-1]  # a few hundred points at most: cheap
        self.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        if not math.isfinite(smoothed) or smoothed > DIVERGENCE_FACTOR * self.best:
            self.diverged_at = self._rate
            self.model.stop_training = True
        if self.progress:
            self.progress(len(self.losses), self.steps)


def lr_find(
    config: RunConfig,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 100,
    progress: Progress | None = None,
    dataset: Dataset | None = None,
    decode_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the learning-rate range test for `config` and suggest a learning rate.

    The rate grows exponentially from min_lr (first step) to max_lr (step `steps`); training stops
    early once the smoothed loss (beta 0.98, bias-corrected) exceeds 4x its minimum or a loss is
    not finite. The suggestion follows fastai's "valley" rule (see suggest_learning_rate). Seeded by
    config.train.seed, so the same config gives the same curve.

    The optimizer, weight decay and label smoothing are the config's, without EMA and without the
    schedule; augmentation is on. Transfer models in feature_extraction or two_phase mode train only
    their head, so the suggestion is the head's rate. In fine_tuning mode the rates are those the
    unfrozen layers get, and training applies learning_rate x fine_tune_learning_rate_factor, so
    set learning_rate to the suggestion divided by that factor.

    progress(done, total) is called after every step (and may raise to cancel), and once with
    (steps, steps) at the end, also after an early stop; decode_progress(done, total) reports the
    first decoding of the images. Pass a loaded `dataset` (config.data is then ignored) to skip
    loading it again.

    Returns {"suggested_learning_rate", "learning_rates", "losses", "smoothed_losses", "model",
    "steps" (the steps done), "stopped_early", "diverged_learning_rate" (None when it did not)}.
    """
    check_range(min_lr, max_lr, steps)
    from engine import augment, models, optim

    keras.utils.set_random_seed(config.train.seed)
    if dataset is None:
        from engine.data import load_dataset

        dataset = load_dataset(config.data)
    dataset.prepare(progress=decode_progress)

    train_config = config.train
    train_data = dataset.pipeline(
        "train", train_config.batch_size, shuffle=True, seed=train_config.seed, one_hot=True
    ).repeat()
    layers = augment.build_augmentation(config.augment, dataset.image_size, seed=train_config.seed)
    train_data = augment.apply_to_dataset(train_data, layers)

    model = models.build_model(config.model, dataset.image_size, dataset.num_classes)
    finder_config = dataclasses.replace(train_config, ema=False)
    model.compile(
        optimizer=optim.build_optimizer(finder_config, ExponentialRamp(min_lr, max_lr, steps)),
        loss=optim.build_loss(finder_config),
        steps_per_execution=1,  # the recorder needs every batch
    )
    recorder = _LossRecorder(steps, progress)
    # One batch per epoch: Keras reports the mean loss of the epoch so far, which is then exactly
    # the loss of that batch. The repeated pipeline's iterator carries on across epochs.
    model.fit(
        train_data,
        epochs=steps,
        steps_per_epoch=1,
        callbacks=[recorder],
        verbose=0,
        shuffle=False,
    )
    del model
    if progress:
        progress(steps, steps)
    stopped_early = len(recorder.losses) < steps
    return {
        "suggested_learning_rate": suggest_learning_rate(
            recorder.learning_rates, recorder.smoothed
        ),
        "learning_rates": recorder.learning_rates,
        "losses": recorder.losses,
        "smoothed_losses": recorder.smoothed,
        "model": config.model.name,
        "steps": len(recorder.losses),
        "stopped_early": stopped_early,
        "diverged_learning_rate": recorder.diverged_at,
    }


def check_range(min_lr: float, max_lr: float, steps: int) -> None:
    """Refuse a range the finder cannot sweep, with a sentence naming the setting."""
    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise UserError(
            f"The learning-rate range must satisfy 0 < min_lr < max_lr, not min_lr={min_lr}, max_lr={max_lr}."
        )
    if steps < MIN_STEPS:
        raise UserError(f"The learning-rate finder needs at least {MIN_STEPS} steps, not {steps}.")
