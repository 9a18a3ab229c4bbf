"""The learning-rate finder: the suggestion rule on known curves, and short real sweeps on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.config import RunConfig
from engine.errors import UserError
from engine.lr_find import lr_find, smooth_losses, suggest_learning_rate

STEPS = 40
MIN_LR, MAX_LR = 1e-5, 1.0
CONFIG = RunConfig().replace(
    data={"spec": "digits", "image_size": 16},
    model={"name": "tutorial_cnn"},
    augment={"horizontal_flip": True, "rotation": 0.05},
)


# ----- the suggestion rule alone ---------------------------------------------------------------
def u_curve(count: int = 100, lowest_at: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    rates = np.geomspace(1e-6, 1.0, count)
    return rates, (np.log10(rates) - np.log10(lowest_at)) ** 2 + 1.0


def test_valley_is_the_middle_of_the_descent_of_a_u_curve():
    rates, losses = u_curve()
    # The first tenth is skipped, so the descent runs from rates[10] down to the minimum at 1e-3;
    # its middle in log space is their geometric mean.
    expected = math.sqrt(rates[10] * 1e-3)
    suggestion = suggest_learning_rate(rates, losses)
    step = math.log10(rates[1] / rates[0])
    assert abs(math.log10(suggestion) - math.log10(expected)) <= step
    assert rates[10] < suggestion < 1e-3


def test_valley_follows_the_minimum_and_survives_noise():
    rates, losses = u_curve(lowest_at=1e-2)
    noisy = losses + np.random.default_rng(0).normal(0, 0.05, len(losses))
    smoothed = smooth_losses(noisy)
    suggestion = suggest_learning_rate(rates, smoothed)
    assert 1e-5 < suggestion < 1e-2
    assert suggestion > suggest_learning_rate(*u_curve(lowest_at=1e-3))


def test_suggestion_never_lies_past_the_lowest_loss_nor_at_the_last_point():
    rates = np.geomspace(1e-6, 1.0, 50)
    rising = np.linspace(1.0, 3.0, 50)
    assert suggest_learning_rate(rates, rising) == rates[5]  # the first point after the skip
    # A bump after a short dip: the longest descent ends after the minimum, the cap holds it back.
    losses = np.concatenate([np.linspace(2.0, 1.0, 15), np.linspace(3.0, 1.5, 35)])
    suggestion = suggest_learning_rate(rates, losses)
    assert suggestion <= rates[14]


def test_suggestion_stops_at_the_first_non_finite_loss_and_handles_short_curves():
    rates, losses = u_curve()
    losses[40:] = np.nan
    assert suggest_learning_rate(rates, losses) < rates[35]
    assert suggest_learning_rate([1e-4, 1e-3], [1.0, 0.5]) == 1e-4
    with pytest.raises(ValueError, match="differ in length"):
        suggest_learning_rate([1e-4, 1e-3], [1.0])


def test_smoothing_is_bias_corrected_and_damps_noise():
    assert smooth_losses([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    spiky = [1.0] * 20 + [11.0] + [1.0] * 5
    smoothed = smooth_losses(spiky)
    assert 1.0 < max(smoothed) < 2.0


def test_bad_ranges_are_refused_before_any_work():
    with pytest.raises(UserError, match="min_lr < max_lr"):
        lr_find(CONFIG, min_lr=1e-2, max_lr=1e-3)
    with pytest.raises(UserError, match="at least 10 steps"):
        lr_find(CONFIG, steps=3)


# ----- real sweeps -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    # The autouse cache fixture is per test; one module-wide cache keeps the digits decoded once.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("lr_cache")))
        calls: list[tuple[int, int]] = []
        first = lr_find(
            CONFIG,
            min_lr=MIN_LR,
            max_lr=MAX_LR,
            steps=STEPS,
            progress=lambda done, total: calls.append((done, total)),
        )
        second = lr_find(CONFIG, min_lr=MIN_LR, max_lr=MAX_LR, steps=STEPS)
        # Plain SGD has no per-weight step normalisation: a rate of 1,000 makes the loss blow up
        # (with Adam a huge rate can instead kill every unit and leave the loss flat at ln 10).
        sgd = CONFIG.replace(train={"optimizer": "sgd", "ema": False})
        exploded = lr_find(sgd, min_lr=MIN_LR, max_lr=1000.0, steps=STEPS)
    return {"first": first, "second": second, "exploded": exploded, "calls": calls}


def test_rates_grow_geometrically_from_min_lr(sweep):
    result = sweep["first"]
    rates = np.array(result["learning_rates"])
    assert result["steps"] == len(rates) == STEPS and not result["stopped_early"]
    assert rates[0] == pytest.approx(MIN_LR, rel=1e-5)
    assert rates[-1] == pytest.approx(MAX_LR, rel=1e-5)
    ratios = rates[1:] / rates[:-1]
    assert ratios == pytest.approx(np.full(STEPS - 1, (MAX_LR / MIN_LR) ** (1 / (STEPS - 1))))


def test_losses_are_finite_and_one_per_rate(sweep):
    result = sweep["first"]
    assert result["model"] == "tutorial_cnn"
    assert len(result["losses"]) == len(result["smoothed_losses"]) == STEPS
    assert all(math.isfinite(loss) and loss > 0 for loss in result["losses"])
    assert result["smoothed_losses"] == pytest.approx(smooth_losses(result["losses"]))
    # Ten digit classes: the untrained model starts near ln(10).
    assert result["losses"][0] == pytest.approx(math.log(10), abs=0.3)


def test_progress_is_reported_every_step(sweep):
    assert sweep["calls"] == [(step, STEPS) for step in range(1, STEPS + 1)] + [(STEPS, STEPS)]


def test_suggestion_lies_inside_the_range_before_the_lowest_loss(sweep):
    result = sweep["first"]
    suggestion = result["suggested_learning_rate"]
    assert MIN_LR < suggestion < MAX_LR
    lowest = int(np.argmin(result["smoothed_losses"]))
    assert suggestion <= result["learning_rates"][lowest]


def test_same_config_gives_the_same_curve(sweep):
    assert sweep["second"]["losses"] == sweep["first"]["losses"]
    assert sweep["second"]["suggested_learning_rate"] == sweep["first"]["suggested_learning_rate"]


def test_a_huge_max_lr_stops_early_when_the_loss_blows_up(sweep):
    result = sweep["exploded"]
    assert result["stopped_early"] and result["steps"] < STEPS
    smoothed = result["smoothed_losses"]
    assert len(result["learning_rates"]) == len(result["losses"]) == len(smoothed)
    diverged = result["diverged_learning_rate"]
    if diverged == result["learning_rates"][-1]:  # stopped by the 4x rule at its first breach
        assert smoothed[-1] > 4 * min(smoothed)
    else:  # stopped at a non-finite loss, which is left out of the lists
        assert diverged > result["learning_rates"][-1]
    assert all(value <= 4 * min(smoothed[: i + 1]) for i, value in enumerate(smoothed[:-1]))
    suggestion = result["suggested_learning_rate"]
    assert MIN_LR < suggestion < result["diverged_learning_rate"]
