"""Sources, bad files, splits and the decoded cache."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern_image, write_class_folder
from PIL import Image

from engine.config import DataConfig
from engine.data import load_dataset
from engine.data.images import ImageError, load_resized, open_image
from engine.errors import UserError


def test_digits_is_the_offline_default():
    dataset = load_dataset(DataConfig())
    counts = dataset.counts()
    assert dataset.class_names == [str(i) for i in range(10)]
    assert sum(sum(split.values()) for split in counts.values()) == 1797
    # 15% test and 15% validation carved out of the 1,797 digits, stratified per class.
    assert sum(counts["test"].values()) == pytest.approx(270, abs=10)
    assert sum(counts["validation"].values()) == pytest.approx(270, abs=10)
    assert min(counts["test"].values()) >= 25


def test_split_is_deterministic_per_seed():
    first = load_dataset(DataConfig(split_seed=7))
    second = load_dataset(DataConfig(split_seed=7))
    other = load_dataset(DataConfig(split_seed=8))
    for split in ("train", "validation", "test"):
        assert np.array_equal(first.split_indices[split], second.split_indices[split])
    assert not np.array_equal(first.split_indices["test"], other.split_indices["test"])
    everything = np.concatenate([first.split_indices[s] for s in ("train", "validation", "test")])
    assert len(np.unique(everything)) == 1797


def test_folder_with_bad_files_is_reported_not_crashed(tmp_path):
    root = write_class_folder(tmp_path / "data", per_class=8)
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "notes.txt").write_text("not a picture")
    (root / "dog" / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    buffer = io.BytesIO()
    Image.fromarray(pattern_image(1, 5, size=64)).save(buffer, format="JPEG")
    (root / "dog" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("RGB", (300, 300)).save(root / "fox" / "huge.png")

    dataset = load_dataset(DataConfig(spec=str(root), image_size=16, max_pixels=200 * 200))
    dataset.prepare()
    reasons = {Path(item["file"]).name: item["reason"] for item in dataset.skipped()}
    assert set(reasons) == {"empty.jpg", "notes.txt", "garbage.jpg", "truncated.jpg", "huge.png"}
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "too large" in reasons["huge.png"]
    assert sum(sum(c.values()) for c in dataset.counts().values()) == 24
    batch, labels = next(iter(dataset.pipeline("train", batch_size=4)))
    assert batch.shape == (4, 16, 16, 3) and batch.dtype.name == "float32"


def test_split_folders_are_used(tmp_path):
    write_class_folder(tmp_path / "d" / "train", per_class=10)
    write_class_folder(tmp_path / "d" / "test", per_class=4)
    write_class_folder(tmp_path / "d" / "val", per_class=3)
    dataset = load_dataset(DataConfig(spec=str(tmp_path / "d"), image_size=16))
    assert {split: sum(c.values()) for split, c in dataset.counts().items()} == {
        "train": 30,
        "validation": 9,
        "test": 12,
    }


def test_image_modes_become_rgb_and_exif_is_applied(tmp_path):
    base = pattern_image(0, 1, size=20)
    files = {
        "gray.png": Image.fromarray(base[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([base, np.full(base.shape[:2], 255, np.uint8)])),
        "palette.gif": Image.fromarray(base).convert("P"),
        "cmyk.jpg": Image.fromarray(base).convert("CMYK"),
        "sixteen.png": Image.fromarray(base[..., 0].astype(np.uint16) * 257),
        "image.webp": Image.fromarray(base),
        "image.bmp": Image.fromarray(base),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
        decoded = open_image(tmp_path / name)
        assert decoded.mode == "RGB" and decoded.size == (20, 20), name
    sixteen = np.asarray(open_image(tmp_path / "sixteen.png"))
    assert (
        abs(int(sixteen[..., 0].max()) - int(base[..., 0].max())) <= 1
    )  # scaled, not clipped to white

    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    wide.save(tmp_path / "rotated.jpg", exif=exif)
    assert open_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    pixel = np.asarray(open_image(tmp_path / "anim.gif"))[5, 5]
    assert pixel[0] > 200 and pixel[2] < 50


def test_non_image_raises_image_error(tmp_path):
    (tmp_path / "a.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        load_resized(tmp_path / "a.png", 8)


def test_zip_with_traversal_entry_is_extracted_safely(tmp_path, isolated_dirs):
    root = write_class_folder(tmp_path / "src" / "pets", per_class=5)
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in root.rglob("*.png"):
            zf.write(file, file.relative_to(tmp_path / "src"))
        zf.writestr("../../escaped.txt", "owned")
        zf.writestr("/abs/escaped2.txt", "owned")
    dataset = load_dataset(DataConfig(spec=str(archive), image_size=16))
    assert dataset.class_names == ["cat", "dog", "fox"]
    skipped = {item["file"] for item in dataset.skipped()}
    assert {"../../escaped.txt", "/abs/escaped2.txt"} <= skipped
    assert not list(tmp_path.rglob("escaped*.txt")) and not list(
        Path(isolated_dirs).parent.rglob("escaped*.txt")
    )
    assert not Path("/abs/escaped2.txt").exists()


def test_broken_zip_is_a_clear_error(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(UserError, match="broken.zip is not a readable zip"):
        load_dataset(str(archive))


def test_zip_over_the_size_cap_is_refused(tmp_path, isolated_dirs):
    from engine.data.sources import extract_zip_safely

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/x.bin", b"\0" * 100_000)
    with pytest.raises(UserError, match="over the limit"):
        extract_zip_safely(archive, tmp_path / "out", max_bytes=10_000)
    assert not (tmp_path / "out").exists()


def test_npz_variants(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.random((40, 12, 12)).astype(np.float32)  # floats in [0, 1], no channel axis
    y_train = np.eye(2)[np.arange(40) % 2]  # one-hot
    x_test = rng.integers(0, 256, (10, 12, 12, 3)).astype(np.uint8)
    np.savez(
        tmp_path / "d.npz",
        X_train=x_train,
        y_train=y_train,
        x_test=x_test,
        Y_TEST=np.arange(10) % 2,
    )
    dataset = load_dataset(DataConfig(spec=str(tmp_path / "d.npz"), image_size=12))
    assert dataset.class_names == ["0", "1"]
    assert sum(dataset.counts()["test"].values()) == 10
    image = dataset.sample_images(np.array([0]))[0]
    assert image.dtype == np.uint8 and image.shape == (12, 12, 3)
    assert abs(int(image[0, 0, 0]) - round(float(x_train[0, 0, 0]) * 255)) <= 1


def test_npz_mismatched_lengths(tmp_path):
    np.savez(tmp_path / "bad.npz", X_train=np.zeros((5, 8, 8)), y_train=np.zeros(4))
    with pytest.raises(UserError, match="5 images but y_train has 4 labels"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    objects = np.empty(3, dtype=object)
    objects[:] = [np.zeros((4, 4)), "x", {"a": 1}]
    np.savez(tmp_path / "pickled.npz", X_train=objects, y_train=np.zeros(3))
    with pytest.raises(UserError, match="pickled"):
        load_dataset(str(tmp_path / "pickled.npz"))


def test_one_class_and_empty_class_are_errors(tmp_path):
    write_class_folder(tmp_path / "one", classes=("only",), per_class=3)
    with pytest.raises(UserError, match="at least 2"):
        load_dataset(str(tmp_path / "one"))
    root = write_class_folder(tmp_path / "two", classes=("a", "b"), per_class=3)
    (root / "empty_class").mkdir()
    with pytest.raises(UserError, match="empty_class"):
        load_dataset(str(root))


def test_wrong_path_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="check the path"):
        load_dataset(str(tmp_path / "nowhere"))


def test_cache_is_built_once_and_reused(class_folder, monkeypatch):
    dataset = load_dataset(DataConfig(spec=str(class_folder), image_size=16))
    progress = []
    dataset.prepare(progress=lambda done, total: progress.append((done, total)))
    assert progress[-1] == (36, 36)
    first = np.array(dataset.images())

    again = load_dataset(DataConfig(spec=str(class_folder), image_size=16))
    assert again.is_prepared()
    monkeypatch.setattr(
        "engine.data.sources.open_image", lambda *a, **k: pytest.fail("decoded a file again")
    )
    again.prepare()
    assert np.array_equal(np.array(again.images()), first)
    # The first two pipeline epochs see the same images, in a different order.
    pipeline = again.pipeline("train", batch_size=64, shuffle=True, seed=1)
    epoch_one = np.concatenate([b.numpy() for b, _ in pipeline])
    epoch_two = np.concatenate([b.numpy() for b, _ in pipeline])
    assert sorted(map(bytes, epoch_one.astype(np.uint8))) == sorted(
        map(bytes, epoch_two.astype(np.uint8))
    )


def test_pipeline_labels_match_images(class_folder):
    dataset = load_dataset(DataConfig(spec=str(class_folder), image_size=24))
    batches = list(dataset.pipeline("train", batch_size=5, shuffle=True, seed=3, with_index=True))
    for images, labels, indices in batches:
        for image, label, index in zip(
            images.numpy(), labels.numpy(), indices.numpy(), strict=True
        ):
            assert label == dataset.labels[index]
            assert np.array_equal(image.astype(np.uint8), dataset.images()[index])


def test_cache_is_keyed_by_max_pixels_and_decoder_version(class_folder, monkeypatch):
    Image.new("RGB", (300, 300), (200, 10, 10)).save(class_folder / "fox" / "huge.png")
    roomy = load_dataset(DataConfig(spec=str(class_folder), image_size=16, max_pixels=10**6))
    capped = load_dataset(DataConfig(spec=str(class_folder), image_size=16, max_pixels=200 * 200))
    assert roomy.cache_dir != capped.cache_dir
    roomy.prepare()
    assert roomy.skipped() == []
    # A smaller cap must not reuse the cache that decoded the large image.
    assert not capped.is_prepared()
    capped.prepare()
    assert [(item["file"], "too large" in item["reason"]) for item in capped.skipped()] == [
        ("fox/huge.png", True)
    ]
    total = sum(sum(split.values()) for split in capped.counts().values())
    assert total == sum(sum(split.values()) for split in roomy.counts().values()) - 1

    first_dir = roomy.cache_dir
    monkeypatch.setattr("engine.data.cache.DECODER_VERSION", 999)
    newer = load_dataset(DataConfig(spec=str(class_folder), image_size=16, max_pixels=10**6))
    assert newer.cache_dir != first_dir and not newer.is_prepared()
