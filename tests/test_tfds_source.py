"""tfds sources without a network: mocked tf_flowers, tiny builders prepared on disk, offline failure."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from engine import network
from engine.config import DataConfig
from engine.data import load_dataset, load_source
from engine.data.tfds_source import TfdsSource
from engine.errors import UserError

SHAPES = ["circle", "square", "triangle"]


class StudioTinyShapes(tfds.core.GeneratorBasedBuilder):
    """Three classes of small RGB images with train, validation and test splits."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=SHAPES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(30, 0),
            "validation": self._generate_examples(6, 1),
            "test": self._generate_examples(9, 2),
        }

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            height, width = int(rng.integers(10, 20)), int(rng.integers(10, 20))
            yield (
                i,
                {"image": rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "label": i % 3},
            )


class StudioTinyGray(tfds.core.GeneratorBasedBuilder):
    """Two classes of 8x8 grayscale images, a train split only."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "picture": tfds.features.Image(shape=(8, 8, 1)),
                    "kind": tfds.features.ClassLabel(names=["dark", "light"]),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(20):
            yield (
                i,
                {"picture": np.full((8, 8, 1), 40 + 160 * (i % 2), dtype=np.uint8), "kind": i % 2},
            )


class StudioTinyText(tfds.core.GeneratorBasedBuilder):
    """A dataset without images, which must be refused."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        yield 0, {"text": "a", "label": 0}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The tiny datasets prepared once, as tfds would after a download."""
    root = tmp_path_factory.mktemp("tfds_data")
    for builder_class in (StudioTinyShapes, StudioTinyGray):
        builder_class(data_dir=str(root)).download_and_prepare()
    return str(root)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(tmp_path / "default_cache"))
    monkeypatch.delenv("STUDIO_OFFLINE", raising=False)


def forbid_tfds_reads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("tfds data was read although the blob store exists")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


def test_mocked_tf_flowers_trains_through_the_pipeline(monkeypatch, tmp_path):
    monkeypatch.setattr(
        network, "is_online", lambda timeout=3.0: True
    )  # the mock's data_dir is never prepared
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        dataset = load_dataset(
            DataConfig(spec="tfds:tf_flowers", image_size=16), cache_root=tmp_path
        )
    names = tfds.builder("tf_flowers").info.features["label"].names
    assert dataset.class_names == names
    assert dataset.source.kind == "tfds" and dataset.source.spec == "tfds:tf_flowers"
    assert len(dataset.source.items) == 40
    assert set(dataset.source.origins) == {"train"}  # validation and test are carved from train
    assert sum(len(dataset.indices(split)) for split in ("train", "validation", "test")) == 40
    assert all(
        mode == "RGB" and width > 0 and height > 0 for width, height, mode in dataset.source.headers
    )

    dataset.prepare()
    images, labels = next(iter(dataset.pipeline("train", batch_size=4)))
    assert images.dtype.name == "float32" and tuple(images.shape) == (4, 16, 16, 3)
    assert labels.dtype.is_integer and int(labels.numpy().max()) < len(names)
    assert float(images.numpy().min()) >= 0.0 and float(images.numpy().max()) <= 255.0


def test_prepared_dataset_keeps_its_splits_and_is_stored_once(monkeypatch, tmp_path, data_dir):
    calls = []
    monkeypatch.setattr(network, "is_online", lambda timeout=3.0: calls.append(1) or False)
    progress = []
    from engine.data.tfds_source import load_tfds_source

    config = DataConfig(spec="tfds:studio_tiny_shapes", data_dir=data_dir, image_size=12)
    source = load_tfds_source(
        "studio_tiny_shapes", config, tmp_path, progress=lambda d, t: progress.append((d, t))
    )
    assert isinstance(source, TfdsSource) and not calls  # prepared: no network question asked
    assert source.class_names == SHAPES
    assert {
        origin: int((source.origins == origin).sum()) for origin in ("train", "validation", "test")
    } == {"train": 30, "validation": 6, "test": 9}
    assert progress[-1] == (45, 45)

    builder = tfds.builder("studio_tiny_shapes", data_dir=data_dir)
    expected = {
        split: list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
        for split in ("train", "validation")
    }
    assert source.labels[source.origins == "train"].tolist() == [
        int(e["label"]) for e in expected["train"]
    ]
    first = expected["train"][0]["image"]
    assert np.array_equal(np.asarray(source.read(0, 10_000)), first)
    assert source.headers[0] == (first.shape[1], first.shape[0], "RGB")
    assert source.name(0) == "train #0" and source.name(len(source.items) - 1) == "test #8"

    blob = next((tmp_path / "tfds").glob("*/images.bin"))
    stamp = blob.stat().st_mtime_ns
    forbid_tfds_reads(monkeypatch)
    dataset = load_dataset(config, cache_root=tmp_path)
    assert blob.stat().st_mtime_ns == stamp
    assert dataset.fingerprint == source.fingerprint
    assert {split: len(dataset.indices(split)) for split in ("train", "validation", "test")} == {
        "train": 30,
        "validation": 6,
        "test": 9,
    }
    dataset.prepare()
    images, labels = next(iter(dataset.pipeline("validation", batch_size=4)))
    assert tuple(images.shape) == (4, 12, 12, 3)
    assert labels.numpy().tolist() == [int(e["label"]) for e in expected["validation"][:4]]


