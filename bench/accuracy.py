"""Accuracy: the engine's default recipe against three notebook recipes, at an equal training budget.

Every recipe trains for the same wall-clock budget (--budget-minutes, default 15): its epochs are
fitted to the budget by `engine.budget.fit_epochs_to_budget` on this machine, once per dataset
and recipe (the first seed); the other seeds train the same number of epochs, so their per-epoch
curves line up. The recipes:

- default: `engine.recipe.resolve(dataset)` with no user choice but the budget and the seed (no
  ImageNet transfer: the notebook recipes train from scratch too);
- tutorial: tutorial_cnn with the TensorFlow image classification tutorial's augmentation
  (RandomFlip horizontal, RandomRotation 0.1, RandomZoom 0.1), Adam 1e-3 constant;
- catsdogs: catsdogs_cnn with ImageDataGenerator-style augmentation (rotation 40 degrees, width
  and height shift 0.2, zoom 0.2, horizontal flip; the engine has no shear), Adam 1e-3 constant;
- eurosat: eurosat_cnn, Adam 1e-3 constant, no augmentation.

The notebook recipes use no label smoothing, no EMA, no weight decay and no early stopping. All
recipes share the data config the default resolves (image size, splits with split_seed 42) and
batch 32. Each run is a child process (`python -m bench.accuracy JOB RESULT`), so no run inherits
another's memory or TensorFlow state. A bench-only callback evaluates the test split after every
epoch for the time-to-accuracy curve; its own seconds are left out of the training time, and it
never chooses anything. The final model's test accuracy is evaluated once at the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    PROJECT_ROOT,
    RESULTS_DIR,
    require_folder,
    result_row,
    scratch_space,
    subprocess_environment,
    subset_folder,
)

DATASETS = ("digits", "mnist_subset", "cifar10_subset", "cats_vs_dogs", "flowers128")
GOAL_DATASETS = ("cats_vs_dogs", "flowers128")  # where the default must be 3x faster
GOAL_SPEEDUP = 3.0
DEFAULT_BUDGET_MINUTES, QUICK_BUDGET_MINUTES = 15.0, 0.1
DEFAULT_SEEDS, FIRST_SEED = 3, 42
QUICK_PER_CLASS = 20
CURVES_FILE = RESULTS_DIR / "latest.accuracy.json"  # every run's per-epoch curve

NOTEBOOK_TRAIN = {
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "schedule": "constant",
    "label_smoothing": 0.0,
    "ema": False,
    "early_stopping_patience": 0,
    "batch_size": 32,
}
# Recipe -> (model, augmentation). The default recipe comes from engine.recipe.resolve.
NOTEBOOK_RECIPES: dict[str, tuple[str, dict]] = {
    "tutorial": ("tutorial_cnn", {"horizontal_flip": True, "rotation": 0.1, "zoom": 0.1}),
    # ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
    # zoom_range=0.2, horizontal_flip=True); its shear_range=0.2 has no engine equivalent.
    "catsdogs": (
        "catsdogs_cnn",
        {"rotation": 40 / 360, "translation": 0.2, "zoom": 0.2, "horizontal_flip": True},
    ),
    "eurosat": ("eurosat_cnn", {}),
}
RECIPES = ("default", *NOTEBOOK_RECIPES)


# ----- one run, in a child process ----------------------------------------------------------
def recipe_config(recipe: str, spec: str, seed: int, budget_minutes: float):
    """The RunConfig of a recipe on a dataset, epochs=0 (fitted to the budget)."""
    from engine.config import AugmentConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
    from engine.data import load_dataset
    from engine.recipe import resolve

    user = {"data": {"spec": spec}, "train": {"seed": seed, "time_budget_minutes": budget_minutes}}
    default, _ = resolve(load_dataset(DataConfig(spec=spec)), user)
    if recipe == "default":
        return default
    model, augment = NOTEBOOK_RECIPES[recipe]
    return RunConfig(
        data=default.data,
        augment=AugmentConfig(**augment),
        model=ModelConfig(name=model),
        train=TrainConfig(
            **NOTEBOOK_TRAIN, epochs=0, seed=seed, time_budget_minutes=budget_minutes
        ),
    )


def train_one(job: dict) -> dict:
    """Train one recipe on one dataset with one seed; its test accuracy and per-epoch curve."""
    from engine.devices import quiet_tensorflow_start

    quiet_tensorflow_start()
    import keras
    import numpy as np

    from engine.budget import fit_epochs_to_budget
    from engine.data import load_dataset
    from engine.devices import choose_strategy
    from engine.evaluation import compute_metrics, predict_split
    from engine.trainer import Trainer, with_epochs

    class TestCurve(keras.callbacks.Callback):
        """Bench only: test accuracy after each epoch, at the training seconds so far."""

        def __init__(self):
            super().__init__()
            self.started, self.excluded, self.points = time.monotonic(), 0.0, []

        def training_seconds(self) -> float:
            return time.monotonic() - self.started - self.excluded

        def on_epoch_end(self, epoch, logs=None):
            seconds = self.training_seconds()
            began = time.monotonic()
            _, labels, probabilities = predict_split(self.model, dataset, "test")
            accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
            self.points.append({"epoch": epoch + 1, "seconds": seconds, "test_accuracy": accuracy})
            self.excluded += time.monotonic() - began

    strategy, _ = choose_strategy()
    config = recipe_config(job["recipe"], job["spec"], job["seed"], job["budget_minutes"])
    dataset = load_dataset(config.data)
    dataset.prepare()
    estimate = None
    if job.get("epochs"):
        config = with_epochs(config, job["epochs"])
    else:
        epochs, estimate = fit_epochs_to_budget(config, dataset, strategy)
        config = with_epochs(config, epochs)
    trainer = Trainer(config, dataset, strategy)
    model = trainer.build_model()
    curve = TestCurve()
    result = trainer.fit([curve], model)
    train_seconds = curve.training_seconds()
    _, labels, probabilities = predict_split(result.model, dataset, "test")
    metrics = compute_metrics(labels, probabilities, dataset.class_names, split="test")
    return {
        **{key: job[key] for key in ("dataset", "recipe", "seed", "budget_minutes")},
        "model": config.model.name,
        "image_size": dataset.image_size,
        "images": {
            split: int(len(dataset.indices(split))) for split in ("train", "validation", "test")
        },
        "epochs": config.train.epochs,
        "epochs_done": result.epochs_done,
        "budget_estimate": estimate,
        "train_seconds": round(train_seconds, 2),
        "test_accuracy": metrics["accuracy"],
        "test_macro_f1": metrics["macro_avg"]["f1-score"],
        "curve": curve.points,
    }


def child_main(arguments: list[str]) -> int:
    """`python -m bench.accuracy JOB.json RESULT.json`: one run, its result written as JSON."""
    from engine.jsonio import write_json

    job = json.loads(Path(arguments[0]).read_text(encoding="utf-8"))
    write_json(arguments[1], train_one(job))
    return 0


def train_in_child(job: dict, scratch: Path) -> dict:
    """Run train_one(job) in a child process; its result, or {"error": ...} when it failed."""
    name = f"{job['dataset']}-{job['recipe']}-{job['seed']}"
    job_file, result_file = scratch / "jobs" / f"{name}.json", scratch / "jobs" / f"{name}.out.json"
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(job), encoding="utf-8")
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "bench.accuracy", str(job_file), str(result_file)],
        cwd=PROJECT_ROOT,
        env=subprocess_environment(),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0 or not result_file.exists():
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return job | {"error": tail[:300]}
    result = json.loads(result_file.read_text(encoding="utf-8"))
    return result | {"wall_seconds": round(time.monotonic() - started, 1)}


# ----- summaries and rows -----------------------------------------------------------------------
def spread(values: list[float]) -> str:
    """mean ± std (min-max) of a few accuracies."""
    if not values:
        return "no run finished"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f} ({min(values):.3f}-{max(values):.3f})"


def mean_curve(runs: list[dict]) -> list[tuple[float, float]]:
    """(mean seconds, mean test accuracy) per epoch over the seeds, for the epochs all of them ran."""
    curves = [run["curve"] for run in runs if run.get("curve")]
    if not curves:
        return []
    return [
        (
            statistics.fmean(curve[epoch]["seconds"] for curve in curves),
            statistics.fmean(curve[epoch]["test_accuracy"] for curve in curves),
        )
        for epoch in range(min(len(curve) for curve in curves))
    ]


def time_to_accuracy_row(dataset: str, default: list[dict], tutorial: list[dict]) -> dict:
    """Seconds the default needs to reach the tutorial recipe's best mean accuracy, vs the tutorial's."""
    default_curve, tutorial_curve = mean_curve(default), mean_curve(tutorial)
    has_goal = dataset in GOAL_DATASETS
    name = f"accuracy: {dataset}, time to the tutorial recipe's best, default vs tutorial recipe"
    if not default_curve or not tutorial_curve:
        return result_row(
            name,
            "training seconds",
            None,
            goal="runs",
            met=False,
            notes="a recipe has no finished run",
        )
    tutorial_seconds, target = max(tutorial_curve, key=lambda point: point[1])
    reached = [seconds for seconds, accuracy in default_curve if accuracy >= target]
    default_seconds = reached[0] if reached else None
    best_default = max(accuracy for _, accuracy in default_curve)
    notes = (
        f"tutorial recipe's best mean test accuracy {target:.3f} after {tutorial_seconds:.0f} s; "
        + (
            f"the default reaches it after {default_seconds:.0f} s"
            if reached
            else f"the default never reaches it (its best {best_default:.3f})"
        )
        + f"; mean curves over {len(default)} seed(s), epochs all seeds ran; test accuracy per "
        "epoch is measured by the bench and its time left out"
    )
    met = None
    if has_goal:
        met = default_seconds is not None and tutorial_seconds / default_seconds >= GOAL_SPEEDUP
    return result_row(
        name,
        "training seconds",
        default_seconds,
        baseline=tutorial_seconds,
        higher_is_better=False,
        goal=f"ratio ≥ {GOAL_SPEEDUP:g} (default ≤ 1/3 of the time)" if has_goal else "report only",
        met=met,
        notes=notes,
    )


def describe(recipe: str, runs: list[dict]) -> str:
    done = [run for run in runs if "test_accuracy" in run]
    if not done:
        return f"{recipe}: no run finished"
    seconds = statistics.fmean(run["train_seconds"] for run in done)
    return (
        f"{recipe} ({done[0]['model']}): {spread([run['test_accuracy'] for run in done])} over "
        f"{len(done)} seed(s), {done[0]['epochs']} epochs, {seconds:.0f} s training"
    )


def dataset_rows(dataset: str, runs: dict[str, list[dict]], budget_minutes: float) -> list[dict]:
    """Per notebook recipe a row of mean test accuracies, then the time-to-accuracy row."""
    finished = {
        recipe: [run for run in recipe_runs if "test_accuracy" in run]
        for recipe, recipe_runs in runs.items()
    }
    first = next((run for recipe_runs in finished.values() for run in recipe_runs), {})
    images = first.get("images", {})
    setup = (
        f"train/validation/test {images.get('train')}/{images.get('validation')}/"
        f"{images.get('test')} images at {first.get('image_size')} px, "
        f"{budget_minutes:g}-minute budget per run"
    )
    rows = []
    for recipe in (name for name in runs if name != "default"):
        default_values = [run["test_accuracy"] for run in finished["default"]]
        other_values = [run["test_accuracy"] for run in finished[recipe]]
        rows.append(
            result_row(
                f"accuracy: {dataset}, default recipe vs {recipe} recipe",
                "test accuracy (mean over seeds)",
                statistics.fmean(default_values) if default_values else None,
                baseline=statistics.fmean(other_values) if other_values else None,
                notes=f"{setup}; {describe('default', runs['default'])}; "
                f"{describe(recipe, runs[recipe])}",
            )
        )
    rows.append(time_to_accuracy_row(dataset, finished["default"], finished["tutorial"]))
    for recipe_runs in runs.values():
        for run in recipe_runs:
            if "error" in run:
                rows.append(
                    result_row(
                        f"accuracy: {dataset}, {run['recipe']} recipe, seed {run['seed']}: failed",
                        "-",
                        None,
                        goal="runs",
                        met=False,
                        notes=run["error"],
                    )
                )
    return rows


# ----- the comparison ---------------------------------------------------------------------------
def dataset_spec(data_root: Path, dataset: str, quick: bool, scratch: Path) -> str:
    if dataset == "digits":
        return "digits"  # built in and small: whole even in quick mode
    folder = require_folder(data_root, dataset)
    return str(subset_folder(folder, scratch / dataset, QUICK_PER_CLASS) if quick else folder)


def run(
    data_root: Path,
    quick: bool,
    repeats: int,
    budget_minutes: float | None = None,
    seeds: int | None = None,
    datasets: list[str] | None = None,
    recipes: list[str] | None = None,
) -> list[dict]:
    """Every recipe x dataset x seed; `repeats` does not apply (the seeds are the repeats).

    `recipes` narrows the notebook recipes; default and tutorial always run (the time-to-accuracy
    row compares them)."""
    chosen = tuple(
        recipe for recipe in RECIPES if recipe in {"default", "tutorial", *(recipes or RECIPES)}
    )
    budget = budget_minutes or (QUICK_BUDGET_MINUTES if quick else DEFAULT_BUDGET_MINUTES)
    seed_values = [FIRST_SEED + i for i in range(seeds or (1 if quick else DEFAULT_SEEDS))]
    rows: list[dict] = []
    record: dict = {"budget_minutes": budget, "seeds": seed_values, "quick": quick, "runs": []}
    with scratch_space("bench-accuracy-") as scratch:  # one decoded cache shared by all runs
        for dataset in datasets or DATASETS:
            spec = dataset_spec(data_root, dataset, quick, scratch)
            runs: dict[str, list[dict]] = {recipe: [] for recipe in chosen}
            epochs: dict[str, int] = {}  # fitted in the first seed's run, reused by the others
            for position, seed in enumerate(seed_values):
                shift = position % len(chosen)  # who goes first rotates, so drift hits all alike
                for recipe in chosen[shift:] + chosen[:shift]:
                    print(f"  {dataset}, {recipe} recipe, seed {seed}: {budget:g} min", flush=True)
                    job = {
                        "dataset": dataset,
                        "spec": spec,
                        "recipe": recipe,
                        "seed": seed,
                        "budget_minutes": budget,
                        "epochs": epochs.get(recipe, 0),
                    }
                    result = train_in_child(job, scratch)
                    if "error" in result:
                        print(f"    failed: {result['error']}", flush=True)
                    else:
                        epochs.setdefault(recipe, result["epochs"])
                        print(
                            f"    {result['epochs_done']} epochs, {result['train_seconds']:.0f} s "
                            f"training, test accuracy {result['test_accuracy']:.3f}",
                            flush=True,
                        )
                    runs[recipe].append(result)
                    record["runs"].append(result)
                    write_record(record)  # a long comparison keeps what it has if it stops
            rows += dataset_rows(dataset, runs, budget)
    return rows


def write_record(record: dict) -> None:
    from engine.jsonio import write_json

    write_json(CURVES_FILE, record)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
