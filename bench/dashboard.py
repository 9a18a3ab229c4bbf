"""Dashboard: how long the server takes to render the Data page, and to index a photo folder.

The Data page runs under streamlit's AppTest (the server side of a page view, no browser) with the
dataset set in session state, for flowers128 (4,317 files, no split folders) and cats_vs_dogs
(2,500 files in train/ and test/). Each repeat starts with empty streamlit caches and a fresh
engine cache folder, then times: the first render (indexing and sample decoding included), a
second render of the same session (a rerun, as after any widget change), and a render in a new
session (a new browser tab on a warm server). Indexing alone is load_dataset on a fresh cache folder.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

from bench.common import (
    PROJECT_ROOT,
    image_files,
    median,
    require_folder,
    result_row,
    scratch_space,
    seconds_of,
    subset_folder,
    warm_file_cache,
)

PAGE = PROJECT_ROOT / "pages" / "data.py"
RENDER_GOAL_SECONDS = 1.0
INDEX_GOAL_SECONDS = 5.0
QUICK_PER_CLASS = 40
DATASETS = ("flowers128", "cats_vs_dogs")


def data_page(config_dict: dict):
    """A Data page AppTest whose session has the dataset loaded."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(PAGE), default_timeout=300)
    app.session_state["data_config"] = config_dict
    return app


def render(app) -> float:
    """Seconds of one at.run(); fails if the page raised or showed an error."""
    seconds = seconds_of(app.run)
    if app.exception or app.error:
        problem = app.exception[0].value if app.exception else app.error[0].value
        raise RuntimeError(f"the Data page failed: {problem}")
    return seconds


def page_timings(folder: Path) -> dict[str, float]:
    """First render, rerun and new-session render of the Data page on empty caches."""
    import streamlit as st

    from engine.config import DataConfig

    # Clearing caches outside a script run is fine; streamlit would warn about it on every repeat.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(
        logging.ERROR
    )
    st.cache_data.clear()
    st.cache_resource.clear()
    config_dict = dataclasses.asdict(DataConfig(spec=str(folder)))
    with scratch_space("bench-dashboard-"):  # a fresh engine cache: nothing decoded yet
        app = data_page(config_dict)
        first = render(app)
        rerun = render(app)
        new_session = render(data_page(config_dict))
    return {"first": first, "rerun": rerun, "new session": new_session}


def index_seconds(folder: Path) -> float:
    """Seconds load_dataset takes to index and split the folder into a fresh cache folder."""
    from engine.config import DataConfig
    from engine.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="bench-index-") as cache_root:
        return seconds_of(lambda: load_dataset(DataConfig(spec=str(folder)), Path(cache_root)))


def run(data_root: Path, quick: bool, repeats: int) -> list[dict]:
    from engine.config import DataConfig

    rows = []
    with scratch_space("bench-dashboard-data-") as scratch:
        folders = {
            name: subset_folder(
                require_folder(data_root, name), scratch / name, QUICK_PER_CLASS if quick else None
            )
            for name in DATASETS
        }
        for folder in folders.values():
            warm_file_cache(image_files(folder))
        # One untimed render on digits, so importing streamlit, plotly and the pages is not timed.
        render(data_page(dataclasses.asdict(DataConfig())))
        for name, folder in folders.items():
            count = len(image_files(folder))
            timings = [page_timings(folder) for _ in range(repeats)]
            typical = {key: median([t[key] for t in timings]) for key in timings[0]}
            common = (
                f"{count:,} images, median over {repeats} repeat(s); "
                f"first render {typical['first']:.2f} s"
            )
            for kind in ("rerun", "new session"):
                rows.append(
                    result_row(
                        f"dashboard: Data page {kind}, {name}",
                        "seconds",
                        typical[kind],
                        goal=f"≤ {RENDER_GOAL_SECONDS:g} s",
                        met=typical[kind] <= RENDER_GOAL_SECONDS,
                        notes=f"{common} (indexing and 24 sample images decoded); "
                        + (
                            "same session, caches warm"
                            if kind == "rerun"
                            else "a new AppTest session on warm caches"
                        ),
                    )
                )
        cats = folders["cats_vs_dogs"]
        count = len(image_files(cats))
        index = median([index_seconds(cats) for _ in range(repeats)])
    rows.append(
        result_row(
            "dashboard: first-time indexing, cats_vs_dogs",
            "seconds",
            index,
            goal=f"≤ {INDEX_GOAL_SECONDS:g} s",
            met=index <= INDEX_GOAL_SECONDS,
            notes=f"load_dataset on a fresh cache folder, {count:,} files (headers read, "
            f"nothing decoded), median over {repeats} repeat(s); files in the page cache",
        )
    )
    return rows
