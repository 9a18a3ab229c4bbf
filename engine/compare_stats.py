"""Two runs compared on the same evaluated images: paired counts, McNemar's exact test, a bootstrap.

Each run's predictions.npz holds item numbers; its data_manifest.json names the split's members
by item id in item-number order (less the items that did not decode, listed in load_report.json),
so every prediction gets its item id without loading the data. Runs are paired by those ids, and
runs that were not evaluated on exactly the same images are refused with one sentence.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from engine import runs
from engine.errors import UserError
from engine.jsonio import DamagedFile, read_json_object

RESAMPLES = 2000  # bootstrap resamples of the paired items
SEED = 0  # the bootstrap's seed: the same two runs always get the same interval
SIGNIFICANCE = 0.05  # below this p-value a difference is called evidence


@dataclass(frozen=True)
class EvaluatedRun:
    """What a run's evaluation says about each image of its evaluated split."""

    run_id: str
    name: str
    split: str
    class_names: list[str]
    item_ids: np.ndarray  # str, one per evaluated image
    labels: np.ndarray  # int
    predicted: np.ndarray  # int
    data: str  # the data's fingerprint, or its spec for runs without a manifest
    spec: str


def load_evaluated(run_dir: str | Path) -> EvaluatedRun:
    """A run's evaluated predictions with their item ids, or a UserError naming what is missing."""
    run_dir = Path(run_dir)
    data_config = runs.load_config(run_dir).to_dict()["data"]  # a sentence when it is no run
    status = _json(run_dir, "status.json") or {}
    name = str(status.get("name") or run_dir.name)
    evaluation = _json(run_dir, "evaluation.json")
    if evaluation is None or not (run_dir / "predictions.npz").is_file():
        what = "no evaluation yet" if evaluation is None else "an evaluation without predictions"
        raise UserError(
            f"Run {name} has {what}; evaluate it on the Evaluate page or with "
            f"`python -m engine evaluate {run_dir}`, then compare again."
        )
    indices, labels, probabilities = _predictions(run_dir, name)
    class_names = [str(c) for c in evaluation.get("class_names") or []]
    split = str(evaluation.get("split") or "")
    if probabilities.ndim != 2 or probabilities.shape[1] != len(class_names):
        raise UserError(
            f"Run {name}'s predictions.npz does not match its evaluation.json; evaluate it again."
        )
    manifest = _json(run_dir, "data_manifest.json")
    spec = str(data_config.get("spec") or evaluation.get("dataset") or "")
    if manifest is None:
        # Runs from before manifests: items are known only by number, so the data's settings
        # (source, split fractions and seed) stand in for the members.
        data = repr(sorted(data_config.items()))
        item_ids = np.array([f"item #{i}" for i in indices.tolist()])
    else:
        data = str(manifest.get("fingerprint") or spec)
        item_ids = _item_ids(run_dir, name, manifest, split, indices, evaluation)
    return EvaluatedRun(
        run_dir.name,
        name,
        split,
        class_names,
        item_ids,
        labels,
        probabilities.argmax(axis=1),
        data,
        spec,
    )


def _json(run_dir: Path, file: str) -> dict | None:
    try:
        return read_json_object(run_dir / file)
    except DamagedFile as error:
        raise UserError(
            f"Run {run_dir.name} cannot be compared: {error.reason}; evaluate it again."
        ) from None


