"""Paired comparison of two runs (engine.compare_stats): McNemar's exact test recomputed here from
the runs' predictions.npz and their data, the bootstrap against a plain resampling loop, and runs
evaluated on other images refused, through the CLI too."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import engine_cli

from engine.compare_stats import bootstrap_interval, compare_runs, mcnemar_p_value
from engine.errors import UserError

KEYS = [
    "accuracy_a",
    "accuracy_b",
    "both_right",
    "a_only",
    "b_only",
    "both_wrong",
    "mcnemar_p_value",
    "difference_interval",
]


def evaluated_run(runs_dir: Path, data: dict, seed: int, split: str = "", name: str = "") -> Path:
    """A completed run whose model is a random linear classifier, evaluated as training would."""
    import keras

    from engine.config import RunConfig
    from engine.data import load_dataset
    from engine.evaluation import evaluate_run
    from engine.jsonio import write_json
    from engine.runs import create_run, update_status

    config = RunConfig().replace(data=data)
    run_dir = create_run(config, runs_dir)
    dataset = load_dataset(config.data)
    write_json(run_dir / "load_report.json", dataset.report())
    write_json(run_dir / "data_manifest.json", dataset.manifest())
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((dataset.image_size, dataset.image_size, 3))
    features = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(dataset.num_classes, activation="softmax")(features)
    keras.Model(inputs, outputs).save(run_dir / "best.keras")
    update_status(run_dir, state="completed", **({"name": name} if name else {}))
    evaluate_run(run_dir, split=split)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Digits runs at 8 px: two on the same split, one on another split seed, one on validation."""
    runs_dir = tmp_path_factory.mktemp("compare-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("compare-cache")))
        data = {"image_size": 8}
        return {
            "a": evaluated_run(runs_dir, data, seed=1, name="small *A*"),
            "b": evaluated_run(runs_dir, data, seed=2),
            "other_seed": evaluated_run(runs_dir, {**data, "split_seed": 7}, seed=3),
            "validation": evaluated_run(runs_dir, data, seed=4, split="validation"),
        }


def right_by_item_id(run_dir: Path) -> dict[str, tuple[int, bool]]:
    """item id -> (label, predicted right), from predictions.npz and the data itself."""
    from engine.data import load_dataset
    from engine.runs import load_config

    item_ids = load_dataset(load_config(run_dir).data).item_ids()
    with np.load(run_dir / "predictions.npz") as stored:
        indices, labels, probabilities = (
            stored["indices"],
            stored["labels"],
            stored["probabilities"],
        )
    right = probabilities.argmax(axis=1) == labels
    return {
        item_ids[i]: (int(label), bool(r))
        for i, label, r in zip(indices.tolist(), labels, right, strict=True)
    }


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from its definition: twice the smaller binomial tail."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_the_p_value_is_mcnemars_exact_test_on_the_paired_predictions(runs):
    result = compare_runs(runs["a"], runs["b"])
    a, b = right_by_item_id(runs["a"]), right_by_item_id(runs["b"])
    assert a.keys() == b.keys()
    assert [a[item][0] for item in a] == [b[item][0] for item in a]  # the same labels
    a_only = sum(a[item][1] and not b[item][1] for item in a)
    b_only = sum(b[item][1] and not a[item][1] for item in a)
    assert (result["a_only"], result["b_only"]) == (a_only, b_only)
    assert a_only + b_only > 0  # the test means something only with discordant pairs
    assert result["mcnemar_p_value"] == pytest.approx(exact_mcnemar(a_only, b_only), rel=1e-9)
    assert result["both_right"] == sum(a[item][1] and b[item][1] for item in a)
    assert result["both_wrong"] == sum(not a[item][1] and not b[item][1] for item in a)
    assert result["count"] == len(a) == sum(result[key] for key in KEYS[2:6])
    assert result["accuracy_a"] == pytest.approx(np.mean([r for _, r in a.values()]))
    assert result["accuracy_b"] == pytest.approx(np.mean([r for _, r in b.values()]))
    evaluation = json.loads((runs["a"] / "evaluation.json").read_text())
    assert result["accuracy_a"] == pytest.approx(evaluation["accuracy"])
    assert result["split"] == "test" and result["name_a"] == "small *A*"
    per_class = result["per_class"]
    assert sum(row["a_only"] for row in per_class) == a_only
    assert sum(row["b_only"] for row in per_class) == b_only
    assert sum(row["count"] for row in per_class) == result["count"]
    low, high = result["difference_interval"]
    assert low <= result["difference"] <= high


def test_a_run_against_itself_has_no_discordant_pairs():
    assert mcnemar_p_value(0, 0) == 1.0
    assert mcnemar_p_value(3, 17) == pytest.approx(exact_mcnemar(3, 17), rel=1e-12)
    assert mcnemar_p_value(10, 10) == pytest.approx(1.0)
    assert bootstrap_interval(0, 0, 50) == (0.0, 0.0)


def test_the_bootstrap_matches_plain_paired_resampling_and_is_seeded():
    a_only, b_only, count = 12, 31, 400
    interval = bootstrap_interval(a_only, b_only, count)
    assert interval == bootstrap_interval(a_only, b_only, count)  # seeded: the same each time
    differences = np.array([-1] * a_only + [1] * b_only + [0] * (count - a_only - b_only))
    rng = np.random.default_rng(123)
    draws = rng.integers(0, count, size=(4000, count))
    naive = np.percentile(differences[draws].mean(axis=1), [2.5, 97.5])
    assert interval[0] == pytest.approx(naive[0], abs=0.006)
    assert interval[1] == pytest.approx(naive[1], abs=0.006)
    assert interval[0] < (b_only - a_only) / count < interval[1]


def test_runs_on_another_split_seed_or_split_are_refused(runs):
    with pytest.raises(UserError, match="different test images") as other_seed:
        compare_runs(runs["a"], runs["other_seed"])
    assert "same split" in str(other_seed.value) and "\n" not in str(other_seed.value)
    with pytest.raises(UserError, match=r"different splits \(test and validation\)"):
        compare_runs(runs["a"], runs["validation"])


def test_predictions_that_do_not_match_the_manifest_are_caught(runs, tmp_path):
    import shutil

    copy = shutil.copytree(runs["a"], tmp_path / "reordered")
    manifest = json.loads((copy / "data_manifest.json").read_text())
    manifest["splits"]["test"].reverse()  # ids no longer in item-number order
    (copy / "data_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="predictions do not match its data manifest"):
        compare_runs(runs["a"], copy)


def test_a_run_without_evaluation_and_a_folder_that_is_no_run_are_named(runs, tmp_path):
    import shutil

    copy = shutil.copytree(runs["b"], tmp_path / "unevaluated")
    (copy / "predictions.npz").unlink()
    (copy / "evaluation.json").unlink()
    name = json.loads((copy / "status.json").read_text())["name"]
    with pytest.raises(UserError, match=f"Run {name} has no evaluation yet"):
        compare_runs(runs["a"], copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty is not a run directory"):
        compare_runs(tmp_path / "empty", runs["a"])


def test_the_cli_prints_json_last_and_refuses_with_exit_code_2(runs):
    result = engine_cli("compare", str(runs["a"]), str(runs["b"]), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    expected = compare_runs(runs["a"], runs["b"])
    assert {key: printed[key] for key in KEYS} == {key: expected[key] for key in KEYS}

    refused = engine_cli("compare", str(runs["a"]), str(runs["other_seed"]), timeout=120)
    assert refused.returncode == 2
    assert refused.stdout == ""
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: Runs small *A* and ") and "different test images" in line
