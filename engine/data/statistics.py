"""What a source tells before anything is decoded: usable classes, image sizes and modes, a model size."""

from __future__ import annotations

from collections import Counter

import numpy as np

from engine.data.sources import RawSource
from engine.errors import UserError


def check_classes(source: RawSource) -> None:
    """Refuse a source with fewer than 2 classes, or with a class that has no usable item."""
    names = source.class_names
    if len(names) < 2:
        raise UserError(
            f"{source.spec} has {len(names)} class; a classifier needs at least 2 class folders or labels."
        )
    tally = (
        np.bincount(source.labels, minlength=len(names))
        if len(source.labels)
        else np.zeros(len(names), int)
    )
    empty = [name for name, count in zip(names, tally, strict=True) if count == 0]
    if empty:
        raise UserError(
            f"Class {', '.join(map(repr, empty))} of {source.spec} has no usable image; add images to it or remove it."
        )


def across_splits_warning(groups: list[dict[str, list[str]]]) -> str:
    """The load report's sentence for groups of copies that sit in more than one split."""
    order = ("train", "validation", "test")
    splits = sorted({split for group in groups for split in group}, key=order.index)
    count = len(groups)
    what = (
        "1 group of identical or near-identical images sits"
        if count == 1
        else f"{count:,} groups of identical or near-identical images sit"
    )
    return (
        f"{what} in more than one split ({', '.join(splits)}), where the source's own split "
        "folders put them, so a model is tested on pictures it trained on; exclude all but one "
        "image of each group on the Data page, or move the copies into one split folder."
    )


def auto_image_size(source: RawSource) -> int:
    """A square side for the model when the user gave none: the median side, within 32..128."""
    if not source.headers:
        return 64
    sides = [min(width, height) for width, height, _ in source.headers]
    return int(min(128, max(32, np.median(sides))))


def header_statistics(headers: list[tuple[int, int, str]] | None) -> dict:
    """Original image sizes, aspect ratios and colour modes from (width, height, mode) headers."""
    if not headers:
        return {"images": 0}
    widths = np.array([h[0] for h in headers])
    heights = np.array([h[1] for h in headers])
    aspects = widths / np.maximum(heights, 1)
    return {
        "images": len(headers),
        "width": _summary(widths),
        "height": _summary(heights),
        "aspect_ratio": _summary(aspects),
        "modes": dict(Counter(h[2] for h in headers).most_common()),
        "distinct_sizes": len(set(zip(widths.tolist(), heights.tolist(), strict=True))),
    }


def _summary(values: np.ndarray) -> dict:
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def without_oversized(summary: dict, dataset) -> dict:
    """The summary with images whose header is over max_pixels skipped, as training skips them."""
    source, cap = dataset.source, dataset.config.max_pixels
    if source.arrays is not None or not source.headers or summary.get("cached"):
        return summary  # arrays are never capped; a built cache has the decoder's list already
    for split, indices in dataset.split_indices.items():
        for index in indices.tolist():
            width, height, _ = source.headers[index]
            if width * height <= cap:
                continue
            summary["counts"][split][dataset.class_names[dataset.labels[index]]] -= 1
            summary["images"] -= 1
            reason = f"too large: {width}x{height} pixels is over the cap of {cap:,}"
            summary["skipped"].append({"file": dataset.item_name(index), "reason": reason})
    return summary
