"""The Data page's health section under AppTest: the audit runs on Run, its findings show, and
file and class names stay plain text."""

from __future__ import annotations

import shutil

from streamlit.testing.v1 import AppTest
from test_health import photo, save_jpeg

from ui.health_views import balance_figure


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
