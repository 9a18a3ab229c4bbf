"""Export of a tiny trained digits run (engine.export): float exports reproduce Keras on the
evaluated split, the .tflite runs in the TFLite interpreter with the run's input shape, the
quantized export reports its loss, and a failure leaves no half-written folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import export as export_module
from engine.errors import UserError
from engine.export import FLOAT_TOLERANCE, export, tflite_interpreter

IMAGE_SIZE = 12


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One epoch of the default CNN on the digits at 12 px, without EMA (about 15 s)."""
    from engine.config import RunConfig
    from engine.runs import create_run
    from engine.training import train_run

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("export-cache")))
        config = RunConfig().replace(
            data={"image_size": IMAGE_SIZE},
            train={"epochs": 1, "ema": False, "schedule": "constant", "learning_rate": 3e-3},
        )
        run_dir = create_run(config, tmp_path_factory.mktemp("export-runs"))
        status = train_run(run_dir)
        assert status["state"] == "completed", status
        yield run_dir


@pytest.fixture
def split_images(trained_run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, Keras probabilities) of the run's evaluated split, computed here."""
    import keras

    from engine.data import load_dataset
    from engine.runs import load_config

    with np.load(trained_run / "predictions.npz") as stored:
        indices, labels = stored["indices"], stored["labels"]
    dataset = load_dataset(load_config(trained_run).data)
    dataset.prepare()
    images = dataset.images()[indices].astype(np.float32)
    model = keras.models.load_model(trained_run / "best.keras", compile=False)
    return images, labels, np.asarray(model(images, training=False), dtype=np.float64)


def test_tflite_export_matches_keras_and_runs_with_the_runs_input_shape(trained_run, split_images):
    info = export(trained_run, "tflite")
    folder = Path(info["folder"])
    assert folder == trained_run / "exports" / "tflite"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "export.json",
        "labels.txt",
        "model.tflite",
    ]
    evaluation = json.loads((trained_run / "evaluation.json").read_text())
    assert info["keras_accuracy"] == pytest.approx(evaluation["accuracy"])
    assert info["exported_accuracy"] == info["keras_accuracy"]
    assert info["max_abs_probability_difference"] <= FLOAT_TOLERANCE
    assert info["count"] == evaluation["count"] and info["split"] == "test"
    assert info["input"]["image_size"] == IMAGE_SIZE and info["input"]["pixel_range"] == [0, 255]
    assert info["input"]["resize"] == "squash" and info["parity"] == "matches"
    stored = json.loads((folder / "export.json").read_text())
    assert stored["exported_accuracy"] == info["exported_accuracy"]
    labels_txt = (folder / "labels.txt").read_text().splitlines()
    assert labels_txt == [str(digit) for digit in range(10)]
    assert f"{IMAGE_SIZE} x {IMAGE_SIZE} pixels" in (folder / "README.md").read_text()

    # The interpreter, driven here apart from the engine, with the run's own input shape.
    images, labels, expected = split_images
    interpreter, _ = tflite_interpreter(folder / "model.tflite")
    interpreter.allocate_tensors()
    [given] = interpreter.get_input_details()
    [output] = interpreter.get_output_details()
    assert list(given["shape"]) == [1, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert given["dtype"] == np.float32
    rows = []
    for image in images:
        interpreter.set_tensor(given["index"], image[None])
        interpreter.invoke()
        rows.append(np.array(interpreter.get_tensor(output["index"])[0], dtype=np.float64))
    probabilities = np.stack(rows)
    assert np.max(np.abs(probabilities - expected)) <= FLOAT_TOLERANCE
    assert np.mean(probabilities.argmax(axis=1) == labels) == info["keras_accuracy"]


def test_savedmodel_export_through_the_cli_matches_keras(trained_run, split_images, capsys):
    import tensorflow as tf

    from engine.__main__ import main

    out = trained_run.parent / "savedmodel-export"
    assert main(["export", str(trained_run), "--format", "savedmodel", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out)
    figures = json.loads(printed[-2])
    assert figures["exported_accuracy"] == figures["keras_accuracy"]
    assert figures["max_abs_probability_difference"] <= FLOAT_TOLERANCE
    assert (out / "saved_model" / "saved_model.pb").is_file()

    images, _, expected = split_images
    loaded = tf.saved_model.load(str(out / "saved_model"))
    probabilities = np.asarray(loaded.serve(tf.constant(images)), dtype=np.float64)
    assert np.max(np.abs(probabilities - expected)) <= FLOAT_TOLERANCE


def test_dynamic_range_export_reports_its_loss(trained_run):
    info = export(trained_run, "tflite_dynamic")
    float_size = (trained_run / "exports" / "tflite" / "model.tflite").stat().st_size
    assert info["parity"] == "reported" and info["tolerance"] is None
    assert info["artifact_bytes"] < float_size / 2  # int8 weights
    assert info["accuracy_change"] == pytest.approx(
        info["exported_accuracy"] - info["keras_accuracy"]
    )
    assert abs(info["accuracy_change"]) <= 0.05
    assert 0 < info["max_abs_probability_difference"] < 0.2
    assert 0.9 <= info["prediction_agreement"] <= 1.0
    stored = json.loads((Path(info["folder"]) / "export.json").read_text())
    assert stored["max_abs_probability_difference"] == info["max_abs_probability_difference"]


def test_a_failed_export_leaves_no_folder_and_keeps_the_earlier_one(trained_run, monkeypatch):
    def broken(model, format, artifact):
        artifact.write_bytes(b"half a model")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "_write_artifact", broken)
    out = trained_run.parent / "failed-export"
    with pytest.raises(RuntimeError, match="disk full"):
        export(trained_run, "tflite", out)
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".failed-export")]

    earlier = trained_run / "exports" / "tflite"
    before = (earlier / "export.json").read_text()
    with pytest.raises(RuntimeError):
        export(trained_run, "tflite")
    assert (earlier / "export.json").read_text() == before
    assert (earlier / "model.tflite").stat().st_size > 1000


def test_an_export_removes_what_a_killed_export_left(trained_run, tmp_path):
    from test_staging import ended_process

    pid, started = ended_process()
    out = tmp_path / "export"
    leftovers = [
        tmp_path / f".export.{pid}-{started}.k1lled.tmp",  # the folder being built
        tmp_path / f".export.{pid}-{started}.old-0123abcd.tmp",  # an earlier export moved aside
    ]
    for leftover in leftovers:
        leftover.mkdir()
        (leftover / "model.tflite").write_bytes(b"half a model")

    info = export(trained_run, "tflite", out)

    assert [path.exists() for path in leftovers] == [False, False]
    assert Path(info["folder"]) == out and (out / "model.tflite").stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_wrong_format_and_a_foreign_folder_are_refused(trained_run, tmp_path):
    with pytest.raises(UserError, match="'onnx' is not one of savedmodel, tflite, tflite_dynamic"):
        export(trained_run, "onnx")
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="is not an earlier export"):
        export(trained_run, "tflite", tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
