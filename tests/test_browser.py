"""The dashboard in a real headless Chromium: a walk through every page with a screenshot each, and
what a fresh server shows to a deep link, to another host name and to the outside world."""

from __future__ import annotations

import io
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

# bench/live_dashboard.py imports this module as tests.test_browser, without tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_web_security import BOLD, IMAGE_LINK, streamlit_server  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
ARTIFACTS = PROJECT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A second name for this machine, as a DNS-rebinding page would make one.
    "--host-resolver-rules=MAP rebind.example 127.0.0.1",
]

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with streamlit_server(
        tmp_path_factory.mktemp("browser-runs"),
        tmp_path_factory.mktemp("browser-cache"),
        tmp_path_factory.mktemp("browser-log") / "streamlit.log",
    ) as url:
        yield url


def wait_for_app(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished the page's script and its images and charts are drawn."""
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".every(image => image.complete && image.naturalWidth > 0)"
        " && [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
        ".every(chart => chart.querySelector('.main-svg'))",
        timeout=timeout,
    )


LOCAL_NAMES = ("127.0.0.1", "localhost", "rebind.example")


def record_outside_requests(page) -> list[str]:
    """The URLs of every request the page makes to a host other than this machine."""
    outside: list[str] = []

    def check(request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob") and parts.hostname not in LOCAL_NAMES:
            outside.append(request.url)

    page.on("request", check)
    return outside


def png_bytes() -> bytes:
    from sklearn.datasets import load_digits

    digit = (load_digits().images[3] * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(digit).resize((64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_whole_flow_in_a_real_browser(server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    upload = tmp_path / "three.png"
    upload.write_bytes(png_bytes())
    started = time.monotonic()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        outside = record_outside_requests(page)

        page.goto(f"{server}/data")
        page.get_by_text("1,797").first.wait_for(timeout=90_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=60_000)
        wait_for_app(page)
        page.screenshot(path=ARTIFACTS / "1-data.png", full_page=True)

        page.goto(f"{server}/augment")
        page.get_by_role("heading", name="Augment").wait_for(timeout=60_000)
        page.get_by_text("Horizontal flip").first.click()
        page.locator("[data-testid='stImage'] img").nth(3).wait_for(timeout=60_000)
        wait_for_app(page)
        page.screenshot(path=ARTIFACTS / "2-augment.png", full_page=True)

        page.goto(f"{server}/train")
        page.get_by_role("heading", name="Train").wait_for(timeout=60_000)
        page.get_by_text("This run will use").first.wait_for(timeout=60_000)
        epochs = page.get_by_label("Epochs (0 = fit the time budget)", exact=True)
        epochs.fill("1")
        epochs.press("Enter")
        wait_for_app(page)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Completed").first.wait_for(timeout=150_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
        wait_for_app(page)
        page.screenshot(path=ARTIFACTS / "3-train.png", full_page=True)

        page.goto(f"{server}/evaluate")
        page.get_by_text("Confusion matrix").first.wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        wait_for_app(page)
        page.screenshot(path=ARTIFACTS / "4-evaluate.png", full_page=True)

        page.goto(f"{server}/compare")
        page.get_by_role("heading", name="Compare").wait_for(timeout=60_000)
        page.locator("[data-testid='stDataFrame'], [data-testid='stTable']").first.wait_for(
            timeout=60_000
        )
        wait_for_app(page)
        page.screenshot(path=ARTIFACTS / "5-compare.png", full_page=True)

        page.goto(f"{server}/predict")
        page.get_by_role("heading", name="Predict").wait_for(timeout=60_000)
        page.locator("input[type='file']").first.set_input_files(str(upload))
        page.get_by_text("three.png").first.wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        wait_for_app(page)
        page.screenshot(path=ARTIFACTS / "6-predict.png", full_page=True)
        text = page.locator("[data-testid='stMain']").inner_text()
        browser.close()
    elapsed = time.monotonic() - started
    (ARTIFACTS / "flow-seconds.txt").write_text(f"{elapsed:.1f}\n")
    assert "Traceback" not in text
    assert outside == []  # no font, icon, emoji or metrics request leaves this machine
    assert (
        elapsed < 240
    )  # generous for a loaded CI machine; the figure itself is recorded in flow-seconds.txt


ROUTER_PAGES = [
    "Home",
    "Data",
    "Collect",
    "Augment",
    "Train",
    "Runs",
    "Evaluate",
    "Compare",
    "Predict",
]
WEBSOCKET_FROM_PAGE = """port => new Promise(done => {
    const socket = new WebSocket(`ws://rebind.example:${port}/_stcore/stream`, "streamlit");
    socket.onopen = () => done("open");
    socket.onclose = () => done("refused");
})"""


@pytest.mark.slow
def test_fresh_server_routes_a_deep_link_and_answers_only_this_machine(tmp_path):
    """A bookmark to /train as the first visit gets app.py's router, a rebinding name nothing,
    and no page asks a host outside this machine for anything."""
    from conftest import write_class_folder  # conftest sets test-only environment defaults

    with (
        streamlit_server(tmp_path / "runs", tmp_path / "cache", tmp_path / "log.txt") as url,
        playwright_api.sync_playwright() as playwright,
    ):
        port = int(url.rsplit(":", 1)[1])
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        outside = record_outside_requests(page)

        # The first session of this server: Streamlit's legacy pages/ mode would run
        # pages/train.py alone, with a sidebar of file names (app, augment, ...).
        page.goto(f"http://localhost:{port}/train")
        page.get_by_role("heading", name="Train").wait_for(timeout=90_000)
        wait_for_app(page)
        navigation = page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()
        assert [label.split("\n")[-1] for label in navigation] == ROUTER_PAGES
        assert page.title() == "Image Classification Studio"
        assert page.url == f"http://localhost:{port}/train"

        # The same server under a name that resolves to 127.0.0.1: no app, no websocket.
        response = page.goto(f"http://rebind.example:{port}/")
        assert response.status == 403
        assert page.locator("body").inner_text().startswith("Forbidden")
        assert page.locator("[data-testid='stApp']").count() == 0
        assert page.evaluate("url => fetch(url).then(r => r.status)", "/_stcore/health") == 403
        assert page.evaluate(WEBSOCKET_FROM_PAGE, port) == "refused"
        assert page.goto(f"http://rebind.example:{port}/train").status == 403

        # Localhost still gets the app, and class names that are Markdown show as typed: the
        # image link is text, not a request to example.invalid (which `outside` would catch).
        hostile = write_class_folder(tmp_path / "hostile", classes=(IMAGE_LINK, BOLD), per_class=6)
        page.goto(f"http://localhost:{port}/data")
        load_folder(page, hostile)
        page.get_by_text(re.compile(r"of \d+ train images")).wait_for(timeout=60_000)
        page.wait_for_selector(
            "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=60_000
        )
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        assert outside == []
        captions = set(page.locator("[data-testid='stImage']").all_inner_texts())
        # Each caption is "class · file name"; the class part shows the name literally.
        assert {caption.split(" · ")[0] for caption in captions} == {IMAGE_LINK, BOLD}
        browser.close()


def load_folder(page, folder) -> None:
    """On the open Data page: pick "Folder on this machine", type the folder's path, Load."""
    page.get_by_text("Folder on this machine").click()
    path = page.get_by_label("Folder", exact=True)
    path.fill(str(folder))
    path.press("Enter")
    page.get_by_role("button", name="Load", exact=True).click()
