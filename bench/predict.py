"""Predict: one image to its top 5 with the model loaded, and a batch of 64 files, against Keras' way.

A default_cnn run is trained briefly (one epoch on part of cats_vs_dogs at 128x128, in a child
`python -m engine train`); its speed does not depend on its accuracy. Then, in this process:

- one image: Predictor.predict([(name, bytes)], top_k=5) on a different test photo each call, as
  the dashboard's Predict page calls it with an upload's bytes; against the notebook way,
  keras.utils.load_img + img_to_array + model.predict(x[None]) + argsort on the same model;
- a batch: Predictor.predict over 64 file paths; against load_img of each + model.predict.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from bench.common import (
    alternate,
    image_files,
    median,
    require_folder,
    result_row,
    run_engine_train,
    scratch_space,
    seconds_of,
    subprocess_environment,
    subset_folder,
    warm_file_cache,
)

IMAGE_SIZE = 128
TRAIN_PER_CLASS = 64
SINGLE_CALLS, QUICK_SINGLE_CALLS = 30, 10
BATCH = 64
SINGLE_GOAL_MS = 100.0


def train_brief_run(folder: Path, scratch: Path) -> Path:
    """A one-epoch default_cnn run on folder; its run directory."""
    _, run_dir = run_engine_train(
        [
            *("--dataset", str(folder), "--image-size", str(IMAGE_SIZE)),
            *("--epochs", "1", "--runs-dir", str(scratch / "runs")),
        ],
        subprocess_environment(STUDIO_CACHE_DIR=str(scratch / "cache")),
    )
    return run_dir


def keras_top_k(model, source, top_k: int = 5) -> list[int]:
    """The notebook way: load_img resized to the model's input, model.predict, argsort."""
    import keras

    if isinstance(source, bytes):
        source = io.BytesIO(source)
    image = keras.utils.load_img(source, target_size=(IMAGE_SIZE, IMAGE_SIZE))
    probabilities = model.predict(keras.utils.img_to_array(image)[None], verbose=0)[0]
    return list(np.argsort(-probabilities)[:top_k])


def keras_batch(model, files: list[Path]) -> np.ndarray:
    import keras

    images = [
        keras.utils.img_to_array(keras.utils.load_img(file, target_size=(IMAGE_SIZE, IMAGE_SIZE)))
        for file in files
    ]
    return model.predict(np.stack(images), batch_size=BATCH, verbose=0)


def single_image_timings(predictor, photos: list[bytes]) -> dict[str, list[float]]:
    """Milliseconds per call, the two ways alternating, a different photo each call."""
    milliseconds: dict[str, list[float]] = {"Predictor": [], "load_img + model.predict": []}
    for number, photo in enumerate(photos):

        def engine(photo=photo, number=number):
            result = predictor.predict([(f"photo-{number}.jpg", photo)], top_k=5)
            if "top_k" not in result[0]:
                raise RuntimeError(f"Predictor failed on a test photo: {result[0].get('error')}")

        contenders = [
            ("Predictor", engine),
            ("load_img + model.predict", lambda photo=photo: keras_top_k(predictor.model, photo)),
        ]
        for name, call in contenders if number % 2 == 0 else contenders[::-1]:
            milliseconds[name].append(seconds_of(call) * 1000)
    return milliseconds


def run(data_root: Path, quick: bool, repeats: int) -> list[dict]:
    from engine.predict import Predictor

    source = require_folder(data_root, "cats_vs_dogs")
    calls = QUICK_SINGLE_CALLS if quick else SINGLE_CALLS
    with scratch_space("bench-predict-") as scratch:
        train_folder = subset_folder(source, scratch / "images", TRAIN_PER_CLASS, ("train",))
        started = time.monotonic()
        run_dir = train_brief_run(train_folder, scratch)
        training_seconds = time.monotonic() - started
        predictor = Predictor(run_dir)
        test_files = image_files(source / "test")
        warm_file_cache(test_files)
        photos = [file.read_bytes() for file in test_files[: calls + 3]]
        single_image_timings(predictor, photos[:3])  # the first calls trace the model: not timed
        milliseconds = single_image_timings(predictor, photos[3:])
        batch_files = test_files[:BATCH]
        batch_seconds = alternate(
            {
                "Predictor": lambda: seconds_of(
                    lambda: predictor.predict([(file.name, file) for file in batch_files])
                ),
                "load_img + model.predict": lambda: seconds_of(
                    lambda: keras_batch(predictor.model, batch_files)
                ),
            },
            repeats + 1,  # the first repeat traces predict(): dropped below
        )
    single = median(milliseconds["Predictor"])
    notebook = median(milliseconds["load_img + model.predict"])
    batch_rate = {
        name: BATCH / median(values[1:] or values) for name, values in batch_seconds.items()
    }
    setup = (
        f"default_cnn at {IMAGE_SIZE}x{IMAGE_SIZE} trained 1 epoch in {training_seconds:.0f} s, "
        "cats_vs_dogs test photos (~500x375 JPEG)"
    )
    return [
        result_row(
            "predict: one image to top-5, Predictor vs load_img + model.predict",
            "ms",
            single,
            baseline=notebook,
            higher_is_better=False,
            goal=f"≤ {SINGLE_GOAL_MS:g} ms",
            met=single <= SINGLE_GOAL_MS,
            notes=f"{setup}; median of {len(photos) - 3} calls with the photo's bytes, model "
            "loaded, first 3 calls untimed",
        ),
        result_row(
            f"predict: batch of {BATCH} files, Predictor vs load_img + model.predict",
            "images/s",
            batch_rate["Predictor"],
            baseline=batch_rate["load_img + model.predict"],
            notes=f"{setup}; median over {repeats} batch(es) after one untimed",
        ),
    ]
