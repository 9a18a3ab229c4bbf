"""Splits: identical files kept within one split, and a run's manifest of split members."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import pattern_image, write_class_folder
from PIL import Image

from engine.config import DataConfig
from engine.data import SPLITS, load_dataset
from engine.data.dataset import stratified_split
from engine.data.sources import RawSource
from engine.errors import UserError

# Copies under other names; the last pair spans two classes.
COPIES = {
    "cat/cat_000.png": "cat/copy_of_cat.png",
    "dog/dog_001.png": "dog/zz_copy.png",
    "fox/fox_002.png": "cat/fox_in_the_cat_folder.png",
}


def folder_with_copies(root):
    write_class_folder(root, per_class=8)
    for original, copy in COPIES.items():
        shutil.copyfile(root / original, root / copy)
    return root


def split_of(dataset) -> dict[str, str]:
    ids = dataset.item_ids()
    return {ids[i]: split for split in SPLITS for i in dataset.split_indices[split]}


def test_duplicate_pairs_stay_within_one_split(tmp_path):
    root = folder_with_copies(tmp_path / "pets")
    for seed in range(8):
        dataset = load_dataset(DataConfig(spec=str(root), image_size=16, split_seed=seed))
        assert sorted(dataset.duplicate_groups()) == sorted(sorted(pair) for pair in COPIES.items())
        where = split_of(dataset)
        assert len(where) == 27  # every item in exactly one split
        for original, copy in COPIES.items():
            assert where[original] == where[copy], (seed, original, where)
        assert dataset.report()["duplicates_across_splits"] == []
    # Carved splits still take about 15% + 15% of the 24 distinct pictures.
    counts = {split: sum(c.values()) for split, c in dataset.counts().items()}
    assert counts["test"] >= 3 and counts["validation"] >= 3 and counts["train"] >= 15


def test_same_seed_gives_the_same_split_with_duplicates(tmp_path):
    root = folder_with_copies(tmp_path / "pets")
    first = load_dataset(DataConfig(spec=str(root), split_seed=3))
    second = load_dataset(DataConfig(spec=str(root), split_seed=3))
    other = load_dataset(DataConfig(spec=str(root), split_seed=4))
    for split in SPLITS:
        assert np.array_equal(first.split_indices[split], second.split_indices[split])
    assert any(
        not np.array_equal(first.split_indices[split], other.split_indices[split])
        for split in SPLITS
    )


def test_grouped_split_takes_whole_groups_by_the_first_items_label():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    groups = np.array([0, 0, 0, 3, 4, 4, 6, 7, 8, 9])  # items 0-2 and 4-5 are copies
    for seed in range(20):
        kept, taken = stratified_split(np.arange(10), labels, 0.5, seed, groups)
        assert sorted(kept.tolist() + taken.tolist()) == list(range(10))
        for group in ({0, 1, 2}, {4, 5}):
            assert group <= set(kept.tolist()) or group <= set(taken.tolist())
        # One of the two class-0 groups and two of the five class-1 groups (2.5 rounds to 2) are taken.
        assert len({int(groups[i]) for i in taken if labels[groups[i]] == 0}) == 1
        assert len({int(groups[i]) for i in taken if labels[groups[i]] == 1}) == 2


def test_only_files_of_colliding_sizes_are_hashed(tmp_path, monkeypatch):
    root = tmp_path / "sizes"
    for class_id, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(4):  # a different side each, so a different byte size each
            side = 16 + 4 * (class_id * 4 + i)
            Image.fromarray(pattern_image(class_id, i, size=side)).save(root / name / f"{i}.png")
    shutil.copyfile(root / "a" / "2.png", root / "b" / "copy.png")
    hashed = []
    original = RawSource.content_digest
    monkeypatch.setattr(
        RawSource,
        "content_digest",
        lambda self, index: hashed.append(self.name(index)) or original(self, index),
    )
    dataset = load_dataset(DataConfig(spec=str(root), image_size=16))
    assert sorted(hashed) == ["a/2.png", "b/copy.png"]
    assert dataset.duplicate_groups() == [["a/2.png", "b/copy.png"]]


def test_duplicates_across_the_sources_own_splits_are_reported_not_moved(tmp_path):
    root = tmp_path / "d"
    write_class_folder(root / "train", per_class=6)
    write_class_folder(root / "test", classes=("cat", "dog", "fox"), per_class=2, size=20)
    shutil.copyfile(root / "train" / "dog" / "dog_003.png", root / "test" / "dog" / "leak.png")
    dataset = load_dataset(DataConfig(spec=str(root), image_size=16))
    where = split_of(dataset)
    assert where["train/dog/dog_003.png"] in ("train", "validation")
    assert where["test/dog/leak.png"] == "test"
    assert sum(dataset.counts()["test"].values()) == 7
    assert dataset.report()["duplicates_across_splits"] == [
        {where["train/dog/dog_003.png"]: ["train/dog/dog_003.png"], "test": ["test/dog/leak.png"]}
    ]


def test_identical_array_rows_are_grouped(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    labels = np.arange(30) % 2
    images[7], labels[7] = images[2], labels[2]
    images[20] = images[11]  # the same picture under the other label
    np.savez(tmp_path / "rows.npz", x_train=images, y_train=labels)
    for seed in range(6):
        dataset = load_dataset(DataConfig(spec=str(tmp_path / "rows.npz"), split_seed=seed))
        assert dataset.duplicate_groups() == [["train[2]", "train[7]"], ["train[11]", "train[20]"]]
        where = split_of(dataset)
        assert where["train[2]"] == where["train[7]"]
        assert where["train[11]"] == where["train[20]"]


# ----- manifest -------------------------------------------------------------------------
def test_manifest_pins_the_split_members(class_folder):
    trained = load_dataset(DataConfig(spec=str(class_folder), image_size=16, split_seed=1))
    manifest = json.loads(json.dumps(trained.manifest()))
    assert manifest["fingerprint"] == trained.fingerprint
    assert manifest["class_names"] == ["cat", "dog", "fox"]
    assert manifest["image_size"] == 16
    assert sorted(name for names in manifest["splits"].values() for name in names) == sorted(
        f"{name}/{name}_{i:03d}.png" for name in ("cat", "dog", "fox") for i in range(12)
    )

    # Another seed would split differently; the manifest's members win.
    later = load_dataset(DataConfig(spec=str(class_folder), image_size=16, split_seed=2))
    assert not np.array_equal(later.split_indices["test"], trained.split_indices["test"])
    later.verify_manifest(manifest)
    for split in SPLITS:
        assert np.array_equal(later.split_indices[split], trained.split_indices[split])
        assert [later.item_name(i) for i in later.indices(split)] == manifest["splits"][split]


@pytest.mark.parametrize(
    "change, detail",
    [
        ("edit", "were edited or replaced"),
        ("add", "1 image is new, such as dog/extra.png"),
        ("remove", "1 image is gone, such as cat/cat_004.png"),
    ],
)
def test_changed_data_fails_the_manifest(class_folder, change, detail):
    manifest = load_dataset(DataConfig(spec=str(class_folder), image_size=16)).manifest()
    if change == "edit":
        Image.fromarray(pattern_image(1, 99, size=30)).save(class_folder / "fox" / "fox_005.png")
    elif change == "add":
        Image.fromarray(pattern_image(1, 99)).save(class_folder / "dog" / "extra.png")
    else:
        (class_folder / "cat" / "cat_004.png").unlink()
    later = load_dataset(DataConfig(spec=str(class_folder), image_size=16))
    before = {split: indices.copy() for split, indices in later.split_indices.items()}
    with pytest.raises(UserError, match="changed since it was trained") as error:
        later.verify_manifest(manifest)
    assert detail in str(error.value)
    assert str(error.value).endswith("or train a new run.")
    for split in SPLITS:
        assert np.array_equal(later.split_indices[split], before[split])


def test_the_same_files_copied_with_new_times_still_match_the_manifest(class_folder, tmp_path):
    """A folder copied or unpacked again has new modification times, so a new fingerprint, but
    the same bytes: its runs still evaluate. A manifest without a content digest (an older run)
    cannot tell, and refuses as before."""
    trained = load_dataset(DataConfig(spec=str(class_folder), image_size=16, split_seed=1))
    manifest = json.loads(json.dumps(trained.manifest()))
    assert len(manifest["content"]) == 40
    copy = tmp_path / "copied"
    shutil.copytree(class_folder, copy)
    for file in copy.rglob("*.png"):
        os.utime(file, ns=(file.stat().st_mtime_ns + 10**9, file.stat().st_mtime_ns + 10**9))
    later = load_dataset(DataConfig(spec=str(copy), image_size=16, split_seed=2))
    assert later.fingerprint != trained.fingerprint
    later.verify_manifest(manifest)
    for split in SPLITS:
        assert np.array_equal(later.split_indices[split], trained.split_indices[split])

    older = {key: value for key, value in manifest.items() if key != "content"}
    with pytest.raises(UserError, match="were edited or replaced"):
        load_dataset(DataConfig(spec=str(copy), image_size=16)).verify_manifest(older)
    # one pixel changed, the size kept: the bytes differ, so the copy is not the trained data
    file = copy / "dog" / "dog_002.png"
    data = bytearray(file.read_bytes())
    data[-20] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(UserError, match="were edited or replaced"):
        load_dataset(DataConfig(spec=str(copy), image_size=16)).verify_manifest(manifest)


def test_the_content_digest_reports_its_reading_once_per_fingerprint(class_folder):
    dataset = load_dataset(DataConfig(spec=str(class_folder), image_size=16))
    count = len(dataset.item_ids())
    calls = []
    first = dataset.manifest(progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, count) for done in range(1, count + 1)]
    calls.clear()
    again = load_dataset(DataConfig(spec=str(class_folder), image_size=16))
    assert again.manifest(progress=lambda *done: calls.append(done)) == first
    assert calls == []  # the digest was kept: nothing is read again


def test_other_class_names_fail_the_manifest(class_folder):
    manifest = load_dataset(DataConfig(spec=str(class_folder))).manifest()
    manifest["class_names"] = ["cat", "dog", "wolf"]
    with pytest.raises(UserError, match="classes were cat, dog, wolf and are now cat, dog, fox"):
        load_dataset(DataConfig(spec=str(class_folder))).verify_manifest(manifest)
