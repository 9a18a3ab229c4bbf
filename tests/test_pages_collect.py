"""The Collect page under AppTest: a collection, classes, photos from files and the camera, a bad
file named in one sentence, a removed photo, and the photos loaded as the working dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.data import collect
from ui import settings_store

ROOT = Path(__file__).resolve().parent.parent


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "collect.py"), default_timeout=60).run()


def photo(value: int, format: str = "PNG") -> bytes:
    pixels = np.zeros((24, 24, 3), dtype=np.uint8)
    pixels[:, : 4 + value % 16, value % 3] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def add_class(at: AppTest, name: str) -> AppTest:
    at.text_input(key="collect_class_name").input(name)
    return at.button(key="collect_add_class").click().run()


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def test_collect_makes_classes_adds_photos_and_loads_them():
    at = page()
    assert not at.exception
    assert at.text_input(key="collect_new_name").value == "my-photos"
    at.button(key="collect_create").click().run()
    assert collect.list_collections() == ["my-photos"]
    assert at.selectbox(key="collect_collection").value == "my-photos"
    folder = collect.collections_root() / "my-photos"

    add_class(at, "_cat_")
    add_class(at, "dog")
    add_class(at, " DOG ")
    assert texts(at.error) == ["There is already a class named 'DOG'; choose another name."]
    add_class(at, "a/b")
    assert "cannot hold /" in at.error[0].value
    assert sorted(collect.list_classes(folder)) == ["_cat_", "dog"]
    assert at.selectbox(key="collect_target").value == "dog"  # the class just made

    # Files: two photos and one that is not an image, which is named and nothing else is lost.
    at.selectbox(key="collect_target").set_value("_cat_").run()
    at.file_uploader(key="collect_files_0").set_value(
        [
            ("one.png", photo(1), "image/png"),
            ("two.png", photo(2), "image/png"),
            ("notes.png", b"shopping list", "image/png"),
        ]
    ).run()
    assert not at.exception
    assert texts(at.error) == [
        "notes.png was not added (not an image in an allowed format (JPEG, PNG, GIF, BMP, WebP "
        "or TIFF)); choose a JPEG, PNG, GIF, BMP, WebP or TIFF photo."
    ]
    assert any("Added 2 photos to \\_cat\\_" in text for text in texts(at.success))
    assert len(collect.list_classes(folder)["_cat_"]) == 2
    # The inputs were emptied: the same files do not come in again on the next rerun.
    assert at.file_uploader(key="collect_files_1").value == []
    at.run()
    assert len(collect.list_classes(folder)["_cat_"]) == 2

    # The camera: one JPEG photo into dog.
    at.selectbox(key="collect_target").set_value("dog").run()
    at.toggle(key="collect_use_camera").set_value(True).run()
    at.camera_input(key="collect_camera_1").set_value(
        ("shot.jpg", photo(7, "JPEG"), "image/jpeg")
    ).run()
    assert not at.exception
    assert [p.suffix for p in collect.list_classes(folder)["dog"]] == [".jpg"]

    # Counts and thumbnails per class; the class name is shown literally.
    headings = [text for text in texts(at.markdown) if "photo" in text]
    assert headings == ["**\\_cat\\_** · 2 photos", "**dog** · 1 photo"]
    assert len(at.get("image")) == 3

    # Remove one photo of _cat_.
    removable = [button for button in at.button if button.key.startswith("collect_remove_0_")]
    assert len(removable) == 2
    removable[0].click().run()
    assert len(collect.list_classes(folder)["_cat_"]) == 1

    # Load it as the dataset, as the Data page does: every page and the settings file use it.
    at.button(key="collect_load").click().run()
    assert not at.exception, at.exception
    assert at.session_state["data_config"]["spec"] == str(folder)
    assert "my-photos is the dataset now: 2 photos in 2 classes." in texts(at.success)
    saved = json.loads(settings_store.settings_path().read_text())
    assert saved["data"]["spec"] == str(folder)


def test_loading_waits_for_two_classes_with_photos_and_a_class_can_go():
    folder = collect.create_collection("pets")
    at = page()
    assert at.selectbox(key="collect_collection").value == "pets"
    assert any("Add a class" in text for text in texts(at.info))
    add_class(at, "cat")
    assert at.button(key="collect_load").disabled
    assert "two classes or more" in " ".join(texts(at.caption))
    collect.add_photo(folder, "cat", photo(3), "a.png")
    add_class(at, "dog")
    assert at.button(key="collect_load").disabled
    assert any("Class 'dog' has no photos yet" in text for text in texts(at.caption))

    # An empty class goes at once; one with photos asks first.
    at.button(key="collect_remove_class_1").click().run()
    assert list(collect.list_classes(folder)) == ["cat"]
    at.button(key="collect_remove_class_0").click().run()
    assert list(collect.list_classes(folder)) == ["cat"]
    assert "Remove class cat and its 1 photo?" in texts(at.warning)
    at.button(key="collect_remove_class_yes_0").click().run()
    assert not at.exception
    assert collect.list_classes(folder) == {}
    assert texts(at.success) == ["Removed class cat."]


def test_a_bad_collection_name_is_refused_with_a_sentence():
    at = page()
    at.text_input(key="collect_new_name").input("..").run()
    at.button(key="collect_create").click().run()
    assert not at.exception
    assert texts(at.error) == [
        "A collection name cannot start or end with a dot; type it without one."
    ]
    assert collect.list_collections() == []
