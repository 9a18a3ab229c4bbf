"""Optimizers, learning-rate schedules, loss and compile: TrainConfig -> a compiled Keras model.

Kept apart from the trainer so each piece has unit tests of its own (the schedule's values, the
optimizer's settings) without a whole run.
"""

from __future__ import annotations

import math

import keras

from engine.config import OPTIMIZERS, SCHEDULES, TrainConfig
from engine.errors import UserError

# Every model ends in a float32 softmax, so losses take probabilities, never logits.
LOSS_FROM_LOGITS = False


def learning_rate_schedule(
    train_config: TrainConfig, learning_rate: float, total_steps: int, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate or schedule of one fit() call of total_steps steps.

    warmup_cosine rises linearly from 0 over `warmup_epochs` epochs (at most a fifth of the steps),
    then follows a cosine down to 0 at total_steps; cosine decays from the start; constant and
    plateau (halved by a callback on a val_loss plateau) stay at learning_rate.
    """
    if train_config.schedule not in SCHEDULES:
        raise UserError(
            f"Unknown learning-rate schedule '{train_config.schedule}'; use one of {', '.join(SCHEDULES)}."
        )
    if not learning_rate > 0 or not math.isfinite(learning_rate):
        raise UserError(f"The learning rate must be a positive number, not {learning_rate}.")
    total_steps = max(int(total_steps), 1)
    if train_config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    if train_config.schedule == "warmup_cosine":
        warmup = min(int(train_config.warmup_epochs * steps_per_epoch), total_steps // 5)
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else learning_rate,
            decay_steps=max(total_steps - warmup, 1),
            warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return learning_rate


def ema_momentum(train_config: TrainConfig, total_steps: int) -> float:
    """The EMA momentum: as configured, or (0) one whose horizon is about 5% of the run's steps.

    A fixed 0.99 averages over the last ~100 steps whatever the run's length: too long for a
    2-epoch run (it would still mostly hold the initial weights), too short to smooth a long one.
    """
    if train_config.ema_momentum:
        return train_config.ema_momentum
    return min(0.999, max(0.9, 1 - 20 / max(total_steps, 1)))


def build_optimizer(
    train_config: TrainConfig,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    total_steps: int = 1000,
) -> keras.optimizers.Optimizer:
    """The configured optimizer; with `ema` on, it also keeps an exponential moving average."""
    name = train_config.optimizer
    if name not in OPTIMIZERS:
        raise UserError(f"Unknown optimizer '{name}'; use one of {', '.join(OPTIMIZERS)}.")
    if train_config.weight_decay < 0:
        raise UserError(f"The weight decay must be 0 or more, not {train_config.weight_decay}.")
    if train_config.ema and not 0 <= train_config.ema_momentum < 1:
        raise UserError(
            f"The EMA momentum must be at least 0 and below 1, not {train_config.ema_momentum}."
        )
    common = {
        "learning_rate": learning_rate,
        "use_ema": bool(train_config.ema),
        "ema_momentum": ema_momentum(train_config, total_steps),
    }
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=train_config.weight_decay, **common)
    # The others take weight decay too (decoupled, applied by Keras at each step) when asked for.
    decay = {"weight_decay": train_config.weight_decay} if train_config.weight_decay else {}
    if name == "adam":
        return keras.optimizers.Adam(**common, **decay)
    if name == "sgd":
        return keras.optimizers.SGD(momentum=0.9, nesterov=True, **common, **decay)
    return keras.optimizers.RMSprop(**common, **decay)


def build_loss(train_config: TrainConfig) -> keras.losses.Loss:
    if not 0 <= train_config.label_smoothing < 1:
        raise UserError(
            f"The label smoothing must be at least 0 and below 1, not {train_config.label_smoothing}."
        )
    return keras.losses.CategoricalCrossentropy(
        from_logits=LOSS_FROM_LOGITS, label_smoothing=train_config.label_smoothing
    )


def compile_model(
    model: keras.Model,
    train_config: TrainConfig,
    learning_rate: float,
    total_steps: int,
    steps_per_epoch: int,
) -> None:
    """Compile with the configured optimizer, schedule over total_steps, loss and accuracy."""
    schedule = learning_rate_schedule(train_config, learning_rate, total_steps, steps_per_epoch)
    model.compile(
        optimizer=build_optimizer(train_config, schedule, total_steps),
        loss=build_loss(train_config),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=train_config.steps_per_execution,
    )


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer applies at its current step (schedules evaluated)."""
    import numpy as np

    return float(np.asarray(optimizer.learning_rate))
