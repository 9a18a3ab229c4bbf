"""The data health and insight views in a real headless Chromium, on one server: a duplicate
excluded from the Data page's Health section and taken back; Grad-CAM, the embedding and the
export on Evaluate, the unfamiliar-image hint on Predict and the verdict on Compare, over a run
trained here."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_browser import CHROMIUM, FLAGS, load_folder, wait_for_app  # noqa: E402
from test_health import photo  # noqa: E402
from test_web_security import streamlit_server  # noqa: E402

from engine.config import DataConfig  # noqa: E402
from engine.data import edits  # noqa: E402
from ui.explain_views import GRADCAM_LABEL, UNFAMILIAR_TEXT  # noqa: E402

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (apt-get install -y chromium)",
    ),
]
DATA_FILES = ("load_report.json", "data_manifest.json")  # what a run says of its data
COPY = "cat/cat_copy.png"  # a byte-identical copy of cat/cat_000.png
METRICS = """() => [...document.querySelectorAll('[data-testid="stMetric"]')].map(metric => [
    metric.querySelector('[data-testid="stMetricLabel"]').innerText.trim(),
    metric.querySelector('[data-testid="stMetricValue"]').innerText.trim()])"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """(the server's URL, its cache folder) over two runs: a digits run trained for one epoch
    at 16 px, and its model evaluated with flip test-time augmentation as a second run (a
    second training would double the time; the Compare page compares evaluations)."""
    from engine.config import RunConfig
    from engine.evaluation import evaluate_run
    from engine.runs import create_run, update_status
    from engine.training import train_run

    runs_dir, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_CACHE_DIR", str(cache))
        patch.setenv("STUDIO_SETTINGS_FILE", str(tmp_path_factory.mktemp("config") / "s.json"))
        config = RunConfig().replace(
            data={"image_size": 16},
            train={"epochs": 1, "ema": False, "schedule": "constant", "learning_rate": 3e-3},
        )
        trained = create_run(config, runs_dir)
        status = train_run(trained)
        assert status["state"] == "completed", status
        flipped = create_run(config, runs_dir)
        for name in ("best.keras", "best.json", "history.jsonl", *DATA_FILES):
            shutil.copyfile(trained / name, flipped / name)
        own = ("run_id", "name", "created_at", "pid", "pid_start_time")
        kept = {key: value for key, value in status.items() if key not in own}
        update_status(flipped, **{**kept, "name": "flip TTA"})
        evaluate_run(flipped, tta=True)
        with streamlit_server(runs_dir, cache, tmp_path_factory.mktemp("log") / "log.txt") as url:
            yield url, cache


@pytest.fixture(scope="module")
def page(studio):
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser.new_page(viewport={"width": 1400, "height": 1800})
        browser.close()


def metrics(page) -> dict[str, list[str]]:
    """Every metric's values by its label, in page order."""
    found: dict[str, list[str]] = {}
    for label, value in page.evaluate(METRICS):
        found.setdefault(label, []).append(value)
    return found


def script_done(page) -> None:
    """Wait until the page's script has finished (its images may still be loading)."""
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=60_000
    )


def shot(page, path: Path, heading: str = "") -> None:
    """A screenshot of the viewport, scrolled to a heading first (the page scrolls inside), of
    a page that shows no exception."""
    assert page.locator("[data-testid='stException']").count() == 0, path.name
    if heading:
        top = page.get_by_role("heading", name=heading, exact=True)
        top.evaluate("element => element.scrollIntoView({block: 'start'})")
    page.mouse.move(0, 0)  # no tooltip over what is shown
    page.screenshot(path=path)


def counts(page) -> tuple[str, str, str]:
    """(the page's images, the audit's images, the audit's exact duplicate groups)."""
    shown = metrics(page)
    return (*shown["Images"], shown["Exact duplicate groups"][0])


