"""The data health audit (engine.data.health) and its hashing (engine.data.hashing), on images
made here: copies exact, resized, re-encoded and cropped, odd images, leaks and moved labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from engine.data import hashing, health_features
from engine.data.health import audit


def photo(seed: int, size: int = 96) -> Image.Image:
    """A picture with the spread of a photo: smooth colour areas and a few sharp shapes."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x), int(y), int(x + w), int(y + h)), fill=fill)
    return image


def save_jpeg(image: Image.Image, path: Path, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=quality)
    return path


def smaller_copy(source: Path, target: Path, scale: float = 0.6, quality: int = 70) -> None:
    with Image.open(source) as image:
        size = (int(image.width * scale), int(image.height * scale))
        save_jpeg(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), target, quality)


def files(groups: list[list[dict]]) -> list[set[str]]:
    return [{member["file"] for member in group} for group in groups]


@pytest.fixture
def odd_folder(tmp_path) -> Path:
    """3 classes of 12 photos, with copies and odd images planted (see the test's asserts)."""
    root = tmp_path / "photos"
    for class_id, name in enumerate(("cat", "dog", "fox")):
        for number in range(12):
            save_jpeg(photo(class_id * 100 + number), root / name / f"{name}_{number:02d}.jpg")
    cat = root / "cat"
    shutil.copy(cat / "cat_00.jpg", cat / "cat_00_copy.jpg")
    shutil.copy(cat / "cat_00.jpg", root / "dog" / "looks_like_a_dog.jpg")  # a label conflict
    smaller_copy(cat / "cat_01.jpg", cat / "cat_01_small.jpg")
    with Image.open(cat / "cat_02.jpg") as image:  # 3% cut off one side
        save_jpeg(image.crop((3, 0, 96, 96)), cat / "cat_02_cropped.jpg")
    fox = root / "fox"
    save_jpeg(Image.fromarray((np.asarray(photo(900)) * 0.06).astype(np.uint8)), fox / "dark.jpg")
    bright = 255 - ((255 - np.asarray(photo(901), dtype=np.float32)) * 0.06)
    save_jpeg(Image.fromarray(bright.astype(np.uint8)), fox / "bright.jpg")
    save_jpeg(photo(902).filter(ImageFilter.GaussianBlur(5)), fox / "blurry.jpg")
    flat = np.full((96, 96, 3), (120, 90, 60), dtype=np.uint8)
    save_jpeg(Image.fromarray(flat), fox / "flat.jpg")
    save_jpeg(photo(903).convert("L").convert("RGB"), fox / "grey.jpg")
    save_jpeg(photo(904, size=96).resize((300, 40)), fox / "wide.jpg")
    whole = (fox / "fox_00.jpg").read_bytes()
    (fox / "broken.jpg").write_bytes(whole[:300])  # no header left: not an item at all
    (fox / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])  # fails only when decoded
    return root


