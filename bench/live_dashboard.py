"""Measure the dashboard while a run trains: page-open times, reload, and cancel latency.

    python -m bench.live_dashboard [--epochs 200]

Starts `streamlit run app.py` on a free port with fresh runs and cache folders, starts a long digits
run from the Train page in headless Chromium, then (1) opens the other pages and times each until
its content is shown, (2) reloads the tab and checks that the same run is still shown training,
(3) presses Cancel and times until the training process has ended. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from engine import processes, runs  # noqa: E402
from tests.test_browser import CHROMIUM, FLAGS, streamlit_server, wait_for_app  # noqa: E402


def time_page(page, open_page, ready: str) -> dict[str, float]:
    """Seconds until a page's marker text shows (content) and until it is idle and drawn (complete)."""
    started = time.monotonic()
    open_page()
    page.get_by_text(ready).first.wait_for(timeout=60_000)
    shown = time.monotonic() - started
    wait_for_app(page)
    return {"content": round(shown, 2), "complete": round(time.monotonic() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="studio-live-"))
    (work / "runs").mkdir()
    (work / "cache").mkdir()
    (PROJECT / "test-artifacts").mkdir(exist_ok=True)
    result: dict = {}
    try:
        with (
            streamlit_server(
                work / "runs", work / "cache", work / "streamlit.log", offline=False
            ) as url,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=FLAGS, headless=True
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/train")
            page.get_by_role("heading", name="Train").wait_for(timeout=60_000)
            epochs = page.get_by_label("Epochs", exact=True)
            epochs.fill(str(args.epochs))
            epochs.press("Enter")
            wait_for_app(page)
            page.get_by_role("button", name="Start training").click()
            page.get_by_text("step").first.wait_for(
                timeout=120_000
            )  # the progress bar: training has begun
            run_dir = next(d for d in (work / "runs").iterdir() if d.is_dir())

            pages = (
                ("Data", "1,797"),
                ("Augment", "Augment"),
                ("Evaluate", "Evaluate"),
                ("Compare", "Compare runs"),
                ("Predict", "Predict"),
                ("Home", "Image Classification Studio"),
            )
            sidebar = page.locator("[data-testid='stSidebarNav']")
            clicked = {  # as a person switches pages: the sidebar
                name: time_page(
                    page, lambda n=name: sidebar.get_by_text(n, exact=True).click(), ready
                )
                for name, ready in pages
            }
            loaded = {  # a bookmark or a new tab: the whole frontend loads again
                name: time_page(
                    page,
                    lambda n=name: page.goto(f"{url}/{'' if n == 'Home' else n.lower()}"),
                    ready,
                )
                for name, ready in pages
            }
            result["page_open_seconds_while_training"] = {
                "sidebar_click": clicked,
                "new_tab": loaded,
            }
            result["state_while_pages_opened"] = runs.read_status(run_dir)["state"]

            page.goto(f"{url}/train")
            page.get_by_role("button", name="Cancel run").wait_for(timeout=60_000)
            page.reload()
            page.get_by_role("button", name="Cancel run").wait_for(timeout=60_000)
            wait_for_app(page)
            page.screenshot(path=str(PROJECT / "test-artifacts" / "live-after-reload.png"))
            main_text = page.locator("[data-testid='stMain']").inner_text()
            result["after_reload_same_run_shown"] = run_dir.name in page.content()
            result["after_reload_running_shown"] = "running" in main_text
            result["after_reload_state"] = runs.read_status(run_dir)["state"]
            pid = runs.read_status(run_dir)["pid"]
            started = time.monotonic()
            page.get_by_role("button", name="Cancel run").click()
            while processes.process_alive(pid) and time.monotonic() - started < 60:
                time.sleep(0.05)
            result["cancel_to_process_end_seconds"] = round(time.monotonic() - started, 2)
            result["final_state"] = runs.read_status(run_dir)["state"]
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
