"""Evaluation metrics against scikit-learn and hand counts on the same predictions, and
evaluate_run on small saved runs: split labels, model choice, data manifest, flip TTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics

from engine.evaluation import compute_metrics, error_analysis, evaluate_run, split_label


@pytest.fixture
def predictions():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4))
    logits[np.arange(300), labels] += 1.2  # better than chance, with plenty of mistakes
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities, ["ant", "bee", "cat", "dog"]


def test_metrics_equal_scikit_learn(predictions):
    labels, probabilities, names = predictions
    predicted = probabilities.argmax(axis=1)
    result = compute_metrics(labels, probabilities, names, top_k=2)

    assert result["accuracy"] == pytest.approx(np.mean(predicted == labels))
    in_top_two = [
        label in np.argsort(-row)[:2] for label, row in zip(labels, probabilities, strict=True)
    ]
    assert result["top_k"] == 2 and result["top_k_accuracy"] == pytest.approx(np.mean(in_top_two))
    assert result["confusion_matrix"] == metrics.confusion_matrix(labels, predicted).tolist()
    precision, recall, f1, support = metrics.precision_recall_fscore_support(labels, predicted)
    for i, row in enumerate(result["per_class"]):
        assert row["class"] == names[i]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    assert result["macro_avg"]["f1-score"] == pytest.approx(
        metrics.f1_score(labels, predicted, average="macro")
    )


def test_error_analysis_counts_and_orders(predictions):
    labels, probabilities, names = predictions
    predicted = probabilities.argmax(axis=1)
    indices = np.arange(1000, 1300)
    result = error_analysis(
        labels, probabilities, names, [f"item{i}" for i in range(300)], indices, limit=10
    )

    wrong = predicted != labels
    assert result["misclassified_count"] == int(wrong.sum())
    assert len(result["misclassified"]) == int(wrong.sum())
    confidences = [item["confidence"] for item in result["misclassified"]]
    assert confidences == sorted(confidences, reverse=True)
    first = result["misclassified"][0]
    assert first["true"] != first["predicted"] and first["index"] >= 1000

    losses = -np.log(probabilities[np.arange(300), labels])
    assert [item["loss"] for item in result["highest_loss"]] == pytest.approx(
        sorted(losses, reverse=True)[:10]
    )

    matrix = metrics.confusion_matrix(labels, predicted)
    top = result["most_confused"][0]
    np.fill_diagonal(matrix, 0)
    assert top["count"] == matrix.max()
    assert matrix[names.index(top["true"]), names.index(top["predicted"])] == top["count"]


def test_two_classes_report_plain_accuracy_as_top_k():
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    result = compute_metrics(labels, probabilities, ["no", "yes"])
    assert result["accuracy"] == 0.5 and result["top_k"] == 1 and result["top_k_accuracy"] == 0.5


def test_the_accuracy_interval_is_wilsons():
    labels = np.array([0] * 30 + [1] * 10)
    predicted = labels.copy()
    predicted[:6] = 1  # 34 of 40 right
    probabilities = np.eye(2)[predicted] * 0.8 + 0.1
    low, high = compute_metrics(labels, probabilities, ["no", "yes"])["accuracy_interval"]
    # Wilson's score interval, written out: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    n, p, z = 40, 34 / 40, 1.959963984540054
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert low == pytest.approx((centre - half) / (1 + z * z / n))
    assert high == pytest.approx((centre + half) / (1 + z * z / n))
    assert low < 34 / 40 < high and high - low > 0.2  # 40 images say little


def test_averages_cover_the_classes_the_split_has():
    # "dog" (3) has no image in this split: it keeps a row, but is no F1 of 0 in the averages.
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 1, 3, 2, 2, 0, 2])
    probabilities = np.full((len(labels), 4), 0.05)
    probabilities[np.arange(len(labels)), predicted] = 0.85
    result = compute_metrics(labels, probabilities, ["ant", "bee", "cat", "dog"], split="test")

    present = [0, 1, 2]
    for key, average in (("macro_avg", "macro"), ("weighted_avg", "weighted")):
        for name, score in (
            ("precision", metrics.precision_score),
            ("recall", metrics.recall_score),
            ("f1-score", metrics.f1_score),
        ):
            expected = score(labels, predicted, labels=present, average=average, zero_division=0)
            assert result[key][name] == pytest.approx(expected), (key, name)
    assert result["macro_avg"]["f1-score"] > metrics.f1_score(
        labels, predicted, labels=[0, 1, 2, 3], average="macro", zero_division=0
    )
    assert [row["class"] for row in result["per_class"]] == ["ant", "bee", "cat", "dog"]
    assert result["per_class"][3]["support"] == 0 and result["per_class"][3]["f1"] == 0.0
    assert result["classes_without_images"] == ["dog"]
    assert result["warnings"] == [
        "Class 'dog' has no images in the test split: its row shows support 0 and it is left "
        "out of the macro and weighted averages."
    ]
    assert np.array(result["confusion_matrix"]).shape == (4, 4)


def test_split_labels_never_call_validation_test():
    assert split_label("test") == "test accuracy"
    assert split_label("validation") == "validation accuracy, the split that chose the model"
    assert split_label("validation", model_selection=False) == "validation accuracy"


# ----- evaluate_run on small saved runs ---------------------------------------------------------


def tiny_model(image_size: int, num_classes: int, seed: int):
    """A random linear classifier: quick to build, and not mirror-symmetric (so TTA changes it)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    features = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(num_classes, activation="softmax")(features)
    return keras.Model(inputs, outputs)


