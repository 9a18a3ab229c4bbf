"""Near-duplicate-aware splits: a photo and its resized, re-encoded copy stay in one split, hashed
once from the decoded cache; copies the source's own split folders separate are a warning."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from engine.config import DataConfig
from engine.data import SPLITS, load_dataset
from engine.data.cache import DecodedCache
from engine.data.splits import bounded_groups, merge_groups

CLASSES = ("a", "b")


def photo(seed: int, side: int = 96) -> Image.Image:
    """A smooth random picture: coarse noise scaled up, so a perceptual hash can tell it apart."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((side, side), Image.BICUBIC)


def near_copy(image: Image.Image, path) -> None:
    """The picture at two thirds of its size, saved again as a JPEG."""
    image.resize((image.width * 2 // 3, image.height * 2 // 3)).save(path, quality=70)


def photo_folder(root, per_class: int = 10, copies: int = 2) -> list[list[str]]:
    """root/<class>/NN.png with `copies` resized JPEG copies per class; the expected groups."""
    groups = []
    for class_id, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for number in range(per_class):
            picture = photo(class_id * 100 + number)
            picture.save(root / name / f"{number:02d}.png")
            if number < copies:
                near_copy(picture, root / name / f"copy_{number}.jpg")
                groups.append([f"{name}/{number:02d}.png", f"{name}/copy_{number}.jpg"])
    return groups


def split_of(dataset) -> dict[str, str]:
    ids = dataset.item_ids()
    return {ids[i]: split for split in SPLITS for i in dataset.split_indices[split]}


def test_near_copies_land_in_one_split_for_every_seed(tmp_path):
    root = tmp_path / "photos"
    expected = photo_folder(root)
    carved, outside_train = {}, 0
    for seed in range(6):
        dataset = load_dataset(DataConfig(spec=str(root), image_size=48, split_seed=seed))
        dataset.prepare()
        assert dataset.duplicate_groups() == []  # no byte-identical files
        assert dataset.near_duplicate_groups() == expected
        carved[seed] = where = split_of(dataset)
        assert len(where) == 24  # every item in exactly one split
        for original, copy in expected:
            assert where[original] == where[copy], (seed, original, where)
            outside_train += where[original] != "train"
        assert dataset.report()["warnings"] == []
    assert outside_train  # some pairs were carved into validation or test, whole
    # A later load reads the kept groups: its splits keep the copies together before decoding.
    later = load_dataset(DataConfig(spec=str(root), image_size=48, split_seed=3))
    assert later.near_duplicate_groups() == expected
    assert split_of(later) == carved[3]


def test_hashes_come_from_the_decoded_cache_once(tmp_path, monkeypatch):
    from engine.data import hashing

    root = tmp_path / "photos"
    photo_folder(root, per_class=6, copies=1)
    shapes = []
    original = hashing.perceptual_hashes
    monkeypatch.setattr(
        hashing, "perceptual_hashes", lambda images: shapes.append(images.shape) or original(images)
    )
    load_dataset(DataConfig(spec=str(root), image_size=40)).prepare()
    assert shapes == [(14, 40, 40, 3)]  # the cached 40-pixel squares, all 14 items at once

    def no_decoding(self, index, size=None):
        raise AssertionError("an image was decoded again")

    monkeypatch.setattr(DecodedCache, "decode", no_decoding)
    again = load_dataset(DataConfig(spec=str(root), image_size=40, split_seed=7))
    again.prepare()
    assert shapes == [(14, 40, 40, 3)]  # neither hashed nor decoded a second time
    rows, hashes = again.perceptual_hashes()
    assert rows.tolist() == list(range(14)) and hashes.shape == (14, hashing.HASH_WORDS)


def test_copies_the_sources_own_split_folders_separate_are_a_warning(tmp_path):
    root = tmp_path / "split"
    for origin, seeds in (("train", range(0, 8)), ("test", range(50, 53))):
        for class_id, name in enumerate(CLASSES):
            (root / origin / name).mkdir(parents=True)
            for seed in seeds:
                photo(class_id * 100 + seed).save(root / origin / name / f"{seed:02d}.png")
    near_copy(photo(3), root / "test" / "a" / "leak.jpg")  # of train/a/03.png
    (root / "test" / "b" / "exact.png").write_bytes((root / "train" / "b" / "05.png").read_bytes())
    config = DataConfig(spec=str(root), image_size=48, validation_fraction=0)

    dataset = load_dataset(config)
    assert dataset.report()["warnings"] == [
        "1 group of identical or near-identical images sits in more than one split (train, test), "
        "where the source's own split folders put them, so a model is tested on pictures it "
        "trained on; exclude all but one image of each group on the Data page, or move the "
        "copies into one split folder."
    ]
    dataset.prepare()
    report = dataset.report()
    assert report["warnings"][0].startswith("2 groups of identical or near-identical images sit")
    assert report["duplicates_across_splits"] == [
        {"train": ["train/a/03.png"], "test": ["test/a/leak.jpg"]},
        {"train": ["train/b/05.png"], "test": ["test/b/exact.png"]},
    ]
    assert sum(report["counts"]["test"].values()) == 8  # reported, never moved
    # Excluding the test copies ends the warning.
    edited = dataset.with_edits(
        dataclasses.replace(config, exclude=("test/a/leak.jpg", "test/b/exact.png"))
    )
    assert edited.report()["warnings"] == [] and edited.report()["edits"]["excluded"] == 2


def test_a_dataset_too_large_to_compare_pairwise_groups_identical_files_only(tmp_path, monkeypatch):
    from engine.data import hashing, splits

    root = tmp_path / "photos"
    photo_folder(root, per_class=6, copies=1)
    monkeypatch.setattr(splits, "MAX_HASHED_ITEMS", 13)  # one fewer than the folder's 14 files
    monkeypatch.setattr(hashing, "perceptual_hashes", lambda images: pytest.fail("hashed"))
    dataset = load_dataset(DataConfig(spec=str(root), image_size=40))
    before = {split: indices.copy() for split, indices in dataset.split_indices.items()}
    dataset.prepare()
    assert not dataset.copies.hashable and dataset.near_duplicate_groups() == []
    assert dataset.report()["near_duplicates_checked"] is False
    for split in SPLITS:
        assert np.array_equal(dataset.split_indices[split], before[split])


def test_chains_of_look_alikes_are_broken_but_copies_stay(monkeypatch):
    from engine.data import hashing

    def chained(values, distance):
        """Connected components of |a - b| <= distance over one number per row."""
        order = np.argsort(values[:, 0], kind="stable")
        groups, current = [], [int(order[0])]
        for before, after in zip(order[:-1], order[1:], strict=True):
            if values[after, 0] - values[before, 0] <= distance:
                current.append(int(after))
            else:
                groups, current = groups + [current], [int(after)]
        return sorted(sorted(group) for group in groups + [current] if len(group) > 1)

    monkeypatch.setattr(hashing, "group_near_duplicates", chained)
    chain = list(range(40))  # each one from the next: a chain of 40 look-alikes
    values = np.array([[value] for value in chain + [100, 100, 200, 202, 204]], dtype=np.uint64)
    assert bounded_groups(values, 20, limit=10) == [[40, 41], [42, 43, 44]]


@pytest.mark.parametrize(
    "lists, merged",
    [
        (([[0, 1], [5, 6]], [[1, 2], [7, 8]]), [[0, 1, 2], [5, 6], [7, 8]]),
        (([[3, 9]], [[9, 4]], [[4, 1]]), [[1, 3, 4, 9]]),
        (([], []), []),
    ],
)
def test_identical_and_near_groups_merge_where_they_share_an_item(lists, merged):
    assert merge_groups(*lists) == merged
