"""The data health audit: copies, leaks between splits, label conflicts, odd images, label issues.

`audit(dataset)` reads the decoded cache (what training sees, in the splits training uses) and
returns a JSON-ready report. Copies: byte-identical groups from indexing, near copies from the
cache's perceptual hashes (engine.data.hashing); a group that spans two splits is a leak, one
that spans two classes a label conflict. Image issues are measured on the cached pixels against
the set's own median, with thresholds that flag under 1% of the clean photo sets in
../shared/data (a grey photo among colour ones is a finding, not noise). Label issues are
cleanlab's, from out-of-sample probabilities of a logistic regression (K-fold) on simple image
features (engine.data.health_features) or on a run's penultimate layer. Measurements are kept
beside the decoded cache, so a second audit only reads them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.config import DataConfig
from engine.data import SPLITS, Dataset, load_dataset
from engine.data.hashing import (
    NEAR_DUPLICATE_DISTANCE,
    UnionFind,
    close_pairs,
    near_duplicate_distance,
)
from engine.data.health_features import check_run, image_measures, run_features

Progress = Callable[[str, int, int], None]  # (stage, done, total)

DARK, BRIGHT = 0.08, 0.92  # mean grey level (0..1); only against a set that is not itself so
BLURRY = 0.1  # variance of the Laplacian over the grey levels' variance, over the set's median
LOW_INFORMATION = 0.4  # entropy of the grey levels (bits), over the set's median
SMALL, LARGE = 0.25, 4.0  # original side (square root of width x height), over the set's median
NARROW, WIDE = 0.4, 2.5  # original aspect ratio (width / height), over the set's median
GRAYSCALE, COLOUR_SET = 0.01, 0.05  # mean colourfulness (max - min channel, 0..1) of an image
FOLDS = 5  # cross-validation folds for the label-issue classifier
REGULARISATION = 0.01  # LogisticRegression's C: measured best of 0.003..1 on digits and photos


def audit(
    data: Dataset | DataConfig | str,
    run_dir: Path | None = None,
    label_issues: bool = False,
    progress: Progress | None = None,
) -> dict:
    """The health report of a dataset (a Dataset, a DataConfig or a spec), decoding it first.

    With label_issues, photos whose label is probably wrong are found, from the features of
    the run at run_dir (its penultimate layer) or, without one, simple image features.
    """
    report_progress = progress or (lambda stage, done, total: None)
    if run_dir is not None:
        check_run(run_dir)  # a wrong run is a sentence before anything is decoded
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    dataset.prepare(lambda done, total: report_progress("decode", done, total))
    count = len(dataset.labels)
    report_progress("hash", 0, count)  # hashed while decoding, unless the cache was older
    hashed_items, hashes = dataset.perceptual_hashes()
    report_progress("hash", count, count)
    measures = image_measures(dataset, report_progress)

    ids, names = dataset.item_ids(), dataset.class_names
    split_of = np.full(len(ids), "", dtype=object)  # "" for an item the user excluded
    for split in SPLITS:
        split_of[dataset.split_indices[split]] = split
    # The items audited: decoded, and in a split.
    items = np.sort(np.concatenate([dataset.indices(split) for split in SPLITS]))

    def member(index: int) -> dict:
        label = names[dataset.labels[index]]
        return {"file": ids[index], "class": label, "split": split_of[index]}

    exact, copies, threshold = _copy_groups(dataset, items, hashed_items, hashes)
    report = {
        "spec": dataset.source.spec,
        "images": int(len(items)),
        "class_names": names,
        "image_size": dataset.image_size,
        "near_duplicate_distance": threshold,
        "exact_duplicates": [[member(i) for i in group] for group in exact],
        "near_duplicates": [
            [member(i) for i in group]
            for group in copies
            if not any(set(group) <= set(same) for same in exact)
        ],
        "leakage": [
            [member(i) for i in group] for group in copies if len(set(split_of[group])) > 1
        ],
        "label_conflicts": [
            [member(i) for i in group]
            for group in copies
            if len(set(dataset.labels[group].tolist())) > 1
        ],
        "image_issues": {
            "unreadable": _unreadable(dataset, member),
            **_image_issues(dataset, measures, items, member),
        },
        "class_balance": dataset.counts(),
    }
    if label_issues:
        report["label_issues"], report["label_model"] = find_label_issues(
            dataset, items, run_dir, measures["features"], report_progress
        )
    return report


def _copy_groups(
    dataset: Dataset, items: np.ndarray, hashed_items: np.ndarray, hashes: np.ndarray
) -> tuple[list[list[int]], list[list[int]], int]:
    """(byte-identical groups, groups of copies of any kind, the near-copy distance in bits)."""
    usable = np.zeros(len(dataset.labels), dtype=bool)
    usable[items] = True
    identical = [
        [index for index in dataset.find_items(group) if index is not None and usable[index]]
        for group in dataset.duplicate_groups()
    ]
    exact = sorted(group for group in identical if len(group) > 1)
    keep = usable[hashed_items]
    rows, hashes = hashed_items[keep], hashes[keep]
    pairs, nearest = close_pairs(hashes, NEAR_DUPLICATE_DISTANCE)
    threshold = near_duplicate_distance(nearest)
    links = UnionFind(len(dataset.labels))
    for first, second, _ in pairs[pairs[:, 2] <= threshold].tolist():
        links.union(int(rows[first]), int(rows[second]))
    for group in exact:
        for index in group[1:]:
            links.union(group[0], index)
    return exact, links.groups(), threshold


def _unreadable(dataset: Dataset, member: Callable[[int], dict]) -> list[dict]:
    """The load report's files: not usable as images, or failed to decode; class and split when
    the file is an item."""
    found = dataset.find_items([entry["file"] for entry in dataset.skipped()])
    entries = []
    for entry, index in zip(dataset.skipped(), found, strict=True):
        known = member(index) if index is not None else {"class": None, "split": None}
        entries.append({**known, "file": entry["file"], "score": None, "reason": entry["reason"]})
    return entries


def _image_issues(
    dataset: Dataset, measures: dict, items: np.ndarray, member: Callable[[int], dict]
) -> dict[str, list[dict]]:
    """Each kind of odd image: its files with their scores, the most extreme first."""
    brightness, chroma = measures["brightness"][items], measures["chroma"][items]
    sharpness = measures["sharpness"][items]
    if np.isfinite(sharpness).any():
        sharpness = sharpness / max(np.nanmedian(sharpness), 1e-9)
    entropy = measures["entropy"][items] / max(np.median(measures["entropy"][items]), 1e-9)
    typical_brightness = np.median(brightness) if len(items) else 0.5
    checks = {
        "dark": (brightness, brightness < DARK if typical_brightness > 2 * DARK else None),
        "bright": (brightness, brightness > BRIGHT if typical_brightness < 0.8 else None),
        "blurry": (sharpness, sharpness < BLURRY),
        "low_information": (entropy, entropy < LOW_INFORMATION),
        "grayscale": (chroma, chroma < GRAYSCALE if np.median(chroma) >= COLOUR_SET else None),
    }
    headers = dataset.source.headers
    if headers and dataset.source.arrays is None and len(items):
        width = np.array([headers[index][0] for index in items], dtype=np.float64)
        height = np.array([headers[index][1] for index in items], dtype=np.float64)
        side = np.sqrt(width * height)
        side /= max(np.median(side), 1.0)
        aspect = width / np.maximum(height, 1.0)
        aspect /= max(np.median(aspect), 1e-9)
        checks["odd_size"] = (side, (side < SMALL) | (side > LARGE))
        checks["odd_aspect_ratio"] = (aspect, (aspect < NARROW) | (aspect > WIDE))
    issues = {}
    for kind, (scores, flagged) in checks.items():
        positions = np.flatnonzero(flagged) if flagged is not None else np.zeros(0, np.int64)
        # The most extreme first: furthest from 1 for ratios, furthest from the middle otherwise.
        extremity = np.abs(np.log(np.maximum(scores[positions], 1e-9)))
        if kind in ("dark", "bright"):
            extremity = np.abs(scores[positions] - 0.5)
        issues[kind] = [
            {**member(int(items[position])), "score": round(float(scores[position]), 4)}
            for position in positions[np.argsort(-extremity, kind="stable")]
        ]
    return issues


def find_label_issues(
    dataset: Dataset,
    items: np.ndarray,
    run_dir: Path | None,
    simple_features: np.ndarray,
    progress: Progress,
) -> tuple[list[dict], dict]:
    """(label issues, how they were found): cleanlab on K-fold out-of-sample probabilities."""
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if run_dir is not None:
        features, described = run_features(run_dir, dataset, progress), f"run {Path(run_dir).name}"
    else:
        features, described = simple_features, "simple image features"
    present, labels = np.unique(dataset.labels[items], return_inverse=True)
    counts = np.bincount(labels)
    folds = int(min(FOLDS, counts.min())) if len(counts) > 1 else 0
    model = {"features": described, "folds": folds, "accuracy": None}
    if folds < 2:
        model["note"] = "Label issues need at least 2 classes with 2 images or more each."
        return [], model
    features = np.asarray(features[items], dtype=np.float32)
    probabilities = np.zeros((len(items), len(present)))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=0)
    # One BLAS thread: on a busy machine more threads wait on each other (50x slower measured).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: a few more iterations change no ranking
        for fold, (train, held_out) in enumerate(splitter.split(features, labels)):
            progress("labels", fold, folds)
            classifier = make_pipeline(
                StandardScaler(), LogisticRegression(C=REGULARISATION, max_iter=300)
            )
            classifier.fit(features[train], labels[train])
            probabilities[held_out] = classifier.predict_proba(features[held_out])
        progress("labels", folds, folds)
        # n_jobs=1: cleanlab's default forks a pool, and a fork of a process with TensorFlow's
        # threads running (the dashboard, a test worker) can hang on a lock held by one of them.
        ranked = cleanlab_issues(
            labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1
        )
        quality = get_label_quality_scores(labels, probabilities)
    model["accuracy"] = round(float((probabilities.argmax(axis=1) == labels).mean()), 4)
    names, ids = dataset.class_names, dataset.item_ids()
    issues = [
        {
            "file": ids[items[position]],
            "given": names[present[labels[position]]],
            "suggested": names[present[probabilities[position].argmax()]],
            "quality": round(float(quality[position]), 4),
        }
        for position in np.asarray(ranked, dtype=np.int64).tolist()
    ]
    return issues, model
