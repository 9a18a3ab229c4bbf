"""The working setup and the training workflow in a real headless Chromium: a folder and settings
survive a reload and a restart; two runs started on Train are watched at once, a double click
starts one; a run continued on Runs and from the command line draws unbroken curves."""

from __future__ import annotations

import os
import sys
import time
import warnings
from itertools import pairwise
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_class_folder  # noqa: E402
from test_browser import ARTIFACTS, CHROMIUM, FLAGS, load_folder, wait_for_app  # noqa: E402
from test_web_security import streamlit_server  # noqa: E402

from engine import runs  # noqa: E402
from engine.jsonio import read_json_object  # noqa: E402
from ui import figures, settings_store  # noqa: E402
from ui.compare_views import curves_figure  # noqa: E402

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
WATCH_SECONDS = 3.0  # a Start click shows the new run's live view within this
OVERLOADED = 2.0  # load average per core above which the seconds are reported, not asserted
EPOCHS_LABEL = "Epochs (0 = fit the time budget)"


def open_browser(playwright):
    ARTIFACTS.mkdir(exist_ok=True)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
    return browser, browser.new_page(viewport={"width": 1400, "height": 1600})


TABLE_ROWS = """table => [...table.querySelectorAll('tbody tr')].map(
    row => [...row.querySelectorAll('th, td')].map(cell => cell.innerText.trim()))"""


# ----- the working setup --------------------------------------------------------------------------


def what_the_pages_show(page, url: str) -> dict:
    """The dataset and settings as Train (the tab reloaded), Home and Augment show them."""
    page.reload()  # a new session, as every goto below
    page.get_by_text("This run will use").first.wait_for(timeout=90_000)
    wait_for_app(page)
    rows = dict(page.locator("[data-testid='stTable']").first.evaluate(TABLE_ROWS))
    epochs = page.get_by_label(EPOCHS_LABEL, exact=True).input_value()
    page.goto(f"{url}/")
    page.get_by_text(" classes, ").first.wait_for(timeout=60_000)
    home = page.locator("[data-testid='stMain']").inner_text()
    page.goto(f"{url}/augment")
    flip = page.get_by_label("Vertical flip", exact=True)
    flip.wait_for(state="attached", timeout=60_000)
    # Each sample's class is written above its preview: the first is enough, no preview waited.
    page.locator("[data-testid='stMarkdown'] strong").first.wait_for(timeout=60_000)
    samples = page.locator("[data-testid='stMarkdown'] strong").all_inner_texts()
    return {
        "home": next(line for line in home.splitlines() if " classes, " in line),
        "train dataset": rows["Dataset"],
        "train flip": "vertical flip" in rows["Augmentation"],
        "train epochs": epochs,
        "augment flip": flip.is_checked(),
        "augment sample classes": set(samples) <= {"cat", "dog"} and len(samples) > 0,
    }


def wait_until_saved(check) -> None:
    """Until the settings file (STUDIO_SETTINGS_FILE) holds what check() looks for."""
    deadline = time.monotonic() + 60
    while not check(read_json_object(settings_store.settings_path()) or {}):
        assert time.monotonic() < deadline, "the settings file never got the change"
        time.sleep(0.1)


def test_a_folder_and_settings_survive_a_reload_and_a_restart(tmp_path):
    """Train, Home and Augment show the loaded folder, the flip and the epochs after a reload
    and after a restart of the server (the settings file stays: STUDIO_SETTINGS_FILE)."""
    folder = write_class_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=8)
    folders = (tmp_path / "runs", tmp_path / "cache")
    expected = {
        "home": f"{folder}: 2 classes, 16 images.",
        "train dataset": f"{folder} (16 images, 2 classes)",
        "train epochs": "2",
    } | dict.fromkeys(["train flip", "augment flip", "augment sample classes"], True)
    with playwright_api.sync_playwright() as playwright:
        browser, page = open_browser(playwright)
        with streamlit_server(*folders, tmp_path / "log-1.txt") as url:
            page.goto(f"{url}/data")
            load_folder(page, folder)
            page.get_by_role("heading", name=str(folder)).wait_for(timeout=60_000)
            wait_until_saved(lambda saved: saved.get("data", {}).get("spec") == str(folder))
            page.goto(f"{url}/augment")
            page.get_by_text("Vertical flip").first.click()  # on in no recipe
            wait_until_saved(lambda saved: (saved.get("augment") or {}).get("vertical_flip"))
            page.goto(f"{url}/train")
            epochs = page.get_by_label(EPOCHS_LABEL, exact=True)
            epochs.fill("2")
            epochs.press("Enter")
            wait_until_saved(lambda saved: saved.get("train", {}).get("epochs") == 2)
            assert what_the_pages_show(page, url) == expected
        with streamlit_server(*folders, tmp_path / "log-2.txt") as url:
            page.goto(f"{url}/train")
            assert what_the_pages_show(page, url) == expected
            page.screenshot(path=ARTIFACTS / "workflow-1-augment-after-restart.png", full_page=True)
        browser.close()


