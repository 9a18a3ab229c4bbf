"""Evaluation of a run's model: metrics from scikit-learn, errors and confusions, as data.

Computed once and stored in the run directory (`evaluation.json`, `predictions.npz`), so the
dashboard only reads; figures are drawn elsewhere (ui/), never here. Gallery items carry the item's
id (as in the run's data_manifest.json), and `gallery_images` finds their pictures by that id.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn import metrics

from engine import runs
from engine.jsonio import atomic_write_bytes, read_json_object, write_json

if TYPE_CHECKING:
    from engine.data.dataset import Dataset
    from engine.data.items import ItemImage

GALLERY_SIZE = 48


def split_label(split: str, model_selection: bool = True) -> str:
    """What an accuracy measured on `split` is, in words, so a validation number never reads as a test one."""
    if split == "test":
        return "test accuracy"
    if split == "validation" and model_selection:
        return "validation accuracy, the split that chose the model"
    return f"{split} accuracy"


def compute_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    top_k: int = 5,
    split: str = "evaluated",
) -> dict:
    """Accuracy, top-k accuracy, per-class scores and confusion matrix of predicted probabilities.

    Per-class rows cover every class (support 0 where the split has no image of it); the macro and
    weighted averages cover the classes the split has, as scikit-learn's do without `labels=`, so
    a class the split lacks does not count as an F1 of 0.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    class_ids = list(range(num_classes))
    present = sorted(int(label) for label in np.unique(labels))
    top_k = max(1, min(top_k, num_classes - 1)) if num_classes > 2 else 1
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=class_ids, zero_division=0
    )
    per_class = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]

    def average(kind: str) -> dict:
        scores = metrics.precision_recall_fscore_support(
            labels, predicted, labels=present, average=kind, zero_division=0
        )
        return {
            "precision": float(scores[0]),
            "recall": float(scores[1]),
            "f1-score": float(scores[2]),
            "support": int(len(labels)),
        }

    without_images = [class_names[i] for i in class_ids if support[i] == 0]
    warnings = []
    if len(without_images) == 1:
        warnings.append(
            f"Class {without_images[0]!r} has no images in the {split} split: its row shows "
            "support 0 and it is left out of the macro and weighted averages."
        )
    elif without_images:
        warnings.append(
            f"Classes {', '.join(map(repr, without_images))} have no images in the {split} split: "
            "their rows show support 0 and they are left out of the macro and weighted averages."
        )
    return {
        "count": int(len(labels)),
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "top_k": top_k,
        "top_k_accuracy": float(
            metrics.top_k_accuracy_score(labels, probabilities, k=top_k, labels=class_ids)
        )
        if num_classes > 2
        else float(metrics.accuracy_score(labels, predicted)),
        "accuracy_interval": accuracy_interval(int((predicted == labels).sum()), len(labels)),
        "macro_avg": average("macro"),
        "weighted_avg": average("weighted"),
        "per_class": per_class,
        "class_names": list(class_names),
        "classes_without_images": without_images,
        "warnings": warnings,
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=class_ids).tolist(),
    }


def accuracy_interval(correct: int, count: int) -> list[float]:
    """The 95 % Wilson score interval of an accuracy of correct out of count images: where the
    accuracy on all such images likely lies. [0, 1] without images."""
    if count == 0:
        return [0.0, 1.0]
    from scipy.stats import binomtest

    interval = binomtest(correct, count).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(interval.low), float(interval.high)]


def error_analysis(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    names: list[str],
    indices: np.ndarray,
    limit: int = GALLERY_SIZE,
) -> dict:
    """Misclassified items, the highest-loss items and the most-confused class pairs.

    names are the items' ids (Dataset.item_ids); each gallery item keeps its id, by which
    `gallery_images` finds it later, and its item number at evaluation time as "index".
    """
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    losses = -np.log(np.clip(true_probability, 1e-12, 1.0))

    def item(position: int) -> dict:
        return {
            "id": names[position],
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


def gallery_images(dataset: Dataset, items: list[dict], size: int = 96) -> list[ItemImage]:
    """The picture of each gallery item (ItemImage), found by its stored id, never by position.

    Evaluations written before items had an "id" name the item by its id under "name". An item
    removed from the data since, or one that cannot be decoded, has a sentence instead of an image.
    """
    return dataset.images_by_id(
        [str(item.get("id") or item.get("name", "")) for item in items], size
    )


def predict_split(
    model, dataset, split: str, batch_size: int = 64, tta: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item numbers, labels, probabilities) of a split, each row the same item.

    The pipeline hands back each batch's item numbers, so the rows stay matched whatever order
    it reads the cache in. With tta, a row is the mean over the image and its horizontal flip.
    """
    from engine.predict import flip_horizontal

    indices, labels, probabilities = [], [], []
    for images, batch_labels, batch_indices in dataset.pipeline(split, batch_size, with_index=True):
        batch = np.asarray(model.predict_on_batch(images), dtype=np.float64)
        if tta:
            batch = (
                batch + np.asarray(model.predict_on_batch(flip_horizontal(images)), np.float64)
            ) / 2
        probabilities.append(batch)
        labels.append(np.asarray(batch_labels, dtype=np.int64))
        indices.append(np.asarray(batch_indices, dtype=np.int64))
    return np.concatenate(indices), np.concatenate(labels), np.concatenate(probabilities)


def evaluate_run(run_dir: Path, split: str = "", top_k: int = 5, tta: bool = False) -> dict:
    """Evaluate the run's model on its test split (validation when it has none) and store it.

    The model is best.keras, or last.keras when the run trained without model selection.
    """
    from engine.data import load_dataset
    from engine.predict import load_model, run_model_path

    run_dir = Path(run_dir)
    config = runs.load_config(run_dir)
    dataset = load_dataset(config.data)
    manifest = read_json_object(run_dir / "data_manifest.json")
    if manifest is not None:
        # Raises a UserError when the data changed since training; else pins the run's splits.
        dataset.verify_manifest(manifest)
    dataset.prepare()
    split = split or ("test" if len(dataset.indices("test")) else "validation")
    status = read_json_object(run_dir / "status.json") or {}
    model_file = run_model_path(run_dir)
    model = load_model(model_file)
    indices, labels, probabilities = predict_split(model, dataset, split, tta=tta)
    names = [dataset.item_name(i) for i in indices]
    result = {
        "run_id": run_dir.name,
        "split": split,
        "split_label": split_label(split, status.get("model_selection", True) is not False),
        "model_file": model_file.name,
        "tta": "horizontal_flip" if tta else "none",
        "dataset": config.data.spec,
        **compute_metrics(labels, probabilities, dataset.class_names, top_k, split),
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
        run_dir,
        accuracy=result["accuracy"],
        accuracy_split=split,
        macro_f1=result["macro_avg"]["f1-score"],
    )
    return result
