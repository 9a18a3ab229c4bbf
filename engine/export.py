"""Export a run's model as a SavedModel or a TensorFlow Lite file, checked against the Keras model.

The export folder holds the artifact, labels.txt, export.json (what the model expects, and the
run's evaluated split scored by Keras and by the exported artifact itself, reloaded) and a
README.md with the preprocessing a caller must do. It is built in a temporary folder beside the
target and renamed into place, so a failure never leaves a half-written export.

TensorFlow Lite files are written by Keras 3's own `model.export(format="litert")` (a SavedModel
through `tf.lite.TFLiteConverter`) and run by LiteRT's interpreter (`ai_edge_litert`) where it
is installed, else by `tf.lite.Interpreter`, which TensorFlow 2.21 still ships, deprecated.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine import runs
from engine.errors import UserError
from engine.jsonio import dumps, read_json_object
from engine.staging import aside_path, staging_folder

FORMATS = {
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TensorFlow Lite, float32",
    "tflite_dynamic": "TensorFlow Lite, dynamic-range quantized (int8 weights)",
}
FLOAT_TOLERANCE = 1e-4  # largest probability difference a float export may show
BATCH_SIZE = 64
Progress = Callable[[float, str], None]


def default_folder(run_dir: str | os.PathLike, format: str) -> Path:
    """Where an export goes without --out: the run's exports/<format> folder."""
    return Path(run_dir) / "exports" / format


def export(
    run_dir: str | os.PathLike,
    format: str,
    out: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> dict:
    """Export the run's model; export.json's figures plus "folder", the export folder."""
    import keras
    import tensorflow as tf

    from engine.predict import load_model, run_model_path

    run_dir = Path(run_dir)
    if format not in FORMATS:
        raise UserError(
            f"The export format {format!r} is not one of {', '.join(FORMATS)}; pick one of them."
        )
    target = Path(out) if out else default_folder(run_dir, format)
    if target.exists() and not (target / "export.json").is_file():
        raise UserError(
            f"The folder {target} exists and is not an earlier export, so it is left alone; "
            "choose another output folder."
        )
    report = progress or (lambda fraction, text: None)
    config = runs.load_config(run_dir)
    status = read_json_object(run_dir / "status.json") or {}
    evaluation = read_json_object(run_dir / "evaluation.json") or {}
    report(0.05, "Loading the model and the evaluated split...")
    model_file = run_model_path(run_dir)
    model = load_model(model_file)
    dataset, split, indices = _evaluated_split(run_dir, config, evaluation)

    building = staging_folder(target)
    try:
        report(0.15, f"Writing the {FORMATS[format]} file...")
        artifact = building / ("saved_model" if format == "savedmodel" else "model.tflite")
        _write_artifact(model, format, artifact)
        report(0.45, "Scoring the split with Keras and with the exported model...")
        run_exported, runtime = _load_artifact(format, artifact)
        scores = _score(model, run_exported, dataset, indices, report)
        quantized = format == "tflite_dynamic"
        matches = (
            scores["exported_accuracy"] == scores["keras_accuracy"]
            and scores["max_abs_probability_difference"] <= FLOAT_TOLERANCE
        )
        if not quantized and not matches:
            raise UserError(
                f"The {format} export of run {run_dir.name} does not reproduce its Keras model "
                f"(accuracy {scores['exported_accuracy']:.4f} against "
                f"{scores['keras_accuracy']:.4f}, largest probability difference "
                f"{scores['max_abs_probability_difference']:.2g}), so it was not written; "
                "try another format."
            )
        image_size = int(model.input_shape[1])
        info = {
            "format": format,
            "description": FORMATS[format],
            "artifact": artifact.name,
            "artifact_bytes": sum(
                f.stat().st_size for f in [artifact, *artifact.rglob("*")] if f.is_file()
            ),
            "run_id": run_dir.name,
            "run_name": str(status.get("name") or run_dir.name),
            "model_file": model_file.name,
            "input": {
                "shape": [None, image_size, int(model.input_shape[2]), 3],
                "dtype": "float32",
                "layout": "NHWC, RGB",
                "image_size": image_size,
                "resize": config.data.resize,
                "pixel_range": [0, 255],
            },
            "output": {"shape": [None, dataset.num_classes], "meaning": "probabilities"},
            "class_names": list(dataset.class_names),
            "split": split,
            **scores,
            "accuracy_change": scores["exported_accuracy"] - scores["keras_accuracy"],
            "tolerance": None if quantized else FLOAT_TOLERANCE,
            "parity": "reported" if quantized else "matches",
            "converter": "keras.Model.export" + ("" if format == "savedmodel" else " (litert)"),
            "runtime": runtime,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        labels = "".join(f"{name}\n" for name in dataset.class_names)
        (building / "labels.txt").write_text(labels, encoding="utf-8")
        (building / "export.json").write_text(dumps(info, indent=2) + "\n", encoding="utf-8")
        (building / "README.md").write_text(readme(info), encoding="utf-8")
        building.chmod(0o755)  # mkdtemp makes it private; an export is meant to be shared
        report(0.95, "Moving the export into place...")
        _replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    report(1.0, "Exported.")
    return {**info, "folder": str(target)}


def _evaluated_split(run_dir: Path, config, evaluation: dict):
    """The dataset with the run's split members, the evaluated split and its item numbers."""
    from engine.data import load_dataset

    dataset = load_dataset(config.data)
    manifest = read_json_object(run_dir / "data_manifest.json")
    if manifest is not None:
        dataset.verify_manifest(manifest)  # a sentence when the data changed since training
    dataset.prepare()
    split = str(evaluation.get("split") or "")
    split = split or ("test" if len(dataset.indices("test")) else "validation")
    indices = dataset.indices(split)
    if not len(indices):
        raise UserError(
            f"Run {run_dir.name} has no {split} images to check its export on; "
            "train it with a test or validation split."
        )
    return dataset, split, indices


def _write_artifact(model, format: str, artifact: Path) -> None:
    import tensorflow as tf

    kind = "tf_saved_model" if format == "savedmodel" else "litert"
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]} if format == "tflite_dynamic" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite's deprecation notices, not the user's concern
        model.export(str(artifact), format=kind, verbose=False, **options)


