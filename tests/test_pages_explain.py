"""The explanation views under AppTest: the Grad-CAM toggles on Predict and Evaluate, the
unfamiliar-image sentence, the embedding scatter and its chosen image; names stay plain text."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from conftest import pattern_image, write_class_folder
from PIL import Image
from test_pages_integration import CLASSES, captions, make_run, page

from ui import explain_views
from ui.text import plain


def make_conv_run(folder: Path) -> Path:
    """A completed, evaluated run on 12-pixel images with an untrained small CNN: the pages only
    read and explain what the run stored."""
    import keras

    from engine.config import RunConfig
    from engine.data import load_dataset
    from engine.evaluation import evaluate_run
    from engine.jsonio import write_json
    from engine.runs import create_run, default_runs_dir, update_status

    config = RunConfig().replace(data={"spec": str(folder), "image_size": 12})
    run_dir = create_run(config, default_runs_dir())
    dataset = load_dataset(config.data)
    write_json(run_dir / "load_report.json", dataset.report())
    write_json(run_dir / "data_manifest.json", dataset.manifest())
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs / 255)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(x))
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions")(x)
    keras.Model(inputs, outputs).save(run_dir / "best.keras")
    update_status(run_dir, state="completed", model_selection=True, epochs_done=1)
    evaluate_run(run_dir)
    return run_dir


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_overlays_heatmaps_and_says_which_images_are_unfamiliar(tmp_path, monkeypatch):
    from engine import familiarity

    make_conv_run(write_class_folder(tmp_path / "animals", CLASSES, per_class=8))
    # Which images the statistics flag is tested in test_familiarity.py; here, what the page says.
    monkeypatch.setattr(
        familiarity.Familiarity,
        "unfamiliar",
        lambda self, features, *extremes: np.arange(len(features)) == 0,
    )
    at = page("predict")
    assert at.toggle(key="predict_gradcam").value is False
    uploads = [
        (f"{name}.png", png(pattern_image(i, seed=7)), "image/png") for i, name in enumerate("ab")
    ]
    at.file_uploader(key="predict_files").set_value(uploads).run()
    assert not at.exception, at.exception
    assert captions(at) == ["a.png", "b.png"]
    assert [warning.value for warning in at.warning] == [explain_views.UNFAMILIAR_TEXT]
    assert at.dataframe[0].value["unfamiliar"].tolist() == [True, False]

    at.toggle(key="predict_gradcam").set_value(True).run()
    assert not at.exception, at.exception
    assert captions(at) == ["a.png · Grad-CAM", "b.png · Grad-CAM"]
    assert len(at.warning) == 1  # the heatmaps came without a problem


def test_predict_says_in_one_sentence_why_a_model_has_no_heatmap(tmp_path):
    make_run(write_class_folder(tmp_path / "animals", CLASSES, per_class=6), evaluate=False)
    at = page("predict")
    at.toggle(key="predict_gradcam").set_value(True)
    at.file_uploader(key="predict_files").set_value(
        [("a.png", png(pattern_image(0, seed=1)), "image/png")]
    ).run()
    assert not at.exception, at.exception
    assert captions(at) == ["a.png"]  # the image itself, without an overlay
    assert [warning.value for warning in at.warning] == [
        "This model has no convolutional layer, so Grad-CAM cannot show where it looks; train a "
        "CNN (such as default\\_cnn or residual\\_cnn) to see heatmaps."
    ]


def test_evaluate_galleries_show_heatmaps_and_the_embedding_shows_a_chosen_image(tmp_path):
    run_dir = make_conv_run(write_class_folder(tmp_path / "animals", CLASSES, per_class=10))
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    at = page("evaluate")
    assert not at.get("plotly_chart")[1:], "no embedding until it is asked for"
    at.toggle(key="eval_gradcam").set_value(True).run()
    assert not at.exception, at.exception
    gallery = [caption for caption in captions(at) if " → " in caption]
    shown = min(evaluation["misclassified_count"], 48) + min(len(evaluation["highest_loss"]), 24)
    assert len(gallery) == shown and all(" · Grad-CAM · " in caption for caption in gallery)

    at.toggle(key="eval_embedding_show").set_value(True).run()
    assert not at.exception, at.exception
    figure = json.loads(at.get("plotly_chart")[-1].proto.spec)
    traces = figure["data"]
    assert [trace["name"] for trace in traces] == list(CLASSES)
    assert sum(len(trace["x"]) for trace in traces) == evaluation["count"]
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("principal component 1 (")
    assert figure["layout"]["yaxis"]["title"]["text"].startswith("principal component 2 (")
    assert (run_dir / "embedding-pca.npz").is_file()

    item = evaluation["misclassified"][0]
    at.session_state[explain_views.EMBEDDING_POINT] = item["id"]
    at.run()
    assert not at.exception, at.exception
    chosen = plain(f"true {item['true']} → predicted {item['predicted']} · {item['id']}")
    assert chosen in captions(at) and f"{chosen} · Grad-CAM" in captions(at)


def embedding_data(class_names: list[str]) -> dict:
    return {
        "method": "pca",
        "points": np.array([[0, 0], [1, 1], [2, 2]], np.float32),
        "labels": np.array([0, 0, 1]),
        "predicted": np.array([0, 1, 1]),
        "ids": ["train/<i>a.png", "b.png", "c.png"],
        "class_names": class_names,
        "explained": np.array([0.6, 0.25]),
    }


def test_the_embedding_figure_escapes_names_and_marks_mistakes():
    figure = explain_views.embedding_figure(embedding_data(["<b>x</b>", "y"]))
    first, second = figure.data
    assert first.name == "&lt;b&gt;x&lt;/b&gt;" and second.name == "y"
    assert list(first.marker.symbol) == ["circle", "x"] and list(second.marker.symbol) == ["circle"]
    assert (
        first.text[0]
        == "&lt;i&gt;a.png<br>true: &lt;b&gt;x&lt;/b&gt;<br>predicted: &lt;b&gt;x&lt;/b&gt;"
    )
    assert first.text[1].endswith("predicted: y")
    assert [list(row) for row in first.customdata] == [[0], [1]]
    assert figure.layout.xaxis.title.text == "principal component 1 (60% of the variance)"
    assert figure.layout.yaxis.title.text == "principal component 2 (25% of the variance)"
    tsne = explain_views.embedding_figure({**embedding_data(["x", "y"]), "method": "tsne"})
    assert tsne.layout.xaxis.title.text == "t-SNE dimension 1"
    assert tsne.layout.yaxis.title.text == "t-SNE dimension 2"


def test_a_chosen_point_is_remembered_by_its_item_id(monkeypatch):
    ids = ["a.png", "b.png"]
    state = {"eval_embedding": SimpleNamespace(selection={"points": [{"customdata": [1]}]})}
    monkeypatch.setattr(explain_views.st, "session_state", state)
    explain_views._remember_point(ids)
    assert state[explain_views.EMBEDDING_POINT] == "b.png"
    state["eval_embedding"] = SimpleNamespace(selection={"points": [{"customdata": 7}]})
    explain_views._remember_point(ids)  # a point of an older figure: the choice stays
    assert state[explain_views.EMBEDDING_POINT] == "b.png"
