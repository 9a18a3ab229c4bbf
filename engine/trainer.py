"""The trainer: a RunConfig and a prepared Dataset -> a fitted model. It only fits.

No run folder, no signals, no printing: the caller passes callbacks (engine.callbacks) and
decides what to record. Model selection uses the validation split only; without one, there is
none (no early stopping, no plateau schedule, the last weights are the result), because the
test split must never choose the model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import keras

from engine import augment, models
from engine.callbacks import BestWeights, Cancelled, EmaValidation
from engine.config import RunConfig
from engine.errors import UserError
from engine.optim import compile_model

# Two-phase fine-tuning: each fine-tuning step back-propagates into part of the base, so it costs
# about this many frozen-base steps (used only to fit epochs into a time budget).
FINE_TUNE_STEP_COST = 2.0


@dataclass
class FitResult:
    model: keras.Model
    cancelled: bool
    epochs_done: int
    best_epoch: int  # 0 without model selection
    best_val_loss: float | None
    model_selection: bool  # True when a validation split chose the weights
    phases: list[dict] = field(default_factory=list)


class Trainer:
    """Fits config's model on dataset under a tf.distribute strategy.

    `fit(callbacks)` runs one phase, or two for two_phase transfer learning: the head with the
    base frozen, then the best head is restored and the top of the base is fine-tuned with its
    own schedule and a fresh early stopping.
    """

    def __init__(self, config: RunConfig, dataset, strategy=None):
        self.config = config
        self.dataset = dataset
        self.strategy = strategy or _default_strategy()
        train = config.train
        if train.epochs < 1:
            raise UserError(
                f"The number of epochs must be at least 1, not {train.epochs} (0 is resolved "
                "from the time budget before training)."
            )
        if train.batch_size < 1:
            raise UserError(f"The batch size must be at least 1, not {train.batch_size}.")
        self.train_count = len(dataset.indices("train"))
        self.steps_per_epoch = math.ceil(self.train_count / train.batch_size)
        self.validation_split = "validation" if len(dataset.indices("validation")) else None
        self.two_phase = models.is_transfer(config.model.name) and config.model.mode == "two_phase"
        self.head_epochs = (
            min(config.model.head_epochs or max(1, train.epochs // 2), train.epochs)
            if self.two_phase
            else 0
        )

    @property
    def model_selection(self) -> bool:
        return self.validation_split is not None

    def train_data(self):
        train = self.config.train
        data = self.dataset.pipeline(
            "train", train.batch_size, shuffle=True, seed=train.seed, one_hot=True
        )
        layers = augment.build_augmentation(
            self.config.augment, self.dataset.image_size, seed=train.seed
        )
        return shard_by_data(
            augment.apply_to_dataset(data, layers, mixup=self.config.augment.mixup, seed=train.seed)
        )

    def validation_data(self):
        if self.validation_split is None:
            return None
        return shard_by_data(
            self.dataset.pipeline(
                self.validation_split, max(self.config.train.batch_size, 64), one_hot=True
            )
        )

    def build_model(self) -> keras.Model:
        """Seed everything, build and compile the model for the first phase."""
        config = self.config
        keras.utils.set_random_seed(config.train.seed)
        with self.strategy.scope():
            model = models.build_model(
                config.model, self.dataset.image_size, self.dataset.num_classes
            )
            learning_rate = config.train.learning_rate
            if models.is_transfer(config.model.name) and config.model.mode == "fine_tuning":
                learning_rate = models.fine_tune_learning_rate(config.model, learning_rate)
            epochs = self.head_epochs or config.train.epochs
            compile_model(
                model,
                config.train,
                learning_rate,
                self.steps_per_epoch * epochs,
                self.steps_per_epoch,
            )
        return model

    def selection_callbacks(self) -> list[keras.callbacks.Callback]:
        """Early stopping and the plateau schedule, on the validation split only."""
        train = self.config.train
        if not self.model_selection:
            return []
        chosen: list[keras.callbacks.Callback] = []
        if train.early_stopping_patience > 0:
            chosen.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=train.early_stopping_patience
                )
            )
        if train.schedule == "plateau":
            chosen.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss", factor=0.5, patience=2, min_lr=1e-6
                )
            )
        return chosen

    def fit(
        self,
        callbacks: list[keras.callbacks.Callback],
        model: keras.Model | None = None,
        initial_epoch: int = 0,
    ) -> FitResult:
        """Train; `callbacks` see every epoch of every phase. Cancelled ends it at once.

        With initial_epoch (a continued run, its model loaded from a checkpoint), one phase
        trains epochs initial_epoch+1 .. train.epochs; best_epoch then counts the new ones only.
        """
        config = self.config
        model = model if model is not None else self.build_model()
        train_data, validation_data = self.train_data(), self.validation_data()
        best = BestWeights()
        ema = EmaValidation()
        counter = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: done.__setitem__(0, epoch + 1)
        )
        done = [initial_epoch]
        class_weight = _class_weights(self.dataset) if config.train.class_weights else None
        phases: list[dict] = []

        def run_phase(initial_epoch: int, epochs: int, name: str) -> bool:
            """One fit() call; False when it was cancelled."""
            phases.append({"phase": name, "first_epoch": initial_epoch + 1, "last_epoch": epochs})
            try:
                model.fit(
                    train_data,
                    validation_data=validation_data,
                    initial_epoch=initial_epoch,
                    epochs=epochs,
                    callbacks=[
                        ema,
                        best,
                        counter,
                        keras.callbacks.TerminateOnNaN(),  # the safety net: a diverged run stops
                        *self.selection_callbacks(),
                        *callbacks,
                    ],
                    class_weight=class_weight,
                    verbose=0,
                    shuffle=False,  # the pipeline shuffles; Keras would only warn
                )
            except Cancelled:
                ema.restore_raw()
                return False
            return True

        if initial_epoch:
            finished = run_phase(initial_epoch, config.train.epochs, "continued")
        else:
            first_epochs = self.head_epochs or config.train.epochs
            finished = run_phase(0, first_epochs, "head" if self.two_phase else "train")
        if (
            finished
            and not initial_epoch
            and self.two_phase
            and self.head_epochs < config.train.epochs
        ):
            # Phase 2 always runs, even when phase 1 stopped early: it starts from the best head.
            best.restore(model)
            with self.strategy.scope():
                models.unfreeze_for_fine_tuning(model, config.model)
                compile_model(
                    model,
                    config.train,
                    models.fine_tune_learning_rate(config.model, config.train.learning_rate),
                    self.steps_per_epoch * (config.train.epochs - self.head_epochs),
                    self.steps_per_epoch,
                )
            for callback in callbacks:
                if hasattr(callback, "on_phase"):
                    callback.on_phase("fine-tuning", model)
            finished = run_phase(self.head_epochs, config.train.epochs, "fine-tuning")
        return FitResult(
            model=model,
            cancelled=not finished,
            epochs_done=done[0],
            best_epoch=best.best_epoch if self.model_selection else 0,
            best_val_loss=best.best_val_loss if self.model_selection else None,
            model_selection=self.model_selection,
            phases=phases,
        )


def shard_by_data(data):
    """Let each worker of a MultiWorkerMirroredStrategy keep its share of every batch.

    The pipeline reads one cache file, so there are no files to shard by; every worker walks the
    same seeded order and keeps its part (tf.data's DATA policy). One worker ignores it.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def _default_strategy():
    import tensorflow as tf

    return tf.distribute.get_strategy()


def _class_weights(dataset) -> dict[int, float]:
    """Balanced weights (scikit-learn's compute_class_weight), so each class counts alike."""
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    labels = dataset.labels[dataset.indices("train")]
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = {int(i): 1.0 for i in range(dataset.num_classes)}
    result.update({int(c): float(w) for c, w in zip(present, weights, strict=True)})
    return result


def with_epochs(config: RunConfig, epochs: int) -> RunConfig:
    """The config with train.epochs set (used when epochs are fitted to a time budget)."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=int(epochs)))
