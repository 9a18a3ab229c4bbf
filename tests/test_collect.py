"""Collected photos (engine/data/collect.py): safe, unique class names, photos checked and saved
as a folder of class folders that loads like any folder, bad files refused with a sentence."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.config import DataConfig
from engine.data import collect, load_dataset
from engine.errors import UserError


def image_bytes(value: int, format: str = "PNG", size: int = 20) -> bytes:
    pixels = np.full((size, size, 3), value, dtype=np.uint8)
    pixels[: size // 2, :, value % 3] = 255 - value
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture
def collection():
    return collect.create_collection("garden")


def test_collections_live_beside_the_uploads_in_the_data_folder(isolated_dirs):
    from ui.uploads import uploads_folder

    folder = collect.create_collection("  garden  ")
    assert folder == collect.collections_root() / "garden"
    assert collect.collections_root().parent == uploads_folder().parent == isolated_dirs
    assert collect.list_collections() == ["garden"]
    with pytest.raises(UserError, match="already a collection named 'GARDEN'"):
        collect.create_collection("GARDEN")


@pytest.mark.parametrize(
    "name, sentence",
    [
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("a/b", "cannot hold /"),
        ("..", "cannot start or end with a dot"),
        (".hidden", "cannot start or end with a dot"),
        ("tab\there", "control characters"),
        ("line\nbreak", "control characters"),
        ('say "hi"', "cannot hold"),
        ("x" * 41, "at most 40 characters, not 41"),
        ("train", "split or system folder"),
        ("Val", "split or system folder"),
        ("__MACOSX", "split or system folder"),
        ("con", "device name on Windows"),
        ("LPT1.txt", "device name on Windows"),
        ("Cat", "already a class named 'Cat'"),
        (7, "must be text"),
    ],
)
def test_class_names_are_refused_with_a_sentence(collection, name, sentence):
    collect.add_class(collection, "cat")
    with pytest.raises(UserError, match=sentence.replace("(", r"\(")) as caught:
        collect.add_class(collection, name)
    message = str(caught.value)
    assert message.endswith(".") and message.count(". ") == 0  # one sentence
    assert list(collect.list_classes(collection)) == ["cat"]  # nothing made


def test_names_that_are_text_not_markup_are_kept_as_typed(collection):
    names = ["![i](x)", "#1 `cats`", "Übung 1", "été", "_a_ b", "&lt;b&gt;"]
    for name in names:
        assert collect.add_class(collection, name) == name
    assert sorted(collect.list_classes(collection)) == sorted(names)
    # The same name in another Unicode normal form is the same class.
    with pytest.raises(UserError, match="already a class"):
        collect.add_class(collection, "e\u0301te\u0301")


def test_photos_are_saved_as_class_folders_that_load_as_a_dataset(collection):
    for name in ("cat", "dog"):
        collect.add_class(collection, name)
    for value in range(4):
        assert collect.add_photo(collection, "cat", image_bytes(10 + value), f"cat{value}.png")
        assert collect.add_photo(
            collection, "dog", image_bytes(200 + value, "JPEG"), f"dog{value}.jpg"
        )
    assert not collect.add_photo(collection, "cat", image_bytes(10), "again.png")  # kept once
    classes = collect.list_classes(collection)
    assert {name: len(photos) for name, photos in classes.items()} == {"cat": 4, "dog": 4}
    assert {photo.suffix for photo in classes["cat"]} == {".png"}
    assert {photo.suffix for photo in classes["dog"]} == {".jpg"}  # by content, not by name
    assert not list(collection.rglob(".*"))  # no temporary file left behind
    assert collect.readiness_problem(collection) is None

    dataset = load_dataset(DataConfig(spec=str(collection)))
    assert dataset.class_names == ["cat", "dog"]
    assert len(dataset.labels) == 8

    thumbnail = collect.thumbnail(classes["cat"][0], side=16)
    assert thumbnail.shape == (16, 16, 3) and thumbnail.dtype == np.uint8

    collect.remove_photo(collection, "cat", classes["cat"][0].name)
    assert len(collect.list_classes(collection)["cat"]) == 3
    collect.remove_photo(collection, "cat", classes["cat"][0].name)  # gone already: fine
    with pytest.raises(UserError, match="not a photo"):
        collect.remove_photo(collection, "cat", "../dog/" + classes["dog"][0].name)
    assert len(collect.list_classes(collection)["dog"]) == 4


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"just some notes", "not an image in an allowed format"),
        (image_bytes(9, "PNG")[:60], "truncated or corrupt|cannot decode"),
    ],
)
def test_a_bad_image_is_refused_naming_the_file_and_nothing_is_lost(collection, data, reason):
    collect.add_class(collection, "cat")
    collect.add_photo(collection, "cat", image_bytes(1), "good.png")
    with pytest.raises(UserError, match=reason) as caught:
        collect.add_photo(collection, "cat", data, "holiday notes.png")
    message = str(caught.value)
    assert message.startswith("holiday notes.png was not added (")
    assert message.endswith("choose a JPEG, PNG, GIF, BMP, WebP or TIFF photo.")
    assert [p.suffix for p in collect.list_classes(collection)["cat"]] == [".png"]


def test_a_photo_teaches_one_class_and_classes_must_exist(collection):
    collect.add_class(collection, "cat")
    collect.add_class(collection, "dog")
    collect.add_photo(collection, "cat", image_bytes(5), "a.png")
    with pytest.raises(UserError, match="a.png was not added: the same photo is in class 'cat'"):
        collect.add_photo(collection, "dog", image_bytes(5), "a.png")
    with pytest.raises(UserError, match="has no class 'fox'; add it first"):
        collect.add_photo(collection, "fox", image_bytes(6), "b.png")
    with pytest.raises(UserError, match="has no class"):
        collect.add_photo(collection, "../cat", image_bytes(6), "b.png")


def test_readiness_names_what_is_missing_and_a_class_can_go(collection):
    collect.add_class(collection, "cat")
    assert "two classes or more" in collect.readiness_problem(collection)
    collect.add_photo(collection, "cat", image_bytes(5), "a.png")
    collect.add_class(collection, "dog")
    assert collect.readiness_problem(collection) == (
        "Class 'dog' has no photos yet; add some, or remove the class, before training on "
        "this collection."
    )
    collect.remove_class(collection, "dog")
    assert list(collect.list_classes(collection)) == ["cat"]
    assert not list(collection.glob(".*"))
