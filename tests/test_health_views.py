"""The Data page's health section under AppTest: the audit runs on Run, its findings show, file
and class names stay plain text, and its Exclude buttons change the saved choices, the next
run's config and the counts, which Undo restores."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_health import photo, save_jpeg

from engine.config import DataConfig, RunConfig
from engine.data import edits
from engine.runs import create_run
from ui.health_edits_views import KEEP_ONE, keep_one_files, ordered
from ui.health_views import balance_figure
from ui.text import plain


def section(folder: str) -> None:
    from engine.config import DataConfig
    from ui.health_views import health_section

    health_section(DataConfig(spec=folder))


def test_the_audit_runs_on_request_and_shows_its_findings(tmp_path):
    root = tmp_path / "birds"
    for class_id, name in enumerate(("owl", "**bold**")):
        for number in range(10):
            save_jpeg(photo(class_id * 100 + number, size=64), root / name / f"{number}.jpg")
    shutil.copy(root / "owl" / "0.jpg", root / "**bold**" / "![x](y) <b>.jpg")

    at = AppTest.from_function(section, args=(str(root),), default_timeout=120).run()
    assert not at.exception
    assert [info.value for info in at.info] == ["Run the audit to see the health of this dataset."]

    at.checkbox(key="data_health_labels").check().run()
    at.button(key="data_health_start").click().run()
    assert not at.exception
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Images"] == "21"
    assert metrics["Exact duplicate groups"] == "1" and metrics["Label conflicts"] == "1"
    assert metrics["Leaks across splits"] == "0"
    captions = [caption.value for caption in at.caption]
    conflict = [text for text in captions if text.startswith("Group 1: 2 files")]
    assert conflict and all(r"class \*\*bold\*\*, owl" in text for text in conflict)
    assert not any("**bold**" in text for text in captions)
    assert any("logistic regression on simple image features (5-fold" in t for t in captions)
    tables = [frame.value for frame in at.dataframe]
    assert any(
        "given" in table.columns and set(table["given"]) <= {"owl", "**bold**"} for table in tables
    )


def test_the_balance_figure_compares_shares_of_each_split():
    figure = balance_figure({"train": {"a": 30, "<b>": 10}, "test": {"a": 5, "<b>": 5}})
    assert figure.layout.xaxis.title.text == "class"
    assert figure.layout.yaxis.title.text == "share of the split's images (%)"
    train, test = figure.data
    assert list(train.y) == [75.0, 25.0] and list(test.y) == [50.0, 50.0]
    assert list(train.x) == ["a", "&lt;b&gt;"]


# ----- exclusions made from the Health section -----------------------------------------------

PAGES = Path(__file__).resolve().parent.parent / "pages"
COPY = "cat/**copy** [x](y).jpg"  # a byte-identical copy whose name is Markdown
TRIPLE = ["dog/dog_000.jpg", "dog/dog_copy_1.jpg", "dog/dog_copy_2.jpg"]


def key(kind: str, action: str, file: str) -> str:
    """The widget key of a group's or a file's button (ui.health_edits_views.group_gallery)."""
    return f"data_health_{kind}_{action}_{hashlib.sha1(file.encode()).hexdigest()[:12]}"


@pytest.fixture
def audited(tmp_path) -> tuple[AppTest, Path]:
    """The Data page on a folder of 30 photos holding a copied pair and a copied triple, audited."""
    folder = tmp_path / "pets"
    for class_id, name in enumerate(("cat", "dog", "fox")):
        for number in range(9):
            save_jpeg(
                photo(class_id * 100 + number, size=48), folder / name / f"{name}_{number:03d}.jpg"
            )
    shutil.copyfile(folder / "cat" / "cat_000.jpg", folder / COPY)
    for copy in TRIPLE[1:]:
        shutil.copyfile(folder / TRIPLE[0], folder / copy)
    at = AppTest.from_file(str(PAGES / "data.py"), default_timeout=120).run()
    at.radio(key="data_source").set_value("Folder on this machine").run()
    at.text_input(key="data_folder").input(str(folder)).run()
    at.button(key="data_load").click().run()
    at.button(key="data_health_start").click().run()
    assert not at.exception, at.exception
    assert counts(at) == {"page": 30, "health": 30, "exact": 2, "near": 0}
    return at, folder


def counts(at: AppTest) -> dict[str, int]:
    """The page's image count, and the audit's images and groups of copies."""
    page, health = [m.value for m in at.metric if m.label == "Images"]
    exact, near = (m.value for m in at.metric if m.label.endswith("duplicate groups"))
    return {"page": int(page), "health": int(health), "exact": int(exact), "near": int(near)}


def saved(at: AppTest, folder: Path) -> tuple[str, ...]:
    """The exclusions saved for the folder; the config.json of a run started from the page's
    working config must record the same."""
    choices = edits.load(DataConfig(spec=str(folder))).exclude
    run_dir = create_run(RunConfig(data=DataConfig(**at.session_state["data_config"])))
    assert json.loads((run_dir / "config.json").read_text())["data"]["exclude"] == list(choices)
    return choices


def test_exclude_all_but_the_first_of_a_group_and_undo(audited):
    at, folder = audited
    at.button(key=key("exact", "rest", TRIPLE[0])).click().run()
    assert not at.exception, at.exception
    assert saved(at, folder) == tuple(TRIPLE[1:])
    assert counts(at) == {"page": 28, "health": 28, "exact": 1, "near": 0}
    assert at.success[0].value == "Excluded 2 files; the next run leaves them out."
    assert f"Excluded: {plain(TRIPLE[1])}" in [markdown.value for markdown in at.markdown]

    at.button(key="data_health_undo").click().run()
    assert not at.exception, at.exception
    assert saved(at, folder) == ()
    assert counts(at) == {"page": 30, "health": 30, "exact": 2, "near": 0}
    assert at.success[0].value == "Took back the choices about 2 files."


def test_a_file_named_in_markdown_is_excluded_and_named_as_text(audited):
    at, folder = audited
    at.button(key=key("exact", "exclude", COPY)).click().run()
    assert not at.exception, at.exception
    assert saved(at, folder) == (COPY,)
    assert counts(at) == {"page": 29, "health": 29, "exact": 1, "near": 0}
    assert at.success[0].value == plain(f"Excluded {COPY}; the next run leaves it out.")
    shown = [e.value for e in (*at.markdown, *at.caption, *at.success)]
    assert not any("**copy**" in text for text in shown)
    at.button(key="data_undo_all").click().run()  # the Data page's own Undo all takes it back
    assert saved(at, folder) == ()
    assert counts(at) == {"page": 30, "health": 30, "exact": 2, "near": 0}


def test_keep_one_of_each_duplicate_group_after_its_confirmation(audited):
    at, folder = audited
    [confirm] = [button for button in at.button if button.key == "data_health_keep_one"]
    assert confirm.label == "Exclude 3 files"  # in the popover the first button opens
    confirm.click().run()
    assert not at.exception, at.exception
    # The first of a group in the audit's order stays: COPY sorts before cat_000.jpg.
    assert saved(at, folder) == ("cat/cat_000.jpg", *TRIPLE[1:])
    assert counts(at) == {"page": 27, "health": 27, "exact": 0, "near": 0}
    assert at.session_state[KEEP_ONE] is False  # the confirmation closed
    assert "No byte-identical files." in [success.value for success in at.success]
    at.button(key="data_health_undo").click().run()
    assert saved(at, folder) == ()
    assert counts(at)["exact"] == 2


def group(*files: str, classes: str = "") -> list[dict]:
    classes = classes or "a" * len(files)
    return [{"file": f, "class": c, "split": "train"} for f, c in zip(files, classes, strict=True)]


def test_keep_one_of_each_keeps_one_file_of_a_near_group_that_holds_an_exact_one():
    """A near group [a, b, c] holds the exact pair [b, c]: a stays, b and c go (not all three)."""
    report = {
        "exact_duplicates": [group("b", "c"), group("x", "y", "z")],
        "near_duplicates": [group("a", "b", "c")],
    }
    assert keep_one_files(report) == ["b", "c", "y", "z"]


def test_a_copy_of_the_groups_most_common_class_is_the_one_kept():
    """A photo copied into another class: its copies in the first class are the majority."""
    conflict = group("b/stolen.png", "o/owl.png", "o/owl copy.png", classes="boo")
    assert [member["file"] for member in ordered(conflict)][0] == "o/owl.png"
    report = {"exact_duplicates": [conflict], "near_duplicates": []}
    assert keep_one_files(report) == ["b/stolen.png", "o/owl copy.png"]