def test_audit_finds_copies_conflicts_and_odd_images(odd_folder):
    report = audit(str(odd_folder))

    assert files(report["exact_duplicates"]) == [
        {"cat/cat_00.jpg", "cat/cat_00_copy.jpg", "dog/looks_like_a_dog.jpg"}
    ]
    near = files(report["near_duplicates"])
    assert {"cat/cat_01.jpg", "cat/cat_01_small.jpg"} in near
    assert {"cat/cat_02.jpg", "cat/cat_02_cropped.jpg"} in near
    assert len(near) == 2, near  # no different photos taken for copies
    assert 20 <= report["near_duplicate_distance"] <= hashing.NEAR_DUPLICATE_DISTANCE
    assert files(report["label_conflicts"]) == [
        {"cat/cat_00.jpg", "cat/cat_00_copy.jpg", "dog/looks_like_a_dog.jpg"}
    ]
    member = report["label_conflicts"][0][0]
    assert set(member) == {"file", "class", "split"} and member["class"] == "cat"

    issues = {
        kind: [entry["file"] for entry in entries]
        for kind, entries in report["image_issues"].items()
    }
    assert sorted(issues["unreadable"]) == ["fox/broken.jpg", "fox/cut.jpg"]
    unreadable = {entry["file"]: entry for entry in report["image_issues"]["unreadable"]}
    assert unreadable["fox/broken.jpg"]["class"] is None  # left out while indexing
    assert unreadable["fox/cut.jpg"]["class"] == "fox"  # an item that failed to decode
    assert unreadable["fox/cut.jpg"]["split"] in ("train", "validation", "test")
    assert all(entry["reason"] for entry in unreadable.values())
    assert issues["dark"] == ["fox/dark.jpg"]
    assert issues["bright"] == ["fox/bright.jpg"]
    # The flat image has no sharpness to judge; the small copy is blurred by its enlarging.
    assert issues["blurry"][0] == "fox/blurry.jpg"
    assert set(issues["blurry"]) <= {"fox/blurry.jpg", "cat/cat_01_small.jpg"}
    assert issues["low_information"] == ["fox/flat.jpg"]
    assert "fox/grey.jpg" in issues["grayscale"] and set(issues["grayscale"]) <= {
        "fox/grey.jpg",
        "fox/dark.jpg",  # too dark to have colour
        "fox/bright.jpg",
        "fox/flat.jpg",
    }
    assert issues["odd_aspect_ratio"] == ["fox/wide.jpg"]
    assert report["image_issues"]["odd_aspect_ratio"][0]["score"] > 2.5
    assert issues["odd_size"] == []
    assert report["image_issues"]["dark"][0]["score"] < 0.08

    balance = report["class_balance"]
    assert sum(sum(per_class.values()) for per_class in balance.values()) == report["images"]
    assert report["images"] == 12 * 3 + 4 + 6  # copies and odd images, less the broken file
    assert "label_issues" not in report


def test_a_second_audit_reads_the_kept_measurements(odd_folder, monkeypatch):
    first = audit(str(odd_folder))

    def measured_again(images):
        raise AssertionError("the decoded images were measured again")

    monkeypatch.setattr(health_features, "_measure", measured_again)
    second = audit(str(odd_folder))
    assert second == first


def test_leaks_between_train_and_test_are_found(tmp_path):
    root = tmp_path / "split"
    for class_id, name in enumerate(("ant", "bee")):
        for number in range(15):
            save_jpeg(photo(class_id * 100 + number), root / "train" / name / f"{number:02d}.jpg")
        for number in range(8):
            save_jpeg(
                photo(500 + class_id * 100 + number), root / "test" / name / f"{number:02d}.jpg"
            )
    leaked = []
    for number in range(10):  # 5 copied as they are, 5 re-encoded smaller
        name = ("ant", "bee")[number % 2]
        source = root / "test" / name / f"{number // 2:02d}.jpg"
        target = root / "train" / name / f"leak_{number}.jpg"
        if number < 5:
            shutil.copy(source, target)
        else:
            smaller_copy(source, target, scale=0.7, quality=75)
        leaked.append(f"test/{name}/{number // 2:02d}.jpg")

    report = audit(str(root))
    in_leaks = {member["file"] for group in report["leakage"] for member in group}
    assert sum(file in in_leaks for file in leaked) >= 9
    for group in report["leakage"]:  # a copy in train, or in the validation carved from it
        splits = {member["split"] for member in group}
        assert "test" in splits and len(splits) >= 2
    assert len(report["exact_duplicates"]) == 5
    assert not report["label_conflicts"]


