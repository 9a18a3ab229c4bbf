"""One decode-and-resize path for previews and training, gallery items found by their stored ids,
a damaged manifest, and the progress that loading a folder or a tfds dataset reports."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pattern_image, write_class_folder
from PIL import Image

from engine.config import DataConfig
from engine.data import folders as folders_module
from engine.data import load_dataset
from engine.data.images import array_to_rgb, load_resized, resize_array
from engine.errors import UserError
from engine.evaluation import error_analysis, gallery_images


# ----- previews and training decode alike -------------------------------------------------------
@pytest.fixture
def wide_npz(tmp_path):
    """Colour images three times wider than tall, with different content on the left and right."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (24, 10, 30, 3), dtype=np.uint8)
    path = tmp_path / "wide.npz"
    np.savez(path, X_train=images, y_train=np.arange(24) % 2)
    return path, images


def test_array_previews_are_the_cropped_training_pixels(wide_npz, tmp_path):
    path, images = wide_npz
    dataset = load_dataset(DataConfig(spec=str(path), image_size=8, resize="crop"), tmp_path)
    rows = np.arange(len(images))
    preview = dataset.sample_images(rows)  # before the cache exists: decoded now
    preview_large = dataset.sample_images(rows, size=24)
    assert not dataset.is_prepared()

    dataset.prepare()
    cached = np.array(dataset.images())
    for row in rows:
        assert np.array_equal(preview[row], cached[row])
        # Crop, not squash: the centre 10x10 of each 10x30 image, made 8x8.
        assert np.array_equal(cached[row], resize_array(array_to_rgb(images[row]), 8, "crop"))
    assert not np.array_equal(cached[0], resize_array(array_to_rgb(images[0]), 8, "squash"))
    # A larger preview is the training image scaled, the same before and after the cache exists.
    after_large = dataset.sample_images(rows, size=24)
    for row in rows:
        assert preview_large[row].shape == (24, 24, 3)
        assert np.array_equal(preview_large[row], after_large[row])
        assert np.array_equal(preview_large[row], resize_array(cached[row], 24))


# ----- gallery items by their stored ids --------------------------------------------------------
def stub_evaluation(dataset) -> dict:
    """Error analysis as evaluate_run writes it, from made-up predictions on the test split."""
    indices = dataset.indices("test")
    labels = dataset.labels[indices]
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(dataset.num_classes), size=len(indices))
    names = [dataset.item_name(i) for i in indices]
    return error_analysis(labels, probabilities, dataset.class_names, names, indices)


def expected_image(root, item_id: str, size: int) -> np.ndarray:
    return load_resized(root / item_id, size)


@pytest.fixture
def folder_config(tmp_path):
    root = write_class_folder(tmp_path / "photos", per_class=12, size=20)
    return root, DataConfig(spec=str(root), image_size=16, split_seed=3)


def test_gallery_after_a_file_is_removed_says_so_and_shows_the_rest(folder_config):
    root, config = folder_config
    trained = load_dataset(config)
    items = stub_evaluation(trained)["highest_loss"]
    assert len(items) == len(trained.indices("test")) == 6
    assert all(item["id"] == item["name"] == trained.item_name(item["index"]) for item in items)
    first = min(range(len(items)), key=lambda position: items[position]["index"])
    removed = items[first]["id"]
    (root / removed).unlink()

    today = load_dataset(config)  # the Evaluate page indexes today's folder
    # By position the gallery would now show other photos under these captions.
    assert any(today.item_name(item["index"]) != item["id"] for item in items)
    shown = gallery_images(today, items, size=16)
    assert [entry.item_id for entry in shown] == [item["id"] for item in items]
    assert shown[first].image is None
    assert (
        shown[first].problem
        == f"{removed} is no longer in {root}; it was removed or renamed since."
    )
    for position, (item, entry) in enumerate(zip(items, shown, strict=True)):
        if position != first:
            assert entry.problem == ""
            assert np.array_equal(entry.image, expected_image(root, item["id"], 16))


