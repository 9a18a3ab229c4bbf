"""Grad-CAM and the embedding: a trained model's heatmap peaks where the evidence is, every kind of
registry model gets a map at its input size, the CLI writes heatmaps, the embedding is cached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import UserError

SIZE, SQUARE = 32, 6
SQUARE_EPOCHS = 25  # with the defaults, 28 of 30 heatmaps peak in the square's half (measured)
CLASSES = ("left", "right")


def square_image(class_id: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with one bright square in the left (class 0) or right (class 1) half, at least 3
    pixels from the middle so the half it sits in is never in doubt."""
    image = rng.integers(0, 110, (SIZE, SIZE, 3), dtype=np.uint8)
    row = int(rng.integers(0, SIZE - SQUARE + 1))
    column = int(rng.integers(1, SIZE // 2 - SQUARE - 2)) + (SIZE // 2 + 2 if class_id else 0)
    image[row : row + SQUARE, column : column + SQUARE] = 255
    return image


def write_square_folder(root: Path, per_class: int = 100, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    for class_id, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for number in range(per_class):
            image = square_image(class_id, rng)
            Image.fromarray(image).save(root / name / f"{name}_{number:03d}.png")
    return root


_TRAINED: dict[str, Path] = {}  # the square run of this test process, by name


def trained_square_run(tmp_path_factory) -> Path:
    """A completed run trained on the squares by the engine with the defaults the recipe resolves
    for them (train_run, evaluation included), once per test process: tests/test_familiarity.py
    uses the same run.

    The defaults: residual_cnn at 32 px with shifts, and no flips, since the recipe's mirror check
    finds that a flip turns "left" into "right". Only the epochs are set: the 10-minute budget the
    recipe resolves would fit 200 epochs here, and SQUARE_EPOCHS learn the task.
    """
    if "squares" in _TRAINED:
        return _TRAINED["squares"]
    from engine.config import DataConfig
    from engine.data import load_dataset
    from engine.recipe import resolve
    from engine.runs import create_run
    from engine.training import train_run

    folder = tmp_path_factory.mktemp("squares")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_CACHE_DIR", str(folder / "cache"))
        spec = str(write_square_folder(folder / "data"))
        config, recipe = resolve(
            load_dataset(DataConfig(spec=spec)),
            {"data": {"spec": spec}, "train": {"epochs": SQUARE_EPOCHS}},
        )
        assert config.model.name == "residual_cnn" and not config.augment.horizontal_flip
        assert any("mirror images" in note for note in recipe.notes), recipe.notes
        run_dir = create_run(config, folder / "runs")
        status = train_run(run_dir)
    assert status["state"] == "completed", status.get("error")
    _TRAINED["squares"] = run_dir
    return run_dir


@pytest.fixture(scope="module")
def square_run(tmp_path_factory) -> Path:
    return trained_square_run(tmp_path_factory)


def test_the_heatmap_peaks_in_the_half_with_the_square(square_run):
    from engine.explain import GradCam, peak_position
    from engine.features import run_dataset
    from engine.predict import Predictor

    dataset = run_dataset(square_run)
    indices = dataset.indices("test")
    images = dataset.images()[indices].astype(np.float32)
    grad_cam = GradCam(Predictor(square_run).model)
    assert grad_cam.layer.name == "stage4_out"  # the last residual block, before global pooling
    heatmaps = grad_cam.heatmaps(images)

    assert heatmaps.shape == (len(indices), SIZE, SIZE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    assert np.allclose(heatmaps.max(axis=(1, 2)), 1.0)
    right = dataset.class_names.index("right")
    in_half = [
        (peak_position(heatmap)[1] >= SIZE // 2) == (label == right)
        for heatmap, label in zip(heatmaps, dataset.labels[indices], strict=True)
    ]
    # Measured: 28 of 30 here; with data seeds 11 and 12, 27 and 29 of 30. After the 200 epochs
    # the 10-minute budget gives (`python -m engine train --dataset FOLDER`), 27, 28 and 29 of 30;
    # with label smoothing (which small colour images no longer get) 21 of 30: that model told
    # "right" by the absence of a square on the left.
    assert np.mean(in_half) >= 0.9, f"{np.mean(in_half):.0%} of {len(in_half)}"


def test_cli_writes_a_heatmap_and_an_overlay_per_image(square_run, tmp_path, capsys):
    from engine.__main__ import main

    rng = np.random.default_rng(11)
    files = []
    for number, folder in enumerate(("a", "b")):  # two files with the same stem
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "photo.png")
        Image.fromarray(square_image(number, rng)).save(files[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "cams"
    (out).mkdir()
    (out / "photo.cam.png").write_bytes(b"an older file of the same name")

    code = main(["predict", str(square_run), *map(str, files), str(broken), "--explain", str(out)])
    results = json.loads(capsys.readouterr().out)

    assert code == 1  # the broken file has no prediction
    assert [result["top_k"][0]["label"] for result in results[:2]] == ["left", "right"]
    assert all(isinstance(result["unfamiliar"], bool) for result in results[:2])
    assert "explanation" not in results[2] and "image" not in results[0]
    assert sorted(path.name for path in out.iterdir()) == [
        "photo-2.cam.npy",
        "photo-2.cam.png",
        "photo.cam.npy",
        "photo.cam.png",
    ]  # no temporary file left behind
    heatmap = np.load(results[1]["explanation"]["heatmap"])
    assert results[1]["explanation"]["heatmap"].endswith("photo-2.cam.npy")
    assert heatmap.shape == (SIZE, SIZE) and heatmap.min() >= 0.0 and heatmap.max() == 1.0
    assert heatmap[:, SIZE // 2 :].max() == 1.0  # the right square's image peaks on the right
    with Image.open(out / "photo.cam.png") as overlay:  # the older file was replaced whole
        assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"


def test_a_model_without_convolutions_is_refused_in_one_sentence():
    import keras

    from engine.explain import GradCam

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    with pytest.raises(UserError, match="no convolutional layer, so Grad-CAM cannot"):
        GradCam(keras.Model(inputs, outputs))


@pytest.mark.parametrize(
    "name", ["default_cnn", "residual_cnn", "eurosat_cnn", "catsdogs_cnn", "mobilenet_v2"]
)
def test_every_kind_of_registry_model_gets_a_map_at_its_input_size(name):
    from engine.config import ModelConfig
    from engine.explain import GradCam
    from engine.models import build_model

    size = 48
    model = build_model(ModelConfig(name=name, weights="none", mode="fine_tuning"), size, 3)
    images = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3))
    grad_cam = GradCam(model)
    heatmaps = grad_cam.heatmaps(images, class_ids=np.array([0, 1, 2]))
    assert heatmaps.shape == (3, size, size)
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    expected = {"mobilenet_v2": "base", "residual_cnn": "stage4_out"}
    assert grad_cam.layer.name == expected.get(name, grad_cam.layer.name)


def test_a_wrapper_that_calls_a_frozen_base_is_explained_after_saving(tmp_path):
    import keras

    import engine.models  # noqa: F401  the custom layers
    from engine.explain import GradCam
    from engine.transfer import InferenceBase

    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3))
    base.trainable = False
    inputs = keras.Input((64, 64, 3))
    features = InferenceBase(base, name="inference_base")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(pooled)
    keras.Model(inputs, outputs).save(tmp_path / "wrapped.keras")
    model = keras.models.load_model(tmp_path / "wrapped.keras")

    grad_cam = GradCam(model)
    heatmaps = grad_cam.heatmaps(np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)))
    assert grad_cam.layer.name == "inference_base"
    assert heatmaps.shape == (2, 64, 64) and heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert len(np.unique(heatmaps[0].round(3))) > 10  # a 2x2 map upsampled, not a constant


def test_the_overlay_blends_the_colour_map_over_the_image():
    from engine.explain import colour_map, overlay

    image = np.full((4, 6, 3), 200, np.uint8)
    heatmap = np.zeros((4, 6), np.float32)
    heatmap[:, 3:] = 1.0
    blended = overlay(image, heatmap, opacity=0.5)
    assert blended.dtype == np.uint8 and blended.shape == (4, 6, 3)
    assert colour_map(np.array([0.0, 1.0])).tolist() == [[0, 0, 128], [128, 0, 0]]
    assert blended[0, 0].tolist() == [100, 100, 164] and blended[0, 5].tolist() == [164, 100, 100]
    larger = overlay(np.zeros((8, 12, 3), np.uint8), heatmap)  # the heatmap is resized
    assert larger.shape == (8, 12, 3)


def test_the_embedding_is_computed_once_and_rebuilt_when_damaged(square_run, monkeypatch):
    from engine import embedding
    from engine.predict import Predictor

    model = Predictor(square_run).model
    for path in square_run.glob("embedding-*.npz"):
        path.unlink()
    data = embedding.embedding(square_run, model, "pca")
    evaluation = json.loads((square_run / "evaluation.json").read_text())
    assert data["split"] == evaluation["split"] == "test"
    assert data["points"].shape == (evaluation["count"], 2) == (len(data["ids"]), 2)
    assert data["class_names"] == list(CLASSES) and data["total"] == evaluation["count"]
    wrong = {data["ids"][i] for i in np.flatnonzero(data["labels"] != data["predicted"])}
    assert wrong == {item["id"] for item in evaluation["misclassified"]}
    assert 0 < data["explained"][1] <= data["explained"][0] <= 1
    # Two classes the model separates lie apart along the first component.
    first = data["points"][:, 0]
    left, right = first[data["labels"] == 0], first[data["labels"] == 1]
    assert left.max() < right.min() or right.max() < left.min()

    def never(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(embedding, "compute", never)
    again = embedding.embedding(square_run, model, "pca")
    assert np.array_equal(again["points"], data["points"]) and again["ids"] == data["ids"]

    monkeypatch.undo()
    (square_run / "embedding-pca.npz").write_bytes(b"PK\x03\x04 truncated")
    assert np.allclose(embedding.embedding(square_run, model, "pca")["points"], data["points"])
    tsne = embedding.embedding(square_run, model, "tsne")
    assert tsne["points"].shape == data["points"].shape and np.isnan(tsne["explained"]).all()
    with pytest.raises(UserError, match="no projection 'umap'"):
        embedding.embedding(square_run, model, "umap")