def noisy_digits(path: Path, share: float = 0.05, seed: int = 0) -> tuple[set[str], dict]:
    """scikit-learn's digits as an .npz with `share` of the labels moved to another class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target.copy()
    rng = np.random.default_rng(seed)
    moved = rng.choice(len(labels), int(round(share * len(labels))), replace=False)
    labels[moved] = (labels[moved] + rng.integers(1, 10, len(moved))) % 10
    np.savez(path, X_train=images, y_train=labels)
    truth = {f"train[{row}]": str(digits.target[row]) for row in moved.tolist()}
    return set(truth), truth


def test_label_issues_rank_moved_labels_first(tmp_path):
    moved, truth = noisy_digits(tmp_path / "digits.npz")
    report = audit(str(tmp_path / "digits.npz"), label_issues=True)

    top = report["label_issues"][: len(moved)]
    hits = [issue for issue in top if issue["file"] in moved]
    assert len(hits) >= 0.8 * len(moved)
    assert sum(issue["suggested"] == truth[issue["file"]] for issue in hits) >= 0.8 * len(hits)
    qualities = [issue["quality"] for issue in report["label_issues"]]
    assert set(report["label_issues"][0]) == {"file", "given", "suggested", "quality"}
    assert report["label_model"]["features"] == "simple image features"
    assert report["label_model"]["folds"] == 5 and report["label_model"]["accuracy"] > 0.85
    assert qualities and max(qualities) < 0.5


def test_label_issues_from_a_run_use_its_penultimate_layer(tmp_path, isolated_dirs):
    import keras

    from engine import runs
    from engine.config import RunConfig

    noisy_digits(tmp_path / "digits.npz")
    config = RunConfig().replace(data={"spec": str(tmp_path / "digits.npz"), "image_size": 16})
    run_dir = runs.create_run(config, tmp_path / "runs")
    inputs = keras.Input((16, 16, 3))
    hidden = keras.layers.Dense(6, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    model.save(run_dir / "best.keras")

    report = audit(str(tmp_path / "digits.npz"), run_dir=run_dir, label_issues=True)
    assert report["label_model"]["features"] == f"run {run_dir.name}"
    assert report["label_model"]["folds"] == 5
    kept = list(isolated_dirs.rglob("run-*.npz"))
    assert len(kept) == 1
    with np.load(kept[0]) as stored:
        assert stored["features"].shape == (1797, 6)  # the run's size (16 px), its hidden layer


def test_exact_and_near_groups_by_union_find():
    assert hashing.exact_groups(["a", "b", "a", "", "", "b", "c"]) == [[0, 2], [1, 5]]
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(40, 8), dtype=np.uint64)
    hashes[[7, 9, 30]] = hashes[[3, 3, 12]]
    hashes[7, 0] ^= np.uint64(0b111)  # 3 bits from 3
    hashes[9, 0] ^= np.uint64(0b111 | 0b11 << 20)  # 2 bits from 7: a chain 3 - 7 - 9
    assert hashing.group_near_duplicates(hashes, 10) == [[3, 7, 9], [12, 30]]
    assert hashing.group_near_duplicates(hashes, 2) == [[7, 9], [12, 30]]
    assert hashing.hash_distances(hashes, 3)[[3, 7, 9]].tolist() == [0, 3, 5]


def test_a_set_of_look_alikes_gets_a_lower_threshold():
    # Random hashes lie about 220 of 504 bits from their nearest neighbour (photos: 201).
    rng = np.random.default_rng(1)
    spread = rng.integers(0, 2**63, size=(200, 8), dtype=np.uint64)
    _, nearest = hashing.close_pairs(spread, 96)
    assert hashing.near_duplicate_distance(nearest) == int(0.4 * np.median(nearest)) >= 80
    base = rng.integers(0, 2**63, size=8, dtype=np.uint64)
    flips = rng.random((200, 8, 64)) < 0.04  # each look-alike differs from base in ~20 bits
    close = base ^ (flips * (np.uint64(1) << np.arange(64, dtype=np.uint64))).sum(axis=2).astype(
        np.uint64
    )
    _, nearest = hashing.close_pairs(close, 96)
    assert hashing.near_duplicate_distance(nearest) < 20
    assert len(hashing.group_near_duplicates(close)) < 20  # not one chain of 200


def test_perceptual_hashes_see_through_resizing_but_not_other_photos():
    images = [np.asarray(photo(seed)) for seed in range(4)]
    small = np.asarray(photo(0).resize((60, 60)).resize((96, 96)))
    hashes = hashing.perceptual_hashes(np.stack([*images, small]))
    assert hashes.shape == (5, hashing.HASH_WORDS) and hashes.dtype == np.uint64
    distances = hashing.hash_distances(hashes, 4)
    assert distances[0] <= 40 and distances[1:4].min() > 120
