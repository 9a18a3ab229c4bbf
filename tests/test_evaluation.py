"""Evaluation metrics against scikit-learn and hand counts on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from engine.evaluation import compute_metrics, error_analysis


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
