"""The Home, Data and Augment pages under AppTest: what they show for digits, a folder, a bad path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from conftest import write_class_folder
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def test_home_shows_devices_dataset_and_runs():
    at = page("home.py").run()
    assert not at.exception
    assert at.title[0].value == "Image Classification Studio"
    assert metrics(at)["TensorFlow"]
    assert any(
        "digits" in markdown.value and "10 classes" in markdown.value for markdown in at.markdown
    )
    assert any("No runs" in info.value for info in at.info)


def test_home_through_the_router():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    pages = ("Data", "Collect", "Augment", "Train", "Runs", "Evaluate", "Compare", "Predict")
    labels = [link.label for link in at.page_link][-len(pages) :]
    assert labels == [f"**{name}**" for name in pages]


def label(image) -> str:
    """The class part of a sample's caption ("label · file name")."""
    return image.captions[0].split(" · ")[0]


def class_box(at):
    """The Data page's class filter (its key carries the loaded dataset's hash)."""
    [box] = [box for box in at.selectbox if box.label == "Class"]
    return box


def test_data_page_on_digits_shows_counts_chart_and_samples():
    at = page("data.py").run()
    assert not at.exception
    assert metrics(at) == {
        "Images": "1,797",
        "Classes": "10",
        "Training image size": "32 × 32",
        "Skipped files": "0",
    }
    assert at.get("plotly_chart")
    assert len(at.image) == 24
    assert {label(image) for image in at.image} <= {str(digit) for digit in range(10)}
    assert any("8 × 8" in info.value for info in at.info)  # every digit has the same size
    assert any("No files were skipped" in success.value for success in at.success)

    at.pagination[0].set_value(2).run()
    assert any(caption.value.startswith("25–48 of") for caption in at.caption)
    assert len(at.image) == 24

    # One class, then another shuffle: the grid follows each choice.
    class_box(at).select(3).run()
    assert {label(image) for image in at.image} == {"3"}
    first = [image.proto.imgs[0].url for image in at.image]
    at.button(key="data_shuffle").click().run()
    assert not at.exception
    assert [image.proto.imgs[0].url for image in at.image] != first


def test_data_page_loads_a_folder(tmp_path):
    folder = write_class_folder(tmp_path / "animals", per_class=10)
    at = page("data.py").run()
    at.radio(key="data_source").set_value("Folder on this machine").run()
    at.text_input(key="data_folder").input(str(folder)).run()
    at.button(key="data_load").click().run()
    assert not at.exception
    assert at.session_state["data_config"]["spec"] == str(folder)
    assert metrics(at)["Classes"] == "3"
    assert metrics(at)["Images"] == "30"
    assert {label(image) for image in at.image} <= {"cat", "dog", "fox"}


def test_data_page_loads_an_uploaded_npz():
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        X_train=rng.integers(0, 255, (40, 16, 16), dtype=np.uint8),
        y_train=np.arange(40) % 2,
    )
    at = page("data.py").run()
    at.radio(key="data_source").set_value("Upload .zip or .npz").run()
    at.file_uploader(key="data_upload").upload(
        "pairs.npz", buffer.getvalue(), "application/octet-stream"
    ).run()
    at.button(key="data_load").click().run()
    assert not at.exception
    assert at.header[0].value == "Uploaded pairs.npz"
    assert metrics(at)["Classes"] == "2"
    assert metrics(at)["Images"] == "40"


def test_data_page_explains_a_wrong_path(tmp_path):
    at = page("data.py").run()
    at.radio(key="data_source").set_value("Folder on this machine").run()
    at.text_input(key="data_folder").input(str(tmp_path / "nowhere")).run()
    at.button(key="data_load").click().run()
    assert not at.exception
    assert "check the path" in at.error[0].value
    assert at.session_state["data_config"]["spec"] == "digits"  # the loaded dataset stays


def test_augment_page_saves_settings_and_previews():
    from engine.data import load_dataset
    from engine.recipe import recommend

    at = page("augment.py").run()
    assert not at.exception
    # Until the user changes them, the settings are the recipe's: digits get shifts, no flips.
    chosen = recommend(load_dataset("digits")).config["augment"]
    assert at.slider(key="augment_translation").value == chosen["translation"] > 0
    assert at.checkbox(key="augment_horizontal_flip").value is False
    assert any("recipe" in caption.value for caption in at.caption)
    at.button(key="augment_reset").click().run()
    assert any("Augmentation is off" in info.value for info in at.info)
    assert len(at.image) == 3 and at.image[0].captions == ["original"]

    at.checkbox(key="augment_horizontal_flip").check().run()
    at.slider(key="augment_count").set_value(4).run()
    assert not at.exception
    assert at.session_state["augment_config"]["horizontal_flip"] is True
    assert len(at.image) == 3
    assert at.image[0].captions == ["original", "version 1", "version 2", "version 3", "version 4"]
