"""Compare's names, colours and best marks; the Data page's filters across datasets; a folder of
datasets; galleries with file names and an Enlarge button. Runs are stub folders, not trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_class_folder
from streamlit.testing.v1 import AppTest

from engine.errors import UserError
from ui.text import plain

PAGES = Path(__file__).resolve().parent.parent / "pages"
CLASSES = ["cat", "dog", "fox"]
# name (None: none given), accuracy, macro F1, best validation loss, training seconds, images/s
RUNS = [
    ("small cnn", 0.91, 0.90, 0.40, 50.0, 900.0),
    ("residual 128px", 0.97, 0.96, 0.22, 120.0, 400.0),
    (None, 0.88, 0.87, 0.55, 30.0, 1200.0),
    ("mobilenet transfer", 0.95, 0.94, 0.18, 80.0, 600.0),
]


def write_run(runs_dir: Path, number: int, name, accuracy, f1, val_loss, seconds, speed) -> Path:
    """A completed run's folder as training leaves it, with made-up numbers."""
    from engine.config import RunConfig

    run_id = f"2026010{number}-120000-default_cnn-{number:04d}"
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True)
    config = RunConfig().replace(train={"epochs": 3, "learning_rate": 0.001 * (number + 1)})
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    status = {
        "run_id": run_id,
        "state": "completed",
        "created_at": f"2026-01-0{number}T12:00:00+00:00",
        "accuracy": accuracy,
        "accuracy_split": "test",
        "macro_f1": f1,
        "best_val_loss": val_loss,
        "train_seconds": seconds,
        "images_per_second": speed,
        "epochs_done": 3,
        "best_epoch": 3,
        "steps_per_epoch": 4,
        "parameters": {"total": 10_000 * (number + 1)},
    }
    if name:
        status["name"] = name
    (run_dir / "status.json").write_text(json.dumps(status))
    rows = []
    for epoch in (1, 2, 3):
        rows += [
            {"epoch": epoch, "step": step, "loss": 1.5 / epoch, "accuracy": 0.5} for step in (2, 4)
        ]
        rows.append(
            {
                "epoch": epoch,
                "loss": 1.4 / epoch,
                "accuracy": accuracy - 0.1 / epoch,
                "val_loss": val_loss + 0.2 / epoch,
                "val_accuracy": accuracy - 0.05 / epoch,
            }
        )
    (run_dir / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    per_class = [
        {"class": c, "precision": f1, "recall": f1, "f1": f1 - 0.01 * i, "support": 10}
        for i, c in enumerate(CLASSES)
    ]
    average = {"precision": f1, "recall": f1, "f1-score": f1, "support": 30}
    evaluation = {
        "accuracy": accuracy,
        "top_k": 2,
        "top_k_accuracy": 1.0,
        "split": "test",
        "count": 30,
        "class_names": CLASSES,
        "per_class": per_class,
        "confusion_matrix": [[10, 0, 0], [0, 10, 0], [0, 0, 10]],
        "macro_avg": average,
        "weighted_avg": average,
        "most_confused": [],
        "misclassified": [],
        "misclassified_count": 0,
        "highest_loss": [],
    }
    (run_dir / "evaluation.json").write_text(json.dumps(evaluation))
    return run_dir


@pytest.fixture
def four_runs(tmp_path, monkeypatch) -> list[dict]:
    """Four completed stub runs in the runs folder the pages read, as list_runs lists them."""
    from engine.runs import list_runs

    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs_dir))
    for number, values in enumerate(RUNS, start=1):
        write_run(runs_dir, number, *values)
    runs = sorted(list_runs(runs_dir), key=lambda run: run["run_id"])
    assert [run["state"] for run in runs] == ["completed"] * 4
    return runs


def test_compare_figures_give_each_run_one_colour_and_its_name(four_runs):
    from engine.runs import read_history
    from ui import compare_views, figures

    ids = [run["run_id"] for run in four_runs]
    names = compare_views.short_names(four_runs)
    unnamed = names.pop(ids[2])  # no name: its run id, shortened in the middle
    assert unnamed == ids[2][:17] + "…" + ids[2][-10:] and len(unnamed) == compare_views.SHORT_NAME
    assert list(names.values()) == ["small cnn", "residual 128px", "mobilenet transfer"]
    names[ids[2]] = unnamed
    colours = figures.run_colours(ids)
    assert len(set(colours.values())) == 4

    series = [(run["run_id"], *read_history(Path(run["path"]))) for run in four_runs]
    curves = compare_views.curves_figure(series, {run_id: 4 for run_id in ids}, colours, names)
    evaluations = {
        run["run_id"]: json.loads((Path(run["path"]) / "evaluation.json").read_text())
        for run in four_runs
    }
    bars = compare_views.per_class_figure(evaluations, colours, names)

    for run_id in ids:
        traces = [trace for trace in curves.data if trace.legendgroup == run_id]
        assert len(traces) == 6  # loss and accuracy: in-epoch, train, validation
        assert {trace.line.color for trace in traces} == {colours[run_id]}
        [bar] = [trace for trace in bars.data if trace.name == names[run_id]]
        assert bar.marker.color == colours[run_id]
    legend = [trace.name for trace in curves.data if trace.showlegend is not False]
    assert legend == [names[run_id] for run_id in ids] + ["train", "validation"]
    assert [trace.name for trace in bars.data] == [names[run_id] for run_id in ids]
    for figure in (curves, bars):  # above the plot, so it cannot cover an axis title
        assert figure.layout.legend.orientation == "h" and figure.layout.legend.y > 1


