"""The working setup survives a new session, Start follows the new run once, the Runs page manages runs.

Each AppTest is a new browser tab (a new session); the settings file is per test (STUDIO_SETTINGS_FILE).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import run_admin, runs
from engine.config import RunConfig
from ui import settings_store

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def settings_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "config" / "settings.json"
    monkeypatch.setenv(settings_store.SETTINGS_ENV, str(path))
    return path


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(PROJECT / "pages" / f"{name}.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    return at


def router() -> AppTest:
    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    return at


def summary_table(at: AppTest) -> dict[str, str]:
    table = at.table[0].value
    return dict(zip(table["setting"], table["value"], strict=True))


# ----- the working setup persists -------------------------------------------------------------


def test_dataset_augmentation_and_epochs_survive_a_new_tab(class_folder, settings_file):
    data = page("data")
    data.radio(key="data_source").set_value("Folder on this machine").run()
    data.text_input(key="data_folder").input(str(class_folder)).run()
    data.button(key="data_load").click().run()
    assert not data.exception and not data.error, [e.value for e in data.error]
    augment = page("augment")
    augment.checkbox(key="augment_horizontal_flip").check()
    augment.slider(key="augment_rotation").set_value(0.1).run()
    train = page("train")
    train.number_input(key="train_epochs").set_value(3).run()
    assert not train.exception

    saved = json.loads(settings_file.read_text())
    assert saved["data"]["spec"] == str(class_folder)
    assert saved["augment"]["horizontal_flip"] is True and saved["augment"]["rotation"] == 0.1
    assert saved["train"]["epochs"] == 3

    # New sessions: every page opens on what was set in the other tab.
    assert page("data").session_state["data_config"]["spec"] == str(class_folder)
    augment = page("augment")
    assert augment.checkbox(key="augment_horizontal_flip").value is True
    assert augment.slider(key="augment_rotation").value == pytest.approx(0.1)
    train = page("train")
    assert train.number_input(key="train_epochs").value == 3
    rows = summary_table(train)
    # The table's cells are plain()-escaped Markdown: the backslashes before "_" are not shown.
    assert rows["Dataset"].replace("\\", "") == f"{class_folder} (36 images, 3 classes)"
    assert "horizontal flip" in rows["Augmentation"] and "rotation 0.1" in rows["Augmentation"]
    assert rows["Epochs"] == "3"


def test_hyperparameters_survive_leaving_the_train_page():
    at = router()
    at.switch_page("pages/train.py").run()
    at.number_input(key="train_epochs").set_value(4).run()
    at.switch_page("pages/home.py").run()
    assert "train_epochs" not in at.session_state  # Streamlit dropped the widget's value...
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.number_input(key="train_epochs").value == 4  # ...the form did not


def test_reset_returns_to_the_defaults(settings_file):
    default_epochs = page("train").number_input(key="train_epochs").value
    settings_store.save_settings(
        {
            "data": {**settings_store.defaults()["data"], "image_size": 24},
            "augment": {"horizontal_flip": True},
            "model": {},
            "train": {"epochs": default_epochs + 7},
        }
    )
    at = router()
    assert at.session_state["data_config"]["image_size"] == 24
    assert at.session_state["train_overrides"]["train"] == {"epochs": default_epochs + 7}

    at.sidebar.button(key="settings_reset").click().run()
    assert not at.exception
    assert not settings_file.exists()
    assert at.session_state["data_config"] == settings_store.defaults()["data"]
    assert at.session_state["augment_config"] is None
    # (AppTest reruns the page alone after the router's first run, without its sidebar.)
    at.switch_page("pages/train.py").run()
    assert at.number_input(key="train_epochs").value == default_epochs
    # A new tab after the reset opens on the defaults too.
    assert page("train").number_input(key="train_epochs").value == default_epochs


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"[1, 2, 3]", "a list"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "binary"),
        (json.dumps({"model": {"name": "gpt-9"}}).encode(), "Unknown model"),
        (json.dumps({"train": {"epochs": -5}}).encode(), "train.epochs"),
        (json.dumps({"data": "digits"}).encode(), "data"),
        (json.dumps({"train": {"epochs": 3}, "surprise": 1}).encode(), "unknown sections"),
        (b'{"train": {"epochs": 3', "truncated"),
    ],
)
def test_a_hostile_settings_file_gives_the_defaults_and_a_warning(settings_file, content, reason):
    settings_file.parent.mkdir(parents=True)
    settings_file.write_bytes(content)
    settings, warning = settings_store.load_settings()
    assert settings == settings_store.defaults()
    assert warning and reason in warning and "\n" not in warning

    at = router()
    warnings = [item.value for item in at.sidebar.warning]
    assert len(warnings) == 1 and reason in warnings[0]
    assert at.session_state["data_config"] == settings_store.defaults()["data"]
    assert at.session_state["train_overrides"] == {"model": {}, "train": {}}


def test_an_evicted_upload_falls_back_to_the_digits(settings_file):
    from ui.uploads import uploads_folder

    gone = uploads_folder() / f"photos-{'0' * 20}.zip"
    settings_store.save_settings(
        {**settings_store.defaults(), "data": {"spec": str(gone)}, "train": {"epochs": 2}}
    )
    settings, warning = settings_store.load_settings()
    assert settings["data"]["spec"] == "digits" and settings["train"] == {"epochs": 2}
    assert warning and gone.name in warning


def test_the_summary_names_an_upload_by_its_file_name():
    from ui.train_form import run_summary
    from ui.uploads import uploads_folder

    spec = str(uploads_folder() / f"holiday photos-{'ab' * 10}.zip")
    config = RunConfig().replace(data={"spec": spec, "image_size": 64})
    rows = dict(run_summary(config, {"images": 120, "class_names": ["a", "b"]}, []))
    assert rows["Dataset"] == "Uploaded holiday photos.zip (120 images, 2 classes)"
    assert "ab" * 10 not in json.dumps(rows)
    assert rows["Augmentation"] == "off" and rows["Image size"] == "64 px square"


# ----- Start ------------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch) -> list[Path]:
    """launch_run makes the run folder but starts no process; the folders it made."""
    made: list[Path] = []

    def launch(config, runs_dir=None):
        made.append(runs.create_run(config, runs_dir))
        return made[-1]

    monkeypatch.setattr(runs, "launch_run", launch)
    return made


def run_folders() -> list[Path]:
    return sorted(path for path in runs.default_runs_dir().iterdir() if path.is_dir())


def test_start_shows_the_new_run_and_a_double_click_starts_one(no_training, monkeypatch):
    earlier = runs.create_run(RunConfig(), runs.default_runs_dir())
    runs.update_status(earlier, state="completed")
    at = page("train")
    assert at.selectbox(key="train_watch").value == earlier.name

    at.number_input(key="train_epochs").set_value(2).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert len(no_training) == 1
    new = no_training[0].name
    assert at.session_state["train_run"] == new
    assert at.selectbox(key="train_watch").value == new  # the view follows at once
    assert runs.load_config(no_training[0]).train.epochs == 2
    assert any(metric.value == "queued" for metric in at.metric)
    assert any(button.key == "train_cancel" for button in at.button)

    at.button(key="train_start").click().run()  # the second click of a double click
    assert len(no_training) == 1 and len(run_folders()) == 2

    # The guard is a few seconds, not forever: a deliberate second start works.
    monkeypatch.setattr("ui.state.DOUBLE_CLICK_SECONDS", 0.0)
    at.button(key="train_start").click().run()
    assert len(no_training) == 2 and len(run_folders()) == 3
    assert at.selectbox(key="train_watch").value == no_training[1].name


def test_the_run_box_labels_show_the_current_state_and_name(no_training):
    run_dir = runs.create_run(RunConfig(), runs.default_runs_dir())
    at = page("train")
    box = at.selectbox(key="train_watch")
    assert box.format_func(run_dir.name).endswith("(queued)")
    runs.update_status(run_dir, state="completed")
    run_admin.set_name(run_dir, "first try")
    at.run()
    assert at.selectbox(key="train_watch").format_func(run_dir.name) == "first try  (completed)"
    code = "\n".join(block.value for block in at.code)
    assert f"tensorboard --logdir {runs.default_runs_dir().resolve()}" in code


# ----- the Runs page ----------------------------------------------------------------------------


def completed_run(name: str | None = None) -> Path:
    run_dir = runs.create_run(RunConfig(), runs.default_runs_dir())
    runs.update_status(run_dir, state="completed")
    if name:
        run_admin.set_name(run_dir, name)
    return run_dir


def test_runs_page_renames_and_refuses_a_duplicate_name():
    first, second = completed_run("baseline"), completed_run()
    at = page("runs")
    assert "baseline" in list(at.dataframe[0].value["name"])
    at.selectbox(key="runs_run").set_value(second.name).run()
    at.text_input(key=f"runs_name_{second.name}").input("wider model").run()
    at.button(key="runs_rename").click().run()
    assert not at.exception and not at.error
    assert run_admin.display_name(runs.read_status(second)) == "wider model"
    assert "wider model" in list(at.dataframe[0].value["name"])

    at.text_input(key=f"runs_name_{second.name}").input("baseline").run()
    at.button(key="runs_rename").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "baseline" in at.error[0].value
    assert run_admin.display_name(runs.read_status(second)) == "wider model"
    assert run_admin.display_name(runs.read_status(first)) == "baseline"


def test_runs_page_saves_notes():
    run_dir = completed_run("baseline")
    at = page("runs")
    at.text_area(key=f"runs_notes_{run_dir.name}").input("lr too high?").run()
    at.button(key="runs_save_notes").click().run()
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value["notes"]) == ["lr too high?"]


def test_runs_page_deletes_after_confirmation():
    keep, doomed = completed_run("keep"), completed_run("doomed")
    at = page("runs")
    at.selectbox(key="runs_run").set_value(doomed.name).run()
    at.button(key="runs_delete").click().run()
    assert doomed.is_dir(), "a first click only asks"
    assert any("cannot be undone" in warning.value for warning in at.warning)
    at.button(key="runs_delete_cancel").click().run()
    assert doomed.is_dir() and not any(button.key == "runs_delete_confirm" for button in at.button)

    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_confirm").click().run()
    assert not at.exception
    assert not doomed.exists() and keep.is_dir()
    assert list(at.dataframe[0].value["name"]) == ["keep"]


def test_runs_page_refuses_to_delete_an_active_run():
    queued = runs.create_run(RunConfig(), runs.default_runs_dir())
    at = page("runs")
    delete = at.button(key="runs_delete")
    assert delete.disabled
    assert any("cancel it on the Train page" in caption.value for caption in at.caption)
    assert at.button(key="runs_continue").disabled
    assert queued.is_dir()


def test_runs_page_continues_a_run(monkeypatch):
    run_dir = completed_run("baseline")
    calls = []

    def resume(run_dir, epochs, runs_dir=None):
        calls.append((Path(run_dir).name, epochs))
        return Path(run_dir)

    monkeypatch.setattr(run_admin, "resume_run", resume)
    at = page("runs")
    at.number_input(key="runs_more_epochs").set_value(3).run()
    at.button(key="runs_continue").click().run()
    assert not at.exception
    assert calls == [(run_dir.name, 3)]
    assert at.session_state["train_run"] == run_dir.name
    assert any("3 more epochs" in success.value for success in at.success)
