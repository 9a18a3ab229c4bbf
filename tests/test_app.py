"""The app router and the Train page under AppTest: render, start a run, see it complete."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import runs

PROJECT = Path(__file__).resolve().parent.parent
PAGES = sorted((PROJECT / "pages").glob("*.py"))


def test_router_renders_home():
    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Image Classification Studio" in title.value for title in at.title)


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_page_renders_alone(page):
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.title, "every page has a title"


@pytest.mark.slow
def test_train_page_runs_one_epoch_to_completion(monkeypatch):
    at = AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=60).run()
    assert [info.value for info in at.info] == [
        "No runs yet: choose a model and press Start training."
    ]
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="train_start").click().run()
    assert not at.exception
    run_id = at.session_state["train_run"]
    run_dir = Path(runs.default_runs_dir()) / run_id
    assert runs.load_config(run_dir).train.epochs == 1
    status = runs.wait_for(run_dir, timeout=240)
    assert status["state"] == "completed", (run_dir / "log.txt").read_text()[-2000:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        at.run()
        if at.success:
            break
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["State"] == "completed" and metrics["Epoch"] == "1/1"
    assert at.success and "test accuracy" in at.success[0].value
    assert at.get("plotly_chart"), "the curves are drawn"
