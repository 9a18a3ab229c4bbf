"""The Data page's Health area under AppTest: exclude and relabel shown images, undo them, and the
next run's config and counts; a damaged edits file; exclude_files for the audit view."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import write_class_folder
from streamlit.testing.v1 import AppTest

from engine.config import DataConfig, RunConfig
from engine.data import edits, load_dataset
from engine.runs import create_run, default_runs_dir, load_config
from ui.text import plain

PAGES = Path(__file__).resolve().parent.parent / "pages"
COPY = "cat/_copy_ **of** [cat](x).png"  # a byte-identical copy, its name full of Markdown


def data_page() -> AppTest:
    at = AppTest.from_file(str(PAGES / "data.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def load_folder(at: AppTest, folder: Path) -> None:
    at.radio(key="data_source").set_value("Folder on this machine").run()
    at.text_input(key="data_folder").input(str(folder)).run()
    at.button(key="data_load").click().run()
    assert not at.exception, at.exception


def widget(elements, label: str):
    [found] = [element for element in elements if element.label == label]
    return found


def images(at: AppTest) -> int:
    return int(widget(at.metric, "Images").value.replace(",", ""))


def next_run(at: AppTest) -> tuple[dict, int]:
    """The data section of a run started from the page's working config, and its image count."""
    run_dir = create_run(RunConfig(data=DataConfig(**at.session_state["data_config"])))
    assert run_dir.parent == default_runs_dir()
    recorded = json.loads((run_dir / "config.json").read_text())["data"]
    counts = load_dataset(load_config(run_dir).data).counts()
    return recorded, sum(sum(per_class.values()) for per_class in counts.values())


def test_excluding_a_duplicate_on_the_page_changes_the_next_run_and_undo_restores_it(tmp_path):
    folder = write_class_folder(tmp_path / "pets", per_class=8)
    shutil.copyfile(folder / "cat" / "cat_000.png", folder / COPY)
    dataset = load_dataset(DataConfig(spec=str(folder)))
    assert dataset.duplicate_groups() == [[COPY, "cat/cat_000.png"]]
    [index] = dataset.find_items([COPY])
    split = next(name for name, ids in dataset.split_indices.items() if index in ids)
    at = data_page()
    load_folder(at, folder)
    assert images(at) == 25
    widget(at.radio, "Split").set_value(split).run()
    assert COPY in widget(at.selectbox, "Image shown above").options  # every image of the split

    widget(at.selectbox, "Image shown above").set_value(COPY)
    at.button(key="data_exclude").click().run()
    assert not at.exception, at.exception
    assert at.session_state["data_config"]["exclude"] == (COPY,)
    assert images(at) == 24
    assert at.success[0].value == plain(f"Excluded {COPY}; the next run leaves it out.")
    assert f"Excluded: {plain(COPY)}" in [markdown.value for markdown in at.markdown]
    assert COPY not in widget(at.selectbox, "Image shown above").options
    assert widget(at.radio, "Split").value == split  # the gallery stays where it was
    recorded, count = next_run(at)
    assert recorded["exclude"] == [COPY] and count == 24
    assert edits.load(DataConfig(spec=str(folder))).exclude == (COPY,)

    [undo] = [button for button in at.button if button.label == "Undo"]
    undo.click().run()
    assert not at.exception, at.exception
    assert at.session_state["data_config"]["exclude"] == ()
    assert images(at) == 25
    recorded, count = next_run(at)
    assert recorded["exclude"] == [] and count == 25


def test_relabel_on_the_page_and_undo_all(tmp_path):
    folder = write_class_folder(tmp_path / "pets", per_class=6)
    at = data_page()
    load_folder(at, folder)
    shown = widget(at.selectbox, "Image shown above")
    name = shown.value
    target = next(label for label in ("cat", "dog", "fox") if not name.startswith(label))
    widget(at.selectbox, "Relabel to").set_value(target)
    at.button(key="data_relabel").click().run()
    assert not at.exception, at.exception
    assert at.session_state["data_config"]["relabel"] == {name: target}
    assert plain("Excluded 0 files by the user, relabelled 1.") in [info.value for info in at.info]
    recorded, count = next_run(at)
    assert recorded["relabel"] == {name: target} and count == 18

    at.button(key="data_undo_all").click().run()
    assert not at.exception, at.exception
    assert at.session_state["data_config"]["relabel"] == {}
    assert edits.load(DataConfig(spec=str(folder))) == edits.Edits()
    assert at.success[0].value == plain(
        "Every exclusion and relabel is undone; the next run uses the data as it is."
    )


def test_a_damaged_edits_file_is_a_sentence_and_the_page_works():
    path = edits.edits_path(DataConfig())
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"exclude": [1, 2]')
    at = data_page()
    [warning] = [w.value for w in at.warning if "is damaged" in w.value]
    assert warning.endswith("delete or replace it.")
    assert images(at) == 1797
    at.button(key="data_exclude").click().run()
    assert not at.exception, at.exception
    assert images(at) == 1796
    assert path.with_suffix(".damaged.json").read_bytes() == b'{"exclude": [1, 2]'
    assert not [w for w in at.warning if "is damaged" in w.value]


def audit_view() -> None:
    """What the audit view does with a duplicate group: exclude all but one of it."""
    import streamlit as st

    from ui import edits_services
    from ui.state import data_config

    if st.button("Exclude the copies", key="health_exclude"):
        said = edits_services.exclude_files(data_config().spec, ["train[5]", "train[3]"])
        st.session_state["said"] = said


def test_exclude_files_for_the_audit_view():
    from ui import services

    at = AppTest.from_function(audit_view, default_timeout=60).run()
    at.button(key="health_exclude").click().run()
    assert not at.exception, at.exception
    assert at.session_state["said"] == "Excluded 2 files; the next run leaves them out."
    assert at.session_state["data_config"]["exclude"] == ("train[3]", "train[5]")
    assert edits.load(DataConfig()).exclude == ("train[3]", "train[5]")
    dataset = services.get_dataset(DataConfig(exclude=("train[3]", "train[5]")))
    assert sum(len(dataset.indices(split)) for split in ("train", "validation", "test")) == 1795