def test_compare_table_marks_the_best_of_each_row(four_runs):
    from ui import compare_views

    names = compare_views.short_names(four_runs)
    table = compare_views.comparison_table(four_runs, names)
    assert list(table.columns) == list(names.values())  # one column per run, measures as rows

    def marked(measure: str) -> list[str]:
        return [name for name in table.columns if table.loc[measure, name].endswith("★")]

    assert marked("accuracy") == ["residual 128px"]  # the highest
    assert marked("macro F1") == ["residual 128px"]
    assert marked("best validation loss") == ["mobilenet transfer"]  # the lowest
    assert marked("training time") == [names[four_runs[2]["run_id"]]]  # the shortest
    assert marked("images/s") == [names[four_runs[2]["run_id"]]]  # the fastest
    assert marked("parameters") == [] and marked("model") == []  # neither better nor worse
    assert table.loc["accuracy", "small cnn"] == "91.00 % test accuracy"


def test_compare_names_are_unique_and_short():
    from ui import compare_views

    long_name = "a very long run name that would widen every column of the table"
    runs = [
        {"run_id": "r1", "status": {"name": "same"}},
        {"run_id": "r2", "status": {"name": "same"}},
        {"run_id": "r3", "status": {"name": long_name}},
    ]
    names = compare_views.short_names(runs)
    assert names["r1"] == "same" and names["r2"] == "same (2)"
    assert names["r3"] == long_name[:17] + "…" + long_name[-10:]


def test_compare_page_with_four_runs(four_runs):
    from ui import compare_views

    at = AppTest.from_file(str(PAGES / "compare.py"), default_timeout=60).run()
    at.multiselect(key="compare_runs").set_value([run["run_id"] for run in four_runs]).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == list(compare_views.short_names(four_runs).values())
    assert table.loc["accuracy", "residual 128px"].endswith("★")
    assert len(at.get("plotly_chart")) == 2


def load_folder(at: AppTest, folder: Path) -> None:
    at.radio(key="data_source").set_value("Folder on this machine").run()
    at.text_input(key="data_folder").input(str(folder)).run()
    at.button(key="data_load").click().run()
    assert not at.exception


def class_box(at: AppTest):
    [box] = [box for box in at.selectbox if box.label == "Class"]
    return box


def test_data_page_filters_start_afresh_for_another_dataset(tmp_path):
    first = write_class_folder(tmp_path / "animals", classes=("cat", "dog", "fox"), per_class=6)
    second = write_class_folder(tmp_path / "insects", classes=("ant", "bee"), per_class=6)
    at = AppTest.from_file(str(PAGES / "data.py"), default_timeout=60).run()
    load_folder(at, first)
    class_box(at).set_value(2).run()  # fox
    first_key = class_box(at).key
    assert {caption.split(" · ")[0] for image in at.image for caption in image.captions} == {"fox"}

    load_folder(at, second)
    box = class_box(at)
    # A new key is a new widget: the browser, which keeps a widget's last value by its key
    # (AppTest has no browser), cannot send the other dataset's class back.
    assert box.key != first_key
    assert box.options == ["All classes", "ant", "bee"]
    assert box.value == -1  # no class carried over from the other dataset
    labels = {caption.split(" · ")[0] for image in at.image for caption in image.captions}
    assert labels == {"ant", "bee"}


def test_data_page_pager_opens_page_one_after_a_filter_change():
    at = AppTest.from_file(str(PAGES / "data.py"), default_timeout=60).run()
    at.pagination[0].set_value(3).run()
    assert any(caption.value.startswith("49–72 of") for caption in at.caption)
    class_box(at).set_value(3).run()
    assert not at.exception
    assert at.pagination[0].value == 1
    assert any(caption.value.startswith("1–24 of") for caption in at.caption)
    assert len(at.image) == 24


def test_gallery_captions_name_the_files_and_enlarge_shows_one_larger():
    at = AppTest.from_file(str(PAGES / "data.py"), default_timeout=60).run()
    captions = [image.captions[0] for image in at.image]
    assert len(captions) == 24
    for caption in captions:  # the digits are arrays: "3 · train\[17\]"
        label, name = caption.split(" · ")
        assert label in {str(digit) for digit in range(10)} and name.startswith("train\\[")
    at.button(key="data_enlarge_0").click().run()
    assert not at.exception
    assert len(at.image) == 25  # the dialog's image beside the grid
    assert plain(captions[0].split(" · ")[1].replace("\\", "")) in [c.value for c in at.caption]


def test_a_folder_of_datasets_asks_for_one_of_them(tmp_path):
    from engine.data.folders import load_folder_source

    root = tmp_path / "downloads"
    for dataset in ("flowers", "pets"):
        for split in ("train", "test"):
            write_class_folder(root / dataset / split, classes=("a", "b"), per_class=2)
    with pytest.raises(UserError) as raised:
        load_folder_source(str(root))
    message = str(raised.value)
    assert message == (
        f"{root} holds datasets (flowers, pets), each with its own train/test folders; "
        f"load one of them, e.g. {root / 'flowers'}."
    )
    # One of them loads, and so does a folder of classes whose class folders hold other folders.
    assert load_folder_source(str(root / "pets")).class_names == ["a", "b"]
    plain_classes = write_class_folder(tmp_path / "plain", classes=("x", "y"), per_class=2)
    (plain_classes / "x" / "more").mkdir()
    assert load_folder_source(str(plain_classes)).class_names == ["x", "y"]


def test_the_data_page_says_which_dataset_to_pick(tmp_path):
    root = tmp_path / "downloads"
    for dataset in ("flowers", "pets"):
        write_class_folder(root / dataset / "train", classes=("a", "b"), per_class=2)
    at = AppTest.from_file(str(PAGES / "data.py"), default_timeout=60).run()
    load_folder(at, root)
    assert "holds datasets (flowers, pets)" in at.error[0].value
    assert at.session_state["data_config"]["spec"] == "digits"