def tflite_interpreter(model_path: str | os.PathLike):
    """(an interpreter of the .tflite file, which runtime it is): LiteRT's, else tf.lite's."""
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        version = getattr(ai_edge_litert, "__version__", "")
        return Interpreter(model_path=str(model_path)), f"ai_edge_litert {version}".strip()
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(model_path))
        return interpreter, f"tf.lite.Interpreter (TensorFlow {tf.__version__})"


def _load_artifact(format: str, artifact: Path):
    """(images -> probabilities, runtime name) running the written artifact itself."""
    import tensorflow as tf

    if format == "savedmodel":
        loaded = tf.saved_model.load(str(artifact))  # kept: its endpoint refers to its variables
        return (lambda images: np.asarray(loaded.serve(tf.constant(images)))), "tf.saved_model.load"
    interpreter, runtime = tflite_interpreter(artifact)
    [input_detail] = interpreter.get_input_details()
    shape = None

    def run(images: np.ndarray) -> np.ndarray:
        nonlocal shape
        if shape != images.shape:  # a batch of another size: resize the input once
            interpreter.resize_tensor_input(input_detail["index"], list(images.shape))
            interpreter.allocate_tensors()
            shape = images.shape
        interpreter.set_tensor(input_detail["index"], images)
        interpreter.invoke()
        [output_detail] = interpreter.get_output_details()
        return np.array(interpreter.get_tensor(output_detail["index"]))

    return run, runtime


def _score(model, run_exported, dataset, indices: np.ndarray, report: Progress) -> dict:
    """Accuracy of the Keras model and of the export, and how far their probabilities differ."""
    images, labels = dataset.images(), np.asarray(dataset.labels)[indices]
    keras_right = exported_right = agree = 0
    largest = 0.0
    for start in range(0, len(indices), BATCH_SIZE):
        batch = np.asarray(images[indices[start : start + BATCH_SIZE]], dtype=np.float32)
        expected = np.asarray(model(batch, training=False), dtype=np.float64)
        exported = np.asarray(run_exported(batch), dtype=np.float64).reshape(expected.shape)
        truth = labels[start : start + BATCH_SIZE]
        keras_right += int(np.sum(expected.argmax(axis=1) == truth))
        exported_right += int(np.sum(exported.argmax(axis=1) == truth))
        agree += int(np.sum(expected.argmax(axis=1) == exported.argmax(axis=1)))
        largest = max(largest, float(np.max(np.abs(expected - exported))))
        report(0.45 + 0.5 * min(start + BATCH_SIZE, len(indices)) / len(indices), "Scoring...")
    count = len(indices)
    return {
        "count": count,
        "keras_accuracy": keras_right / count,
        "exported_accuracy": exported_right / count,
        "prediction_agreement": agree / count,
        "max_abs_probability_difference": largest,
    }


def _replace(building: Path, target: Path) -> None:
    """Rename the finished folder into place; an earlier export there is removed after."""
    if not target.exists():
        os.replace(building, target)
        return
    old = aside_path(target, "old")  # a kill between the renames: the next export removes it
    os.replace(target, old)
    os.replace(building, target)
    shutil.rmtree(old, ignore_errors=True)


def readme(info: dict) -> str:
    """The export's README.md: what the files are and the preprocessing a caller must do."""
    size, crop = info["input"]["image_size"], info["input"]["resize"] == "crop"
    fit = "Centre-crop it to a square, then resize it" if crop else "Resize it (stretched)"
    resize = "ImageOps.fit(image, " if crop else "image.resize("
    load = (
        'import tensorflow as tf\n\nmodel = tf.saved_model.load("saved_model")\n'
        "probabilities = model.serve(batch).numpy()"
        if info["format"] == "savedmodel"
        else "from ai_edge_litert.interpreter import Interpreter  # or tf.lite.Interpreter\n\n"
        f'interpreter = Interpreter(model_path="model.tflite")  # input [1, {size}, {size}, 3]\n'
        "interpreter.allocate_tensors()\n"
        'interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)\n'
        "interpreter.invoke()\n"
        'probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])'
    )
    return f"""# {info["description"]} export of run {info["run_id"]}

`{info["artifact"]}` is the model, `labels.txt` the class names in output order (one a line),
`export.json` the input, output and parity figures.

## Preprocessing a caller must do

1. Decode the image as RGB (3 channels; a grey image repeated to 3).
2. {fit} to {size} x {size} pixels, bilinear.
3. Keep the pixel values 0..255 as float32: do not scale or normalise them, the model does.
4. Stack the images into a float32 batch of shape [N, {size}, {size}, 3] (NHWC).

The output has one row of {len(info["class_names"])} class probabilities per image.

```python
import numpy as np
from PIL import Image, ImageOps

image = Image.open("photo.jpg").convert("RGB")
image = {resize}({size}, {size}), Image.BILINEAR)
batch = np.asarray(image, dtype=np.float32)[None]
{load}
labels = open("labels.txt", encoding="utf-8").read().splitlines()
print(labels[int(probabilities[0].argmax())])
```

## Parity on the run's {info["split"]} split ({info["count"]:,} images)

Keras accuracy {info["keras_accuracy"]:.4f}, exported accuracy {info["exported_accuracy"]:.4f},
largest probability difference {info["max_abs_probability_difference"]:.2g}.
"""