def test_a_duplicate_excluded_from_the_health_section_and_taken_back(studio, page, tmp_path):
    url, cache = studio
    folder = tmp_path / "pets"
    for class_id, name in enumerate(("cat", "dog")):
        (folder / name).mkdir(parents=True)
        for number in range(6):
            photo(class_id * 100 + number, size=48).save(folder / name / f"{name}_{number:03d}.png")
    shutil.copyfile(folder / "cat" / "cat_000.png", folder / COPY)

    page.goto(f"{url}/data")
    page.get_by_role("heading", name="Data").wait_for(timeout=60_000)
    script_done(page)  # a click before the form is drawn could send its numbers unset
    load_folder(page, folder)
    page.get_by_role("heading", name=str(folder)).wait_for(timeout=60_000)
    page.get_by_role("button", name="Run the audit").click()
    page.get_by_text("Exact duplicate groups").wait_for(timeout=60_000)
    wait_for_app(page)
    shot(page, tmp_path / "1-audited.png", "Health")
    assert counts(page) == ("13", "13", "1")

    page.get_by_role("button", name="Exclude all but the first").click()
    page.get_by_text(f"Excluded {COPY}; the next run leaves it out.").wait_for(timeout=60_000)
    wait_for_app(page)
    shot(page, tmp_path / "2-excluded.png", "Health")
    assert counts(page) == ("12", "12", "0")
    # Recorded: the saved choices every later run of this folder starts from, and the Train
    # page's summary of what Start will use, in a second tab (a new session).
    assert edits.load(DataConfig(spec=str(folder)), cache).exclude == (COPY,)
    assert edits.fill_in({"spec": str(folder)}, cache)["exclude"] == [COPY]
    train = page.context.browser.new_page(viewport={"width": 1400, "height": 1400})
    train.goto(f"{url}/train")
    train.get_by_text(f"{folder} (12 images, 2 classes)").wait_for(timeout=60_000)  # not 13
    shot(train, tmp_path / "3-train.png", "This run will use")
    train.close()

    page.locator(".st-key-data_health_undo button").click()
    page.get_by_text(f"Took back the choices about {COPY}.").wait_for(timeout=60_000)
    wait_for_app(page)
    shot(page, tmp_path / "4-undone.png", "Health")
    assert counts(page) == ("13", "13", "1")
    assert edits.load(DataConfig(spec=str(folder)), cache).exclude == ()


def noise_png() -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


def test_gradcam_embedding_export_unfamiliar_hint_and_verdict(studio, page, tmp_path):
    url = studio[0]
    page.goto(f"{url}/evaluate")
    page.get_by_text("Confusion matrix").first.wait_for(timeout=60_000)
    wait_for_app(page)  # each click below on a page whose script has finished
    page.get_by_text(GRADCAM_LABEL).click()
    page.get_by_text("· Grad-CAM").first.wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_text("Show the embedding").click()
    scatter = page.locator(".st-key-eval_embedding .js-plotly-plot")  # the chart's key
    scatter.locator(".xtitle").wait_for(timeout=60_000)
    wait_for_app(page)
    shot(page, tmp_path / "5-evaluate.png", "Embedding")
    assert "Grad-CAM" in " ".join(page.locator("[data-testid='stImage']").all_inner_texts())
    x_title = scatter.locator(".xtitle").text_content()
    assert re.fullmatch(r"principal component 1 \(\d+% of the variance\)", x_title)
    assert scatter.locator(".ytitle").text_content().startswith("principal component 2")

    page.get_by_role("combobox", name="Format").click()  # its list, then its option
    page.get_by_role("option", name="TensorFlow Lite, float32").click()
    page.get_by_role("button", name="Export", exact=True).click()
    download_button = page.get_by_role("button", name="Download the export (.zip)")
    download_button.wait_for(timeout=120_000)
    wait_for_app(page)
    shot(page, tmp_path / "6-export.png", "Export the model")
    shown = metrics(page)
    assert shown["Keras accuracy"] == shown["Exported accuracy"]
    with page.expect_download() as download:
        download_button.click()
    archive = tmp_path / "export.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as opened:
        names = {Path(name).name: name for name in opened.namelist()}
        assert {"labels.txt", "export.json"} <= set(names)
        info = json.loads(opened.read(names["export.json"]))
        labels = opened.read(names["labels.txt"]).decode().split()
    assert info["format"] == "tflite" and info["keras_accuracy"] == info["exported_accuracy"]
    assert labels == [str(digit) for digit in range(10)]

    page.goto(f"{url}/predict")
    page.get_by_role("heading", name="Predict").wait_for(timeout=60_000)
    page.locator("input[type='file']").first.set_input_files(
        files=[{"name": "noise.png", "mimeType": "image/png", "buffer": noise_png()}]
    )
    page.get_by_text(UNFAMILIAR_TEXT).wait_for(timeout=60_000)
    wait_for_app(page)
    shot(page, tmp_path / "7-predict.png")

    page.goto(f"{url}/compare")
    page.get_by_text("Is one run really better?").wait_for(timeout=60_000)
    verdict = page.locator("[data-testid='stAlert']").filter(
        has_text=re.compile(r"is better: it is right on|No evidence of a difference")
    )
    verdict.first.wait_for(timeout=60_000)
    wait_for_app(page)
    shot(page, tmp_path / "8-compare.png", "Is one run really better?")
    sentence = verdict.first.inner_text()
    assert "flip TTA" in sentence and "default_cnn-digits-1" in sentence
