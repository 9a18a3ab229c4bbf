"""Evaluation of a run's best model: metrics from scikit-learn, errors and confusions, as data.

Computed once and stored in the run directory (`evaluation.json`, `predictions.npz`), so the
dashboard only reads; figures are drawn elsewhere (ui/), never here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from sklearn import metrics

from engine import runs
from engine.jsonio import atomic_write_bytes, write_json

GALLERY_SIZE = 48


def compute_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], top_k: int = 5
) -> dict:
    """Accuracy, top-k accuracy, per-class report and confusion matrix of predicted probabilities."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    class_ids = list(range(num_classes))
    top_k = max(1, min(top_k, num_classes - 1)) if num_classes > 2 else 1
    report = metrics.classification_report(
        labels,
        predicted,
        labels=class_ids,
        target_names=class_names,
        output_dict=True,
        zero_division=0,
    )
    per_class = [
        {
            "class": name,
            "precision": report[name]["precision"],
            "recall": report[name]["recall"],
            "f1": report[name]["f1-score"],
            "support": int(report[name]["support"]),
        }
        for name in class_names
    ]
    return {
        "count": int(len(labels)),
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "top_k": top_k,
        "top_k_accuracy": float(
            metrics.top_k_accuracy_score(labels, probabilities, k=top_k, labels=class_ids)
        )
        if num_classes > 2
        else float(metrics.accuracy_score(labels, predicted)),
        "macro_avg": report["macro avg"],
        "weighted_avg": report["weighted avg"],
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=class_ids).tolist(),
    }


def error_analysis(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    names: list[str],
    indices: np.ndarray,
    limit: int = GALLERY_SIZE,
) -> dict:
    """Misclassified items, the highest-loss items and the most-confused class pairs."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    losses = -np.log(np.clip(true_probability, 1e-12, 1.0))

    def item(position: int) -> dict:
        return {
            "index": int(indices[position]),
            "name": names[position],
            "true": class_names[labels[position]],
            "predicted": class_names[predicted[position]],
            "true_id": int(labels[position]),
            "predicted_id": int(predicted[position]),
            "confidence": float(probabilities[position, predicted[position]]),
            "true_probability": float(true_probability[position]),
            "loss": float(losses[position]),
        }

    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])]  # confident mistakes first
    highest = np.argsort(-losses)[:limit]
    matrix = metrics.confusion_matrix(labels, predicted, labels=list(range(len(class_names))))
    off_diagonal = [
        (int(matrix[t, p]), t, p)
        for t in range(len(class_names))
        for p in range(len(class_names))
        if t != p and matrix[t, p] > 0
    ]
    pairs = [
        {
            "true": class_names[t],
            "predicted": class_names[p],
            "count": count,
            "share_of_true": count / max(int(matrix[t].sum()), 1),
        }
        for count, t, p in sorted(off_diagonal, reverse=True)[:20]
    ]
    return {
        "misclassified_count": int(len(wrong)),
        "misclassified": [item(int(p)) for p in wrong],
        "highest_loss": [item(int(p)) for p in highest],
        "most_confused": pairs,
    }


def predict_split(
    model, dataset, split: str, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item numbers, labels, probabilities) of a split, in a fixed order."""
    indices = dataset.indices(split)
    pipeline = dataset.pipeline(split, batch_size)
    probabilities = model.predict(pipeline, verbose=0)
    return indices, dataset.labels[indices], np.asarray(probabilities, dtype=np.float64)


def evaluate_run(run_dir: Path, split: str = "", top_k: int = 5) -> dict:
    """Evaluate the run's best model on its test split (validation when it has none) and store it."""
    from engine.data import load_dataset
    from engine.predict import load_model

    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    dataset = load_dataset(config.data)
    dataset.prepare()
    split = split or ("test" if len(dataset.indices("test")) else "validation")
    model_file = runs.model_path(run_dir)
    model = load_model(model_file)
    indices, labels, probabilities = predict_split(model, dataset, split)
    names = [dataset.item_name(i) for i in indices]
    result = {
        "run_id": run_dir.name,
        "split": split,
        "model_file": model_file.name,
        "dataset": config.data.spec,
        **compute_metrics(labels, probabilities, dataset.class_names, top_k),
        **error_analysis(labels, probabilities, dataset.class_names, names, indices),
    }
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, indices=indices, labels=labels, probabilities=probabilities.astype(np.float32)
    )
    atomic_write_bytes(run_dir / "predictions.npz", buffer.getvalue())
    write_json(run_dir / "evaluation.json", result)
    # The headline goes into status.json too, so listing runs never reads the large evaluation.
    runs.update_status(
        run_dir, test_accuracy=result["accuracy"], macro_f1=result["macro_avg"]["f1-score"]
    )
    return result