def saved_run(runs_dir: Path, data: dict, models: dict[str, int], **status) -> Path:
    """A completed run folder with untrained models saved under `models` ({file stem: seed})."""
    from engine.config import RunConfig
    from engine.data import load_dataset
    from engine.jsonio import write_json
    from engine.runs import create_run, update_status

    config = RunConfig().replace(data=data)
    run_dir = create_run(config, runs_dir)
    dataset = load_dataset(config.data)
    write_json(run_dir / "load_report.json", dataset.report())
    for stem, seed in models.items():
        tiny_model(dataset.image_size, dataset.num_classes, seed).save(run_dir / f"{stem}.keras")
    update_status(run_dir, state="completed", **status)
    return run_dir


def direct_probabilities(model_file: Path, images: np.ndarray, tta: bool = False) -> np.ndarray:
    """The model's softmax computed here, apart from the engine's code path."""
    import keras

    model = keras.models.load_model(model_file, compile=False)
    images = images.astype(np.float32)
    result = np.asarray(model(images, training=False), dtype=np.float64)
    if tta:
        mirrored = np.ascontiguousarray(images[:, :, ::-1, :])
        result = (result + np.asarray(model(mirrored, training=False), dtype=np.float64)) / 2
    return result


def png_file(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def stored_predictions(run_dir: Path) -> dict:
    with np.load(run_dir / "predictions.npz") as stored:
        return {key: stored[key] for key in stored.files}


def split_images(run_dir: Path, indices: np.ndarray) -> np.ndarray:
    from engine.data import load_dataset
    from engine.runs import load_config

    dataset = load_dataset(load_config(run_dir).data)
    dataset.prepare()
    return dataset.images()[indices]


def assert_metrics_equal_scikit_learn(evaluation: dict, labels, probabilities) -> None:
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(labels.tolist()))
    assert evaluation["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert evaluation["macro_avg"]["f1-score"] == pytest.approx(
        metrics.f1_score(labels, predicted, labels=present, average="macro", zero_division=0)
    )
    assert evaluation["weighted_avg"]["f1-score"] == pytest.approx(
        metrics.f1_score(labels, predicted, labels=present, average="weighted", zero_division=0)
    )


def test_a_run_without_test_split_is_evaluated_and_listed_as_validation(tmp_path, capsys):
    from engine.__main__ import main
    from engine.jsonio import read_json
    from engine.runs import list_runs

    run_dir = saved_run(
        tmp_path / "runs",
        {"image_size": 8, "test_fraction": 0.0},
        {"best": 1},
        model_selection=True,
    )
    evaluation = evaluate_run(run_dir)

    assert evaluation["split"] == "validation"
    assert evaluation["split_label"] == "validation accuracy, the split that chose the model"
    assert evaluation["model_file"] == "best.keras" and evaluation["tta"] == "none"
    stored = stored_predictions(run_dir)
    expected = direct_probabilities(
        run_dir / "best.keras", split_images(run_dir, stored["indices"])
    )
    assert stored["probabilities"] == pytest.approx(expected, abs=1e-5)
    assert_metrics_equal_scikit_learn(evaluation, stored["labels"], stored["probabilities"])

    status = read_json(run_dir / "status.json")
    assert status["accuracy"] == evaluation["accuracy"] and status["accuracy_split"] == "validation"
    assert "test_accuracy" not in status
    [listed] = list_runs(tmp_path / "runs")
    assert listed["accuracy"] == evaluation["accuracy"]
    assert listed["accuracy_split"] == "validation"

    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(f"validation accuracy {evaluation['accuracy'] * 100:.2f} %")
    assert "test accuracy" not in line