# ----- starting, watching, continuing -------------------------------------------------------------

# Sets window.startDisabledSeen once Start is drawn disabled, however briefly.
WATCH_START = """() => {
    window.startDisabledSeen = false;
    window.startObserver?.disconnect();
    window.startObserver = new MutationObserver(() => {
        if ([...document.querySelectorAll('button')].some(
            b => b.innerText.includes('Start training') && b.disabled)) window.startDisabledSeen = true;
    });
    window.startObserver.observe(document.body, {subtree: true, childList: true, attributes: true});
}"""
PLOT_X = "plot => plot.data.map(trace => Array.from(trace.x || []))"  # each trace's x values
# The x values of the page's first drawn chart; null while none is drawn.
CURVE_X = f"""() => {{
    const plot = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
    return plot && plot.data ? ({PLOT_X})(plot) : null;
}}"""
# The run box names the run, Cancel is there, and one chart is drawn that is not the one shown
# before the click (Streamlit keeps an element of the previous run until its new one is drawn).
WATCHING = f"""([name, before]) =>
    [...document.querySelectorAll('[data-testid="stSelectbox"] input')].some(
        box => box.value.includes(name))
    && [...document.querySelectorAll('button')].some(b => b.innerText.includes('Cancel run'))
    && document.querySelectorAll('[data-testid="stPlotlyChart"]').length === 1
    && ({CURVE_X})() !== null && JSON.stringify(({CURVE_X})()) !== before"""


@pytest.fixture
def runs_dir(tmp_path):
    """The test's runs folder: however the test ends, no run it started trains on after it."""
    yield tmp_path / "runs"
    for run_dir in run_folders(tmp_path / "runs"):
        if runs.read_status(run_dir).get("state") in runs.ACTIVE_STATES:
            runs.request_cancel(run_dir)


