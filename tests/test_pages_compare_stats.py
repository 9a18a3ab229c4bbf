"""AppTest of the paired test on the Compare page and of the Evaluate page's export section
(ui/export_views.export_section), on small evaluated digits runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_compare_stats import evaluated_run

from engine.compare_stats import compare_runs
from ui.text import plain

PAGES = Path(__file__).resolve().parent.parent / "pages"


@pytest.fixture(scope="module")
def module_dirs(tmp_path_factory) -> dict[str, str]:
    return {
        "STUDIO_RUNS_DIR": str(tmp_path_factory.mktemp("stats-runs")),
        "STUDIO_CACHE_DIR": str(tmp_path_factory.mktemp("stats-cache")),
    }


@pytest.fixture(scope="module")
def made_runs(module_dirs) -> dict[str, Path]:
    """Two runs on the same test split (one with Markdown in its name) and one on validation."""
    runs_dir = Path(module_dirs["STUDIO_RUNS_DIR"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_CACHE_DIR", module_dirs["STUDIO_CACHE_DIR"])
        return {
            "a": evaluated_run(runs_dir, {"image_size": 8}, seed=1, name="alpha **bold**"),
            "b": evaluated_run(runs_dir, {"image_size": 8}, seed=2, name="beta"),
            "v": evaluated_run(
                runs_dir, {"image_size": 8}, seed=3, split="validation", name="gamma"
            ),
        }


@pytest.fixture
def stats_runs(made_runs, module_dirs, monkeypatch) -> dict[str, Path]:
    for name, value in module_dirs.items():
        monkeypatch.setenv(name, value)
    return made_runs


def compare_page(run_dirs: list[Path]) -> AppTest:
    at = AppTest.from_file(str(PAGES / "compare.py"), default_timeout=60).run()
    at.multiselect(key="compare_runs").set_value([run.name for run in run_dirs]).run()
    assert not at.exception, at.exception
    return at


def test_compare_page_gives_the_verdict_and_where_the_runs_disagree(stats_runs):
    from ui.compare_stats_views import verdict

    at = compare_page([stats_runs["a"], stats_runs["b"]])
    at.selectbox(key="compare_stats_a").set_value(stats_runs["a"].name).run()
    assert at.selectbox(key="compare_stats_b").value == stats_runs["b"].name
    result = compare_runs(stats_runs["a"], stats_runs["b"])
    expected = plain(verdict(result, "alpha **bold**", "beta"))
    shown = [box.value for box in (*at.success, *at.info)]
    assert expected in shown
    assert "alpha \\*\\*bold\\*\\*" in expected and "**bold**" not in expected
    assert ("is better" in expected) == (result["mcnemar_p_value"] < 0.05)
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["McNemar p-value"] == f"{result['mcnemar_p_value']:.3g}"
    assert metrics["beta (B)"] == f"{result['accuracy_b'] * 100:.2f} %"
    [counts] = [frame.value for frame in at.dataframe if "beta right" in frame.value.columns]
    assert counts.loc["alpha **bold** right", "beta wrong"] == result["a_only"]
    assert counts.loc["alpha **bold** wrong", "beta right"] == result["b_only"]
    [chart] = [c for c in at.get("plotly_chart") if "only beta right" in c.proto.spec]
    figure = json.loads(chart.proto.spec)
    assert figure["layout"]["xaxis"]["title"]["text"] == "true class"
    assert figure["layout"]["yaxis"]["title"]["text"] == "images only one run gets right"
    bars = {trace["name"]: trace["y"] for trace in figure["data"]}
    assert sum(bars["only beta right"]) == result["b_only"]
    assert sum(bars["only alpha **bold** right"]) == result["a_only"]


def test_compare_page_refuses_runs_on_other_images_in_one_sentence(stats_runs):
    at = compare_page([stats_runs["a"], stats_runs["v"]])
    at.selectbox(key="compare_stats_a").set_value(stats_runs["a"].name).run()
    # B's choices leave out A, so picking A never pairs a run with itself.
    assert at.selectbox(key="compare_stats_b").options == ["gamma"]
    [warning] = [w.value for w in at.warning if "cannot be paired" in w.value]
    assert warning == plain(
        "Runs alpha **bold** and gamma were evaluated on different splits (test and "
        "validation), so their predictions cannot be paired; evaluate them on the same split "
        "to compare them."
    )
    assert not [c for c in at.get("plotly_chart") if "only gamma right" in c.proto.spec]

    at.selectbox(key="compare_stats_a").set_value(stats_runs["v"].name).run()
    assert at.selectbox(key="compare_stats_b").options == ["alpha **bold**"]
    assert at.selectbox(key="compare_stats_b").value == stats_runs["a"].name
    [warning] = [w.value for w in at.warning if "cannot be paired" in w.value]
    assert "different splits (validation and test)" in warning


def export_script(run_dir: str) -> None:
    from ui.export_views import export_section

    export_section(run_dir)


def test_export_section_exports_and_offers_the_zip(stats_runs):
    run_dir = stats_runs["b"]
    at = AppTest.from_function(export_script, args=(str(run_dir),), default_timeout=120).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="eval_export_format").value == "savedmodel"
    assert any("Not exported as TensorFlow SavedModel yet" in c.value for c in at.caption)
    assert not at.get("download_button")

    at.selectbox(key="eval_export_format").set_value("tflite").run()
    at.button(key="eval_export").click().run()
    assert not at.exception, at.exception
    info = json.loads((run_dir / "exports" / "tflite" / "export.json").read_text())
    assert info["exported_accuracy"] == info["keras_accuracy"]
    assert [box.value for box in at.success if "matches Keras" in box.value]
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Exported accuracy"] == f"{info['exported_accuracy'] * 100:.2f} %"
    assert metrics["Keras accuracy"] == metrics["Exported accuracy"]
    [download] = at.get("download_button")
    assert download.proto.label == "Download the export (.zip)"
    assert not at.error