def test_split_specs_slice_the_dataset(tmp_path, data_dir):
    config = DataConfig(
        spec="tfds:studio_tiny_shapes",
        data_dir=data_dir,
        train_split="train[:50%]",
        validation_split="train[50%:]",
        test_split="test[:3]",
    )
    source = load_source(config, tmp_path)
    assert {
        origin: int((source.origins == origin).sum()) for origin in ("train", "validation", "test")
    } == {"train": 15, "validation": 15, "test": 3}
    whole = load_source(DataConfig(spec="tfds:studio_tiny_shapes", data_dir=data_dir), tmp_path)
    assert whole.fingerprint != source.fingerprint
    assert len(list((tmp_path / "tfds").iterdir())) == 2

    with pytest.raises(UserError, match="split 'trian'"):
        load_source(
            DataConfig(spec="tfds:studio_tiny_shapes", data_dir=data_dir, train_split="trian"),
            tmp_path,
        )


def test_grayscale_dataset_without_supervised_keys(tmp_path, data_dir):
    dataset = load_dataset(
        DataConfig(spec="tfds:studio_tiny_gray", data_dir=data_dir), cache_root=tmp_path
    )
    assert dataset.class_names == ["dark", "light"]
    assert set(dataset.source.headers) == {(8, 8, "L")}
    for index in range(4):  # dark images are 40, light ones 200
        image = np.asarray(dataset.source.read(index, 10_000))
        assert image.shape == (8, 8, 3) and int(image[0, 0, 0]) == 40 + 160 * int(
            dataset.labels[index]
        )


def test_offline_and_not_downloaded_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    empty = tmp_path / "empty_tfds"
    empty.mkdir()
    started = time.monotonic()
    with pytest.raises(UserError, match="offline") as caught:
        load_source(DataConfig(spec="tfds:eurosat/rgb", data_dir=str(empty)), tmp_path / "cache")
    assert time.monotonic() - started < 10
    assert "eurosat/rgb" in str(caught.value) and str(empty) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "cache" / "tfds").exists() or not any(
        (tmp_path / "cache" / "tfds").iterdir()
    )


def test_unknown_and_unsuitable_datasets_are_refused(tmp_path, data_dir):
    with pytest.raises(UserError, match="no tfds dataset named 'cifar_10'.*cifar10"):
        load_source(DataConfig(spec="tfds:cifar_10"), tmp_path)
    with pytest.raises(UserError, match="eurosat/rgb"):
        load_source(DataConfig(spec="tfds:eurosat/rbg"), tmp_path)
    with pytest.raises(UserError, match="no image feature"):
        load_source(DataConfig(spec="tfds:studio_tiny_text", data_dir=data_dir), tmp_path)


def test_interrupted_build_is_not_reused(tmp_path, data_dir):
    config = DataConfig(spec="tfds:studio_tiny_gray", data_dir=data_dir)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    from engine.data.tfds_source import load_tfds_source

    with pytest.raises(
        KeyboardInterrupt
    ):  # the last progress call comes after every image is copied
        load_tfds_source("studio_tiny_gray", config, tmp_path, progress=interrupt)
    assert not any(
        path.name.endswith(".npy") or path.name == "meta.json"
        for path in (tmp_path / "tfds").rglob("*")
    )
    source = load_tfds_source("studio_tiny_gray", config, tmp_path)
    assert len(source.items) == 20 and Path(source.blob_path).is_file()


def test_decoded_arrays_are_stored_as_lossless_png():
    from engine.data.images import open_image
    from engine.data.tfds_source import _encoded

    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    gray = rgb[..., :1]
    assert np.array_equal(np.asarray(open_image(_encoded(rgb))), rgb)
    assert np.array_equal(np.asarray(open_image(_encoded(gray)))[..., 0], gray[..., 0])
    assert _encoded(b"\x89PNG bytes") == b"\x89PNG bytes"