def test_a_run_with_a_test_split_says_test_accuracy(tmp_path, capsys):
    from engine.__main__ import main

    run_dir = saved_run(tmp_path / "runs", {"image_size": 8}, {"best": 1})
    assert main(["evaluate", str(run_dir)]) == 0
    brief = json.loads(capsys.readouterr().out)
    assert brief["split"] == "test" and brief["split_label"] == "test accuracy"
    assert brief["tta"] == "none" and brief["classes_without_images"] == []
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert brief["accuracy"] == evaluation["accuracy"]


def test_old_runs_headline_falls_back_to_test_accuracy(tmp_path):
    from engine.config import RunConfig
    from engine.runs import create_run, list_runs, update_status

    run_dir = create_run(RunConfig(), tmp_path)
    update_status(run_dir, state="completed", test_accuracy=0.75, macro_f1=0.7)
    [listed] = list_runs(tmp_path)
    assert listed["accuracy"] == 0.75 and listed["accuracy_split"] is None
    assert listed["macro_f1"] == 0.7


def test_without_model_selection_the_last_model_is_evaluated(tmp_path):
    from engine.predict import Predictor

    run_dir = saved_run(
        tmp_path / "runs", {"image_size": 8}, {"best": 1, "last": 2}, model_selection=False
    )
    evaluation = evaluate_run(run_dir)
    assert evaluation["model_file"] == "last.keras"
    stored = stored_predictions(run_dir)
    images = split_images(run_dir, stored["indices"])
    expected = direct_probabilities(run_dir / "last.keras", images)
    assert stored["probabilities"] == pytest.approx(expected, abs=1e-5)
    assert not np.allclose(expected, direct_probabilities(run_dir / "best.keras", images))

    [result] = Predictor(run_dir).predict([("first", png_file(tmp_path / "first.png", images[0]))])
    assert result["top_k"][0]["probability"] == pytest.approx(expected[0].max(), abs=1e-5)


def test_with_model_selection_the_best_model_is_evaluated(tmp_path):
    run_dir = saved_run(tmp_path / "runs", {"image_size": 8}, {"best": 1, "last": 2})
    assert evaluate_run(run_dir)["model_file"] == "best.keras"


def test_a_stored_data_manifest_is_verified_before_predicting(tmp_path, monkeypatch):
    from engine.data import Dataset
    from engine.errors import UserError
    from engine.jsonio import write_json

    run_dir = saved_run(tmp_path / "runs", {"image_size": 8}, {"best": 1})
    seen = []

    def changed(self, manifest):
        seen.append(manifest)
        raise UserError("The digits data changed since this run trained; train it again.")

    monkeypatch.setattr(Dataset, "verify_manifest", changed, raising=False)
    evaluate_run(run_dir)  # no manifest stored: nothing to verify
    assert seen == []
    (run_dir / "evaluation.json").unlink()
    write_json(run_dir / "data_manifest.json", {"fingerprint": "abc"})
    with pytest.raises(UserError, match="changed since this run trained"):
        evaluate_run(run_dir)
    assert seen == [{"fingerprint": "abc"}]
    assert not (run_dir / "evaluation.json").exists()


def test_flip_tta_averages_the_image_and_its_mirror(tmp_path, capsys):
    from engine.__main__ import main
    from engine.predict import Predictor

    run_dir = saved_run(tmp_path / "runs", {"image_size": 8}, {"best": 1})
    plain = evaluate_run(run_dir)
    plain_probabilities = stored_predictions(run_dir)["probabilities"]
    evaluation = evaluate_run(run_dir, tta=True)
    assert plain["tta"] == "none" and evaluation["tta"] == "horizontal_flip"

    stored = stored_predictions(run_dir)
    images = split_images(run_dir, stored["indices"])
    expected = direct_probabilities(run_dir / "best.keras", images, tta=True)
    assert stored["probabilities"] == pytest.approx(expected, abs=1e-5)
    assert not np.allclose(stored["probabilities"], plain_probabilities, atol=1e-3)
    assert_metrics_equal_scikit_learn(evaluation, stored["labels"], stored["probabilities"])

    predictor = Predictor(run_dir)
    for tta in (False, True):
        files = [png_file(tmp_path / f"{i}.png", image) for i, image in enumerate(images[:3])]
        results = predictor.predict([(file.name, file) for file in files], tta=tta)
        direct = direct_probabilities(run_dir / "best.keras", images[:3], tta=tta)
        for result, row in zip(results, direct, strict=True):
            top = result["top_k"][0]
            assert top["probability"] == pytest.approx(row.max(), abs=1e-5)
            assert top["label"] == predictor.class_names[int(row.argmax())]

    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--tta"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == "horizontal_flip"
