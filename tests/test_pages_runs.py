"""AppTest of the pages that read finished runs: Evaluate, Compare and Predict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_class_folder
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.run_admin import display_name

PAGES = Path(__file__).resolve().parent.parent / "pages"


@pytest.fixture(scope="module")
def module_dirs(tmp_path_factory) -> dict[str, str]:
    return {
        "STUDIO_RUNS_DIR": str(tmp_path_factory.mktemp("module-runs")),
        "STUDIO_CACHE_DIR": str(tmp_path_factory.mktemp("module-cache")),
    }


@pytest.fixture(scope="module")
def trained_run(module_dirs) -> Path:
    """One tiny completed run on the digits, shared by the tests of this module (~15 s)."""
    from engine.config import RunConfig
    from engine.runs import create_run
    from engine.training import train_run

    with pytest.MonkeyPatch.context() as patch:
        for name, value in module_dirs.items():
            patch.setenv(name, value)
        config = RunConfig().replace(data={"image_size": 12}, train={"epochs": 1, "batch_size": 64})
        run_dir = create_run(config, Path(module_dirs["STUDIO_RUNS_DIR"]))
        status = train_run(run_dir)
        assert status["state"] == "completed", status
        yield run_dir


@pytest.fixture
def with_run(trained_run, module_dirs, monkeypatch) -> Path:
    """Point the pages at the trained run's folders (conftest gives every test empty ones)."""
    for name, value in module_dirs.items():
        monkeypatch.setenv(name, value)
    return trained_run


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def percent(value: float) -> str:
    """How every page writes an accuracy: 0.98888 -> "98.89 %"."""
    return f"{value * 100:.2f} %"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["evaluate", "compare", "predict"])
def test_pages_without_runs_say_so(name):
    at = page(name)
    assert any("No completed runs" in info.value for info in at.info)
    assert not at.get("plotly_chart")


def test_evaluate_shows_metrics_and_confusion_matrix(with_run):
    evaluation = json.loads((with_run / "evaluation.json").read_text())
    at = page("evaluate")
    assert at.selectbox(key="eval_run").value == with_run.name
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Test accuracy"] == percent(evaluation["accuracy"])
    assert evaluation["top_k"] > 1  # ten digits: top-k, not the interval (two classes only)
    assert metrics[f"Test top-{evaluation['top_k']} accuracy"] == percent(
        evaluation["top_k_accuracy"]
    )
    assert "Test accuracy, 95 % interval" not in metrics
    assert metrics["Split"] == "test"
    assert int(metrics["Images evaluated"]) == evaluation["count"]
    assert len(at.get("plotly_chart")) == 1  # the confusion matrix
    per_class = at.dataframe[0].value
    assert list(per_class["class"]) == evaluation["class_names"]

    at.toggle(key="eval_normalize").set_value(True).run()
    assert not at.exception
    pairs = at.selectbox(key="eval_pair").options
    assert pairs[0] == "all"
    assert len(pairs) - 1 >= len(evaluation["most_confused"])
    assert evaluation["most_confused"], "the fixture's run confuses some classes"
    # A pair filters the gallery to its own images.
    at.selectbox(key="eval_pair").set_value(pairs[1]).run()
    assert not at.exception
    assert at.get("image"), "the misclassified gallery shows images"


def test_evaluate_shows_the_accuracy_interval_where_top_k_would_repeat_the_accuracy(with_run):
    path = with_run / "evaluation.json"
    saved = path.read_text()
    evaluation = json.loads(saved)
    # What a two-class evaluation holds: top-1, the accuracy again.
    evaluation.update(top_k=1, top_k_accuracy=evaluation["accuracy"])
    path.write_text(json.dumps(evaluation))
    try:
        metrics = {metric.label: metric.value for metric in page("evaluate").metric}
    finally:
        path.write_text(saved)  # the module's other tests see the run as it was
    assert "Test top-1 accuracy" not in metrics
    low, high = evaluation["accuracy_interval"]
    assert metrics["Test accuracy, 95 % interval"] == f"{low * 100:.1f}-{high * 100:.1f} %"


def test_an_evaluation_without_a_stored_interval_gets_it_from_accuracy_and_count():
    from engine.evaluation import accuracy_interval
    from ui.run_views import accuracy_interval_text

    low, high = accuracy_interval(429, 500)
    assert accuracy_interval_text({"accuracy": 0.858, "count": 500}) == (
        f"{low * 100:.1f}-{high * 100:.1f} %"
    )
    stored = {"accuracy": 0.858, "count": 500, "accuracy_interval": [0.8, 0.9]}
    assert accuracy_interval_text(stored) == "80.0-90.0 %"
    assert accuracy_interval_text({"accuracy": 0.858}) == "-"


def test_evaluate_lists_names_when_the_dataset_is_gone(with_run, monkeypatch):
    from engine.errors import UserError
    from ui import services

    def unavailable(*args, **kwargs):
        raise UserError("The folder /gone does not exist; check the path.")

    monkeypatch.setattr(services, "gallery_images", unavailable)
    at = page("evaluate")
    assert not at.get("image")
    assert any("/gone does not exist" in warning.value for warning in at.warning)
    names = at.dataframe[-1].value  # the highest-loss items, by name
    evaluation = json.loads((with_run / "evaluation.json").read_text())
    assert list(names["name"]) == [item["name"] for item in evaluation["highest_loss"][:24]]