def _predictions(run_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(run_dir / "predictions.npz", allow_pickle=False) as stored:
            arrays = (stored["indices"], stored["labels"], stored["probabilities"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, io.UnsupportedOperation):
        raise UserError(
            f"Run {name}'s predictions.npz is damaged; evaluate the run again."
        ) from None
    indices, labels, probabilities = (np.asarray(a) for a in arrays)
    if not (len(indices) == len(labels) == len(probabilities)) or not len(indices):
        raise UserError(f"Run {name}'s predictions.npz is damaged; evaluate the run again.")
    return indices.astype(np.int64), labels.astype(np.int64), probabilities


def _item_ids(
    run_dir: Path,
    name: str,
    manifest: dict,
    split: str,
    indices: np.ndarray,
    evaluation: dict,
) -> np.ndarray:
    """The item id of each prediction, from the split's members in the manifest."""
    members = (manifest.get("splits") or {}).get(split)
    report = _json(run_dir, "load_report.json") or {}
    skipped = report.get("skipped") if isinstance(report.get("skipped"), list) else []
    not_decoded = {str(entry.get("file")) for entry in skipped if isinstance(entry, dict)}
    if isinstance(members, list):
        members = [str(member) for member in members if str(member) not in not_decoded]
    numbers = np.unique(indices)
    if not (isinstance(members, list) and len(members) == len(numbers) == len(indices)):
        raise UserError(
            f"Run {name}'s predictions do not match the {split or 'evaluated'} split its data "
            "manifest lists; evaluate the run again."
        )
    # Split members are stored in item-number order, so the k-th smallest number is member k.
    id_of = dict(zip(numbers.tolist(), members, strict=True))
    item_ids = np.array([id_of[number] for number in indices.tolist()])
    # The gallery items carry both, so a wrong mapping cannot go unnoticed.
    for item in evaluation.get("misclassified") or []:
        if "id" in item and id_of.get(item.get("index")) != item["id"]:
            raise UserError(
                f"Run {name}'s predictions do not match its data manifest; evaluate it again."
            )
    return item_ids


def pair(a: EvaluatedRun, b: EvaluatedRun) -> np.ndarray:
    """Positions in b of a's items, in a's order; UserError when they are not the same images."""
    both = f"Runs {a.name} and {b.name}"
    if a.split != b.split:
        raise UserError(
            f"{both} were evaluated on different splits ({a.split} and {b.split}), so their "
            "predictions cannot be paired; evaluate them on the same split to compare them."
        )
    if a.class_names != b.class_names:
        raise UserError(
            f"{both} classify different classes, so their predictions cannot be paired; "
            "compare runs trained on the same data."
        )
    if a.data != b.data:
        raise UserError(
            f"{both} were evaluated on different data ({a.spec} and {b.spec}, or the same "
            "source with other files), so their predictions cannot be paired; compare runs "
            "trained on the same data."
        )
    position = {item_id: place for place, item_id in enumerate(b.item_ids.tolist())}
    missing = [item_id for item_id in a.item_ids.tolist() if item_id not in position]
    if missing or len(a.item_ids) != len(b.item_ids):
        count = len(missing) or abs(len(a.item_ids) - len(b.item_ids))
        raise UserError(
            f"{both} were evaluated on different {a.split} images ({count:,} of them differ, "
            "as with another split seed or split fractions), so their predictions cannot be "
            "paired; compare runs trained with the same split."
        )
    order = np.array([position[item_id] for item_id in a.item_ids.tolist()], dtype=np.int64)
    if not np.array_equal(a.labels, b.labels[order]):
        raise UserError(
            f"{both} give some images different labels, so they were evaluated on different "
            "data; compare runs trained on the same data."
        )
    return order


def mcnemar_p_value(a_only: int, b_only: int) -> float:
    """Exact McNemar test: two-sided binomial test of the discordant pairs; 1 without any."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(b_only, discordant, 0.5, alternative="two-sided").pvalue)


def bootstrap_interval(
    a_only: int, b_only: int, count: int, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """95 % interval of accuracy_b - accuracy_a over paired resamples of the images.

    Resampling the pairs with replacement only changes how many of each kind are drawn (only A
    right, only B right, the rest), so each resample is one multinomial draw of the three counts:
    the same distribution as drawing the pairs one by one, at no cost per image.
    """
    rng = np.random.default_rng(seed)
    shares = np.array([a_only, b_only, count - a_only - b_only], dtype=np.float64) / count
    draws = rng.multinomial(count, shares, size=resamples)
    differences = (draws[:, 1] - draws[:, 0]) / count
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def compare_runs(
    run_a: str | Path, run_b: str | Path, resamples: int = RESAMPLES, seed: int = SEED
) -> dict:
    """Accuracies, paired counts, McNemar's p-value and the bootstrap interval of B - A."""
    a, b = load_evaluated(run_a), load_evaluated(run_b)
    order = pair(a, b)
    right_a = a.predicted == a.labels
    right_b = (b.predicted == b.labels)[order]
    count = len(right_a)
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    low, high = bootstrap_interval(a_only, b_only, count, resamples, seed)
    per_class = [
        {
            "class": class_name,
            "count": int(np.sum(a.labels == class_id)),
            "a_only": int(np.sum((a.labels == class_id) & right_a & ~right_b)),
            "b_only": int(np.sum((a.labels == class_id) & ~right_a & right_b)),
            "both_wrong": int(np.sum((a.labels == class_id) & ~right_a & ~right_b)),
        }
        for class_id, class_name in enumerate(a.class_names)
    ]
    return {
        "run_a": a.run_id,
        "run_b": b.run_id,
        "name_a": a.name,
        "name_b": b.name,
        "split": a.split,
        "count": count,
        "accuracy_a": float(right_a.mean()),
        "accuracy_b": float(right_b.mean()),
        "difference": float(right_b.mean() - right_a.mean()),
        "both_right": int(np.sum(right_a & right_b)),
        "a_only": a_only,
        "b_only": b_only,
        "both_wrong": int(np.sum(~right_a & ~right_b)),
        "mcnemar_p_value": mcnemar_p_value(a_only, b_only),
        "difference_interval": [low, high],
        "resamples": resamples,
        "seed": seed,
        "significance": SIGNIFICANCE,
        "per_class": per_class,
    }