def test_gallery_after_a_file_is_added_shows_the_same_photos(folder_config):
    root, config = folder_config
    trained = load_dataset(config)
    evaluation = stub_evaluation(trained)
    items = evaluation["misclassified"]
    assert items
    # A new first file in every class folder moves every later item one place on.
    for class_id, name in enumerate(trained.class_names):
        Image.fromarray(pattern_image(class_id, seed=500 + class_id, size=20)).save(
            root / name / "a_new.png"
        )
    today = load_dataset(config)
    assert len(today.item_ids()) == len(trained.item_ids()) + 3
    assert any(today.item_name(item["index"]) != item["id"] for item in items)

    shown = gallery_images(today, items, size=24)
    for item, entry in zip(items, shown, strict=True):
        assert entry.problem == "" and entry.image.shape == (24, 24, 3)
        training_size = expected_image(root, item["id"], 16)
        assert np.array_equal(entry.image, resize_array(training_size, 24))


def test_gallery_of_a_file_removed_after_indexing_is_a_sentence(folder_config):
    root, config = folder_config
    dataset = load_dataset(config)  # indexed before the removal, as a cached dataset is
    items = stub_evaluation(dataset)["highest_loss"][:2]
    (root / items[1]["id"]).unlink()
    first, second = gallery_images(dataset, items, size=16)
    assert np.array_equal(first.image, expected_image(root, items[0]["id"], 16))
    assert second.image is None
    assert second.problem == f"{items[1]['id']} cannot be decoded: file not found."


def test_evaluations_from_before_item_ids_are_found_by_name(folder_config):
    root, config = folder_config
    dataset = load_dataset(config)
    items = [
        {key: value for key, value in item.items() if key != "id"}
        for item in stub_evaluation(dataset)["highest_loss"][:3]
    ]
    shown = gallery_images(dataset, items, size=16)
    for item, entry in zip(items, shown, strict=True):
        assert np.array_equal(entry.image, expected_image(root, item["name"], 16))


# ----- the run's manifest -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "manifest",
    [{"fingerprint": "abc"}, {"class_names": ["cat"], "splits": ["train"]}, {"splits": {"a": 3}}],
)
def test_a_damaged_manifest_is_a_sentence(folder_config, manifest):
    _, config = folder_config
    dataset = load_dataset(config)
    before = {split: indices.copy() for split, indices in dataset.split_indices.items()}
    with pytest.raises(UserError) as error:
        dataset.verify_manifest(manifest)
    assert str(error.value) == (
        "The data manifest of this run (data_manifest.json) is damaged; train a new run on this data."
    )
    for split, indices in before.items():
        assert np.array_equal(dataset.split_indices[split], indices)


# ----- progress while loading -------------------------------------------------------------------
def test_folder_indexing_reports_progress(tmp_path, monkeypatch):
    root = write_class_folder(tmp_path / "many", classes=("a", "b"), per_class=9, size=8)
    (root / "a" / "notes.txt").write_text("not an image")
    monkeypatch.setattr(folders_module, "PROGRESS_EVERY", 4)
    calls = []
    dataset = load_dataset(
        DataConfig(spec=str(root)), progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(4, 19), (8, 19), (12, 19), (16, 19), (19, 19)]  # 18 images and a text file
    assert len(dataset.item_ids()) == 18


def test_a_tfds_store_build_reports_progress_through_load_dataset(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from engine import network

    monkeypatch.setattr(network, "is_online", lambda timeout=3.0: True)  # mocked, never asked
    calls = []
    with tfds.testing.mock_data(num_examples=70, policy=tfds.testing.MockPolicy.USE_CODE):
        dataset = load_dataset(
            DataConfig(spec="tfds:tf_flowers", image_size=16),
            cache_root=tmp_path,
            progress=lambda done, total: calls.append((done, total)),
        )
    assert len(dataset.item_ids()) == 70
    assert calls == [(64, 70), (70, 70)]