def test_evaluate_computes_a_missing_evaluation(with_run):
    saved = json.loads((with_run / "evaluation.json").read_text())
    (with_run / "evaluation.json").unlink()
    at = page("evaluate")
    assert not at.metric
    at.button(key="eval_compute").click().run()
    assert not at.exception
    assert (with_run / "evaluation.json").is_file()
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Test accuracy"] == percent(saved["accuracy"])


def test_compare_shows_the_table(with_run):
    at = page("compare")
    assert at.multiselect(key="compare_runs").value == [with_run.name]
    table = at.dataframe[0].value
    status = json.loads((with_run / "status.json").read_text())
    evaluation = json.loads((with_run / "evaluation.json").read_text())
    name = display_name(status)  # columns carry the run's readable name
    assert list(table.columns) == [name]
    column = table[name]
    assert column["parameters"] == f"{status['parameters']['total']:,}"
    assert column["accuracy"] == f"{percent(evaluation['accuracy'])} test accuracy"
    assert column["epochs"] == "1"
    assert len(at.get("plotly_chart")) == 2  # curves and per-class F1


def test_predict_shows_top_k_and_names_a_broken_file(with_run):
    at = page("predict")
    assert at.slider(key="predict_top_k").value == 3
    zero = np.zeros((12, 12, 3), dtype=np.uint8)
    zero[2:10, 3:9] = 255
    zero[4:8, 5:7] = 0
    at.file_uploader(key="predict_files").set_value(
        [("zero.png", png_bytes(zero), "image/png"), ("notes.png", b"not an image", "image/png")]
    ).run()
    assert not at.exception
    errors = [error.value for error in at.error]
    assert len(errors) == 1 and "notes.png" in errors[0]
    table = at.dataframe[0].value.set_index("file")
    class_names = json.loads((with_run / "evaluation.json").read_text())["class_names"]
    assert table.loc["zero.png", "top-1 label"] in class_names
    assert 0.0 < table.loc["zero.png", "probability"] <= 1.0
    assert len(table.loc["zero.png", "top-k"].split(", ")) == 3
    assert "allowed format" in table.loc["notes.png", "error"]
    assert len(at.get("plotly_chart")) == 1  # bars for the image, none for the broken file


@pytest.fixture
def validation_run(tmp_path) -> Path:
    """A completed run with no test split and a class ('fox') its validation split lacks,
    evaluated with an untrained linear model (the pages only read what it stored)."""
    import keras

    from engine.config import RunConfig
    from engine.data import load_dataset
    from engine.evaluation import evaluate_run
    from engine.jsonio import write_json
    from engine.runs import create_run, default_runs_dir, update_status

    folder = tmp_path / "animals"
    write_class_folder(folder / "train", classes=("cat", "dog", "fox"), per_class=8)
    write_class_folder(folder / "validation", classes=("cat", "dog"), per_class=3)
    config = RunConfig().replace(data={"spec": str(folder), "image_size": 12, "test_fraction": 0.0})
    run_dir = create_run(config, default_runs_dir())
    dataset = load_dataset(config.data)
    write_json(run_dir / "load_report.json", dataset.report())
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs / 255))
    keras.Model(inputs, outputs).save(run_dir / "best.keras")
    update_status(run_dir, state="completed", model_selection=True, epochs_done=1)
    evaluate_run(run_dir)
    return run_dir


def shown_text(at: AppTest) -> list[str]:
    """The words a page shows outside its tables."""
    elements = [*at.caption, *at.markdown, *at.info, *at.success, *at.warning]
    return [element.value for element in elements] + [metric.label for metric in at.metric]


def test_a_validation_number_is_never_called_test_accuracy(validation_run):
    evaluation = json.loads((validation_run / "evaluation.json").read_text())
    assert evaluation["split"] == "validation"
    assert evaluation["classes_without_images"] == ["fox"]
    accuracy = percent(evaluation["accuracy"])

    at = page("evaluate")
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Validation accuracy"] == accuracy
    assert metrics["Split"] == "validation"
    assert any(
        f"{accuracy} validation accuracy, the split that chose the model" in caption.value
        for caption in at.caption
    )
    assert [warning.value for warning in at.warning] == evaluation["warnings"]
    assert "'fox' has no images in the validation split" in at.warning[0].value
    per_class = at.dataframe[0].value.set_index("class")
    assert per_class.loc["fox", "support"] == 0
    assert not any("test accuracy" in text.lower() for text in shown_text(at))

    at = page("compare")
    name = display_name(json.loads((validation_run / "status.json").read_text()))
    column = at.dataframe[0].value[name]
    assert column["accuracy"] == f"{accuracy} validation accuracy"

    at = page("home")
    assert not at.exception
    [runs_table] = [frame.value for frame in at.dataframe if "run" in frame.value.columns]
    row = runs_table.set_index("run").loc[validation_run.name]
    assert row["accuracy"] == f"{accuracy} validation accuracy"
    assert not any("test accuracy" in text.lower() for text in shown_text(at))
