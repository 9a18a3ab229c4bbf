"""The pages over the engine's newer contracts: galleries by stored id, damaged run files,
Predict's decoded images, Load re-indexing a folder, and the bounded uploads folder."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern_image, write_class_folder
from PIL import Image
from streamlit.testing.v1 import AppTest

from ui.text import plain

PAGES = Path(__file__).resolve().parent.parent / "pages"
CLASSES = ("cat", "dog", "fox")


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=90)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def make_run(folder: Path, evaluate: bool = True) -> Path:
    """A completed run on folder (12-pixel images) with an untrained linear model: the pages only
    read what the run stored."""
    import keras

    from engine.config import RunConfig
    from engine.data import load_dataset
    from engine.evaluation import evaluate_run
    from engine.jsonio import write_json
    from engine.runs import create_run, default_runs_dir, update_status

    config = RunConfig().replace(data={"spec": str(folder), "image_size": 12})
    run_dir = create_run(config, default_runs_dir())
    write_json(run_dir / "load_report.json", load_dataset(config.data).report())
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(
        keras.layers.Flatten()(inputs / 255)
    )
    keras.Model(inputs, outputs).save(run_dir / "best.keras")
    update_status(run_dir, state="completed", model_selection=True, epochs_done=1)
    if evaluate:
        evaluate_run(run_dir)
    return run_dir


# ----- galleries by stored id ---------------------------------------------------------------------
def test_gallery_finds_items_by_id_after_files_are_removed_and_added(tmp_path):
    import json

    from engine.data import load_dataset
    from engine.runs import load_config
    from ui import services

    folder = write_class_folder(tmp_path / "animals", CLASSES, per_class=10)
    run_dir = make_run(folder)
    items = json.loads((run_dir / "evaluation.json").read_text())["highest_loss"]
    removed = items[0]
    (folder / removed["id"]).unlink()
    # Files sorting first in each class move every later item on, whichever one was removed.
    for class_id, name in enumerate(CLASSES):
        for seed, new in enumerate(("aaa.png", "aab.png")):
            Image.fromarray(pattern_image(class_id, seed=90 + seed)).save(folder / name / new)

    config = load_config(run_dir).data
    entries = services.gallery_images(config, items, size=96)
    assert [entry.item_id for entry in entries] == [item["id"] for item in items]
    assert entries[0].image is None and "no longer in" in entries[0].problem
    assert removed["id"] in entries[0].problem
    today = load_dataset(config)
    moved = 0
    for item, entry in zip(items[1:], entries[1:], strict=True):
        [index] = today.find_items([item["id"]])
        assert np.array_equal(entry.image, today.sample_images(np.array([index]), 96)[0])
        by_position = today.sample_images(np.array([item["index"]]), 96)[0]
        moved += not np.array_equal(entry.image, by_position)
    assert moved, "some stored positions now hold another file, and the gallery did not show it"

    at = page("evaluate")
    shown = captions(at)
    removed_caption = plain(entries[0].problem)  # names the file, its Markdown escaped
    assert any(caption.endswith(removed_caption) for caption in shown), shown
    assert sum("no longer in" in caption for caption in shown) <= 2  # misclassified + highest loss


def test_a_gallery_whose_dataset_is_gone_lists_names(tmp_path, monkeypatch):
    import json

    from engine.errors import UserError
    from ui import services

    run_dir = make_run(write_class_folder(tmp_path / "animals", CLASSES, per_class=6))

    def unavailable(*args, **kwargs):
        raise UserError("The folder /gone does not exist; check the path.")

    monkeypatch.setattr(services, "gallery_images", unavailable)
    at = page("evaluate")
    assert not at.get("image")
    assert any("/gone does not exist" in warning.value for warning in at.warning)
    names = at.dataframe[-1].value  # the highest-loss items, by name
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert list(names["name"]) == [item["name"] for item in evaluation["highest_loss"][:24]]


# ----- damaged run files --------------------------------------------------------------------------
@pytest.fixture
def damaged_runs() -> dict[str, Path]:
    """A run whose status.json is binary, and a completed one whose evaluation.json is truncated."""
    from engine.config import RunConfig
    from engine.runs import create_run, default_runs_dir, update_status

    binary = create_run(RunConfig(), default_runs_dir())
    (binary / "status.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    truncated = create_run(RunConfig(), default_runs_dir())
    update_status(truncated, state="completed", accuracy=0.5, accuracy_split="test")
    (truncated / "evaluation.json").write_text('{"accuracy": 0.5, "split": "te')
    return {"binary": binary, "truncated": truncated}


BINARY_REASON = "status.json is not valid JSON (it is binary, not text)"
TRUNCATED_REASON = "evaluation.json is not valid JSON (it is truncated or garbled)"


def test_home_lists_damaged_runs_with_the_reason(damaged_runs):
    at = page("home")
    [table] = [frame.value for frame in at.dataframe if "run" in frame.value.columns]
    damaged = table.set_index("run")["damaged"]
    assert BINARY_REASON in damaged[damaged_runs["binary"].name]
    assert TRUNCATED_REASON in damaged[damaged_runs["truncated"].name]
    assert any("2 of these runs are damaged" in caption.value for caption in at.caption)


def test_train_shows_why_a_run_is_damaged(damaged_runs):
    from engine.config import RunConfig

    at = page("train", train_run=damaged_runs["binary"].name)
    assert metrics(at)["State"] == "failed"
    assert metrics(at)["Epoch"] == f"0/{RunConfig().train.epochs}"  # from the sound config.json
    assert any(BINARY_REASON in error.value for error in at.error)

    at.selectbox(key="train_watch").set_value(damaged_runs["truncated"].name).run()
    assert not at.exception
    assert metrics(at)["State"] == "completed"
    assert any(TRUNCATED_REASON in warning.value for warning in at.warning)


def test_train_epoch_total_survives_a_damaged_config(damaged_runs):
    (damaged_runs["binary"] / "config.json").write_text("[1, 2]")
    at = page("train", train_run=damaged_runs["binary"].name)
    assert metrics(at)["Epoch"] == "0/?"
    assert any("config.json is not a JSON object" in error.value for error in at.error)


@pytest.mark.parametrize(
    "content, reason",
    [('{"accuracy": 0.5, "split": "te', TRUNCATED_REASON), ("{}", "evaluation.json lacks")],
)
def test_evaluate_and_compare_name_a_damaged_evaluation(damaged_runs, content, reason):
    run_dir = damaged_runs["truncated"]
    (run_dir / "evaluation.json").write_text(content)
    at = page("evaluate")
    assert at.selectbox(key="eval_run").value == run_dir.name  # the only completed run
    assert any(reason in error.value for error in at.error)
    assert at.button(key="eval_compute")  # evaluating again replaces the damaged file
    assert not at.metric

    at = page("compare")
    assert at.multiselect(key="compare_runs").value == [run_dir.name]
    assert any(reason in warning.value for warning in at.warning)
    assert any("Not every run has an evaluation" in caption.value for caption in at.caption)


# ----- Predict shows the decoded image --------------------------------------------------------------
def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_predict_draws_16_bit_png_and_tiff_uploads(tmp_path):
    make_run(write_class_folder(tmp_path / "animals", CLASSES, per_class=6), evaluate=False)
    at = page("predict")
    assert set(at.file_uploader(key="predict_files").proto.type) >= {".tif", ".tiff"}
    deep = Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100)
    assert deep.mode.startswith("I;16")  # the mode st.image cannot write as JPEG
    colour = Image.fromarray(pattern_image(1, seed=3))
    at.file_uploader(key="predict_files").set_value(
        [
            ("deep.png", encoded(deep, "PNG"), "image/png"),
            ("scan.tiff", encoded(colour, "TIFF"), "image/tiff"),
            ("notes.png", b"%!PS-Adobe-3.0\n", "image/png"),
        ]
    ).run()
    assert not at.exception, at.exception
    assert captions(at) == ["deep.png", "scan.tiff"]
    [error] = [error.value for error in at.error]
    assert error.startswith("notes.png: ") and error.endswith(
        "allowed format (JPEG, PNG, GIF, BMP, WebP or TIFF)."
    )
    table = at.dataframe[0].value.set_index("file")
    assert set(table.loc[["deep.png", "scan.tiff"], "top-1 label"]) <= set(CLASSES)


# ----- Load indexes a folder again ------------------------------------------------------------------
def test_pressing_load_again_shows_files_added_and_removed(tmp_path):
    from engine.config import RESIZE_MODES

    folder = write_class_folder(tmp_path / "animals", CLASSES, per_class=10)
    at = page("data")
    assert at.radio(key="data_resize").options == list(RESIZE_MODES)
    at.radio(key="data_source").set_value("Folder on this machine").run()
    at.text_input(key="data_folder").input(str(folder)).run()
    at.button(key="data_load").click().run()
    assert metrics(at)["Images"] == "30"

    Image.fromarray(pattern_image(0, seed=77)).save(folder / "cat" / "new.png")
    at.run()
    assert metrics(at)["Images"] == "30"  # an ordinary rerun keeps the index
    at.button(key="data_load").click().run()
    assert not at.exception
    assert metrics(at)["Images"] == "31"

    for name in ("dog_000.png", "dog_001.png"):
        (folder / "dog" / name).unlink()
    at.button(key="data_load").click().run()
    assert metrics(at)["Images"] == "29"


def test_progress_reporter_moves_the_bar():
    from ui.data_views import progress_reporter

    calls = []

    class Bar:
        def progress(self, value, text):
            calls.append((value, text))

    report = progress_reporter(Bar(), "Reading headers")
    report(256, 1024)
    report(1024, 1024)
    report(3, 0)  # a source that knows no total never divides by zero
    assert calls == [
        (0.25, "Reading headers: 256 of 1,024 files"),
        (1.0, "Reading headers: 1,024 of 1,024 files"),
        (1.0, "Reading headers: 3 of 0 files"),
    ]


# ----- the uploads folder stays bounded -------------------------------------------------------------
def upload_files(folder: Path, ages_in_days: dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for name, days in ages_in_days.items():
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (now - days * 86400, now - days * 86400))


def test_evict_uploads_keeps_the_newest_and_the_ones_in_use(tmp_path):
    from ui.uploads import evict_uploads

    folder = tmp_path / "uploads"
    upload_files(folder, {f"u{i}.zip": i for i in range(6)} | {"old.npz": 40, "used.npz": 50})
    upload_files(folder, {".u9.zip.abc.tmp": 2, ".u8.zip.def.tmp": 0.1})
    removed = evict_uploads(folder, keep=[folder / "used.npz", "/elsewhere/u0.zip"], count=3)
    assert sorted(removed) == [".u9.zip.abc.tmp", "old.npz", "u3.zip", "u4.zip", "u5.zip"]
    left = sorted(path.name for path in folder.iterdir())
    assert left == [".u8.zip.def.tmp", "u0.zip", "u1.zip", "u2.zip", "used.npz"]
    assert evict_uploads(folder, count=3, days=1.5) == ["u2.zip", "used.npz"]
    assert evict_uploads(tmp_path / "nothing") == []


def test_save_upload_touches_a_known_file_and_evicts_beyond_the_limit(monkeypatch):
    from ui import uploads

    monkeypatch.setattr(uploads, "KEEP_UPLOADS", 2)
    first = uploads.save_upload("a.zip", b"first")
    os.utime(first, (time.time() - 3600, time.time() - 3600))
    uploads.save_upload("b.zip", b"second")
    assert uploads.save_upload("a.zip", b"first") == first  # the same content, the same file
    assert time.time() - first.stat().st_mtime < 60  # used again: the newest now
    third = uploads.save_upload("c.npz", b"third", in_use=[])
    names = sorted(path.name for path in uploads.uploads_folder().iterdir())
    assert names == sorted([first.name, third.name])  # b.zip was the least recently used
