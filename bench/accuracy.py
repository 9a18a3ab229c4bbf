"""Accuracy: test accuracy and training time of the engine's defaults against a reference CNN.

Every run is `python -m engine train --dataset X --model M --epochs E` in a child process with
its own fresh cache folder, so each one decodes its data as a first run would: the engine's
defaults everywhere else (image size from the data, Adam 1e-3, batch 32, early stopping after 6
epochs without a better validation loss, 15% validation and 15% test carved where the source has
none). M is the default model, default_cnn, and the reference tutorial_cnn (the TensorFlow image
classification tutorial's CNN). There is no goal: the rows report. Each run is long, so every
run happens once whatever --repeats says.

Epochs are capped per dataset so that the whole `python -m bench` stays under 30 minutes on a
2-core CPU (see bench/README.md); quick mode trains 1 epoch on a few images per class.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import (
    require_folder,
    result_row,
    run_engine_train,
    scratch_space,
    subprocess_environment,
    subset_folder,
)
from engine.jsonio import read_json

DEFAULT_MODEL, REFERENCE_MODEL = "default_cnn", "tutorial_cnn"
# Dataset -> epochs for (default_cnn, tutorial_cnn). default_cnn costs about 14 times the
# tutorial CNN per image, and the 128x128 datasets 16 times the 32x32 ones.
EPOCHS: dict[str, tuple[int, int]] = {
    "digits": (20, 20),
    "mnist_subset": (15, 15),
    "cifar10_subset": (15, 15),
    "cats_vs_dogs": (4, 10),
    "flowers128": (3, 10),
}
QUICK_PER_CLASS = 20


def train(spec: str, model: str, epochs: int, scratch: Path) -> dict:
    """One engine run in a child process: its summary plus training seconds and image size."""
    name = f"{Path(spec).name}-{model}"
    started = time.monotonic()
    summary, run_dir = run_engine_train(
        [
            *("--dataset", spec, "--model", model, "--epochs", str(epochs)),
            *("--runs-dir", str(scratch / "runs")),
        ],
        subprocess_environment(STUDIO_CACHE_DIR=str(scratch / f"cache-{name}")),
    )
    status = read_json(run_dir / "status.json", {})
    report = read_json(run_dir / "load_report.json", {})
    return summary | {
        "wall_seconds": time.monotonic() - started,
        "train_seconds": status.get("train_seconds"),
        "image_size": report.get("image_size"),
        "images": report.get("images"),
    }


def describe(model: str, result: dict, cap: int) -> str:
    return (
        f"{model} {result.get('epochs')}/{cap} epochs (best {result.get('best_epoch')}), "
        f"{result.get('train_seconds')} s training, {result['wall_seconds']:.0f} s in all"
    )


def run(data_root: Path, quick: bool, repeats: int) -> list[dict]:
    rows = []
    with scratch_space("bench-accuracy-") as scratch:
        for dataset, (default_epochs, reference_epochs) in EPOCHS.items():
            spec = "digits"
            if dataset != "digits":
                folder = require_folder(data_root, dataset)
                spec = str(
                    subset_folder(folder, scratch / dataset, QUICK_PER_CLASS) if quick else folder
                )
            if quick:
                default_epochs = reference_epochs = 1
            print(f"  {dataset}: {DEFAULT_MODEL} then {REFERENCE_MODEL}", flush=True)
            default = train(spec, DEFAULT_MODEL, default_epochs, scratch)
            reference = train(spec, REFERENCE_MODEL, reference_epochs, scratch)
            rows.append(
                result_row(
                    f"accuracy: {dataset}, {DEFAULT_MODEL} vs {REFERENCE_MODEL}",
                    "test accuracy",
                    default.get("test_accuracy"),
                    baseline=reference.get("test_accuracy"),
                    notes=f"{default.get('images')} images at {default.get('image_size')} px; "
                    f"{describe(DEFAULT_MODEL, default, default_epochs)}; "
                    f"{describe(REFERENCE_MODEL, reference, reference_epochs)}; one run each",
                )
            )
    return rows