def run_folders(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []


def start_and_watch(page, runs_dir: Path, click) -> tuple[Path, float]:
    """Click Start as `click` does; (the new run, seconds until the page watches it: its name in
    the run box, Cancel and the curves' figure), after checking Start was drawn disabled."""
    before = set(run_folders(runs_dir))
    shown = page.evaluate(f"() => JSON.stringify(({CURVE_X})())")
    page.evaluate(WATCH_START)
    started = time.monotonic()
    click(page.get_by_role("button", name="Start training"))
    while not (new := set(run_folders(runs_dir)) - before) or not (
        name := runs.read_status(min(new)).get("name")
    ):
        assert time.monotonic() - started < 30, "no run folder appeared"
        time.sleep(0.02)
    page.wait_for_function(WATCHING, arg=[name, shown], timeout=60_000, polling=50)
    seconds = time.monotonic() - started
    assert page.evaluate("window.startDisabledSeen"), "Start was never drawn disabled"
    return new.pop(), seconds


def slow_double_click(button) -> None:
    """Two clicks 250 ms apart, the second on Start as it is by then, disabled or not."""
    button.click()
    button.page.wait_for_timeout(250)
    button.click(force=True)  # no waiting for it to be enabled: a person does not wait either


def expected_curve_x(run_dir: Path) -> list[list[float]]:
    """The x values ui/figures.py gives the run's curves, the same on Train and Compare."""
    series = [(run_dir.name, *runs.read_history(run_dir))]
    per_epoch = {run_dir.name: runs.read_status(run_dir)["steps_per_epoch"]}
    train = [list(trace.x) for trace in figures.training_curves(series, per_epoch).data]
    compare = curves_figure(series, per_epoch, {run_dir.name: "#1f77b4"}, {}).data
    assert [list(trace.x) for trace in compare] == train
    return train


def test_two_runs_a_double_click_and_a_continued_run(tmp_path, runs_dir):
    cache = tmp_path / "cache"
    small = {"spec": "digits", "image_size": 16}
    settings_store.save_settings(
        {"data": small, "augment": None, "model": {}, "train": {"epochs": 1, "batch_size": 64}}
    )
    timings = {}
    with (
        playwright_api.sync_playwright() as playwright,
        streamlit_server(runs_dir, cache, tmp_path / "log.txt") as url,
    ):
        browser, page = open_browser(playwright)
        # Data, then Train from the sidebar, in one tab: the way the workflow goes, and Streamlit
        # loads its Plotly bundle with the tab's first chart (the Data page's), not with Start's.
        page.goto(f"{url}/data")
        page.locator(".js-plotly-plot").first.wait_for(timeout=90_000)
        page.get_by_test_id("stSidebarNav").get_by_text("Train", exact=True).click()
        page.get_by_text("This run will use").first.wait_for(timeout=60_000)
        wait_for_app(page)

        # A double click starts one run, and the page watches it at once.
        first, timings["first run watched"] = start_and_watch(
            page, runs_dir, lambda button: button.dblclick()
        )
        page.wait_for_function(f"() => ({CURVE_X})()?.some(x => x.length)", timeout=120_000)
        page.get_by_text("Completed:").wait_for(timeout=180_000)
        assert run_folders(runs_dir) == [first]

        # The next Start watches the next run at once (its empty axes, not the first run's
        # curves); two clicks 250 ms apart start one run too. Cancel stops it while it starts.
        second, timings["second run watched"] = start_and_watch(page, runs_dir, slow_double_click)
        assert page.evaluate(CURVE_X) != expected_curve_x(first)
        page.screenshot(path=ARTIFACTS / "workflow-2-second-run-watched.png", full_page=True)
        page.get_by_role("button", name="Cancel run").click()
        page.get_by_text("Cancelled before the first epoch finished").wait_for(timeout=60_000)
        assert runs.wait_for(second, timeout=60)["state"] == "cancelled"
        assert run_folders(runs_dir) == sorted([first, second])

        # Continue the first run from the Runs page (the command line's resume: test_run_admin.py).
        page.goto(f"{url}/runs")
        page.get_by_role("heading", name="Continue training").wait_for(timeout=60_000)
        pick(page, "Run", runs.read_status(first)["name"])
        page.get_by_label("More epochs", exact=True).fill("1")
        page.get_by_label("More epochs", exact=True).press("Enter")
        wait_for_app(page)
        page.get_by_role("button", name="Continue this run").click()
        page.get_by_role("link", name="Watch it on the Train page").click()
        page.wait_for_function(WATCHING, arg=[runs.read_status(first)["name"], ""], timeout=60_000)
        assert runs.wait_for(first, timeout=180)["state"] == "completed"

        epochs, steps = runs.read_history(first)
        assert [row["epoch"] for row in epochs] == [1, 2]
        assert sorted({row["epoch"] for row in steps}) == [1, 2]
        expected = expected_curve_x(first)
        # Train and validation lines of loss and accuracy at epochs 1 and 2; the in-epoch lines
        # go on from 0 to 2 in small steps: no restart at 0, no gap.
        assert [x for x in expected if x == [1, 2]] == [[1, 2]] * 4
        in_epoch = [x for x in expected if x != [1, 2]]
        assert len(in_epoch) == 2
        for x in in_epoch:
            assert x == sorted(x) and 0 < x[0] < 1 and 1 < x[-1] < 2
            assert max(b - a for a, b in pairwise(x)) < 0.5

        page.goto(f"{url}/train")
        page.get_by_text("This run will use").first.wait_for(timeout=60_000)
        pick(page, "Run", runs.read_status(first)["name"])
        page.wait_for_function(f"() => ({CURVE_X})()?.some(x => x.includes(2))", timeout=30_000)
        assert page.evaluate(CURVE_X) == expected
        page.screenshot(path=ARTIFACTS / "workflow-3-train-continued.png", full_page=True)

        page.goto(f"{url}/compare")
        page.get_by_role("heading", name="Compare runs").wait_for(timeout=60_000)
        wait_for_app(page)
        curves = page.get_by_test_id("stPlotlyChart").filter(has=page.get_by_text("epoch")).first
        assert curves.locator(".js-plotly-plot").evaluate(PLOT_X)[: len(expected)] == expected
        page.screenshot(path=ARTIFACTS / "workflow-4-compare-continued.png", full_page=True)
        browser.close()
    (ARTIFACTS / "workflow-seconds.txt").write_text(
        "".join(f"{what}: {seconds:.2f} s\n" for what, seconds in timings.items())
    )
    # The page's own work after a click is well under a second of the server's time; on a
    # machine this busy the seconds measure the other work, so they are reported, not judged.
    slow = {what: seconds for what, seconds in timings.items() if seconds >= WATCH_SECONDS}
    load = os.getloadavg()[0]
    if slow and load > OVERLOADED * (os.cpu_count() or 1):
        warnings.warn(f"slow under a load average of {load:.1f}: {slow}", stacklevel=1)
    else:
        assert not slow, f"the page watched the new run after more than {WATCH_SECONDS} s: {slow}"


def pick(page, label: str, option: str) -> None:
    """Choose a selectbox's option by typing it: a click alone sometimes only focuses the box."""
    wait_for_app(page)
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    box.fill(option)
    page.get_by_role("option").filter(has_text=option).first.click()
    wait_for_app(page)
