"""Unfamiliar images: the threshold flags 5% of validation by construction, images unlike the
training data (pure noise, other pictures) are flagged, and the fitted statistics are cached."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.familiarity import FILE_NAME, Familiarity


def clusters(rng: np.random.Generator, count: int, centres: np.ndarray) -> tuple:
    labels = rng.integers(0, len(centres), count)
    return centres[labels] + rng.normal(size=(count, centres.shape[1])), labels


def test_the_threshold_flags_five_percent_of_validation_and_far_points():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(3, 8))
    train, labels = clusters(rng, 3000, centres)
    validation, _ = clusters(rng, 1000, centres)
    familiarity = Familiarity.fit(train, labels, validation)

    assert familiarity.means.shape == (3, 8) and familiarity.precision.shape == (8, 8)
    assert familiarity.unfamiliar(validation).mean() == pytest.approx(0.05, abs=0.001)
    fresh, _ = clusters(rng, 2000, centres)  # new images from the same classes: about 5% too
    assert 0.03 <= familiarity.unfamiliar(fresh).mean() <= 0.07
    far = rng.normal(scale=6.0, size=(200, 8)) + 40.0
    assert familiarity.unfamiliar(far).all()
    # Nearest class, not all classes: a point on a class mean is familiar.
    assert not familiarity.unfamiliar(centres).any()
    assert familiarity.distances(familiarity.means) == pytest.approx(0.0, abs=1e-6)


def test_wide_features_are_projected_before_the_covariance(monkeypatch):
    from engine import familiarity as module

    # The same path as 1,280 MobileNet features at a size that keeps the test fast.
    monkeypatch.setattr(module, "MAX_DIMENSIONS", 64)
    monkeypatch.setattr(module, "PROJECTED_DIMENSIONS", 16)
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3.0, size=(2, 100))
    train, labels = clusters(rng, 400, centres)
    validation, _ = clusters(rng, 400, centres)
    familiarity = Familiarity.fit(train, labels, validation)
    assert familiarity.components.shape == (16, 100) and familiarity.precision.shape == (16, 16)
    assert familiarity.unfamiliar(validation).mean() == pytest.approx(0.05, abs=0.003)
    assert familiarity.unfamiliar(rng.normal(scale=3.0, size=(50, 100)) + 5.0).mean() >= 0.9


def test_first_convolution_ranges_flag_what_no_training_image_reached():
    from engine.extremes import Extremes

    statistics = np.array([[1.0, 5.0], [3.0, 7.0], [10.0, 0.0], [12.0, 2.0]])
    extremes = Extremes.fit(statistics, np.array([0, 0, 1, 1]), 3)
    assert extremes.low.tolist() == [[1.0, 5.0], [10.0, 0.0], [1.0, 0.0]]  # class 2: all images
    assert extremes.high.tolist() == [[3.0, 7.0], [12.0, 2.0], [12.0, 7.0]]
    inside, beyond = [2.0, 6.0], [4.0, 3.0]
    deviations = extremes.deviations(np.array([inside, beyond, beyond]), np.array([0, 0, 1]))
    # Class 0 (widths 2 and 2): 4 is half a width above 3, and 3 one width below 5. Class 1:
    # 4 is three widths below 10, and 3 half a width above 2.
    assert deviations == pytest.approx([0.0, 1.5, 3.5], abs=1e-5)


def test_with_ranges_the_distance_flags_one_percent_and_the_ranges_the_rest():
    from engine import familiarity as module

    rng = np.random.default_rng(4)
    centres = rng.normal(scale=6.0, size=(3, 8))
    train, labels = clusters(rng, 3000, centres)
    validation, validation_labels = clusters(rng, 1000, centres)
    # Statistics of the first convolution: uniform in [0, 1] for every training-like image.
    train_statistics, validation_statistics = rng.random((3000, 6)), rng.random((1000, 6))
    validation_statistics[:100] *= 1.2  # a tenth of validation reaches past the ranges
    familiarity = Familiarity.fit(
        train,
        labels,
        validation,
        train_extremes=(train_statistics, labels),
        validation_extremes=(validation_statistics, validation_labels),
        class_count=4,
    )
    assert familiarity.extremes.low.shape == (4, 6)
    by_distance = familiarity.distances(validation) > familiarity.threshold
    assert by_distance.mean() == pytest.approx(module.DISTANCE_SHARE, abs=0.001)
    flags = familiarity.unfamiliar(validation, validation_statistics, validation_labels)
    assert flags.mean() == pytest.approx(module.FLAGGED_SHARE, abs=0.002)
    # Familiar features with statistics far past every range are unfamiliar; without the
    # statistics only the distance speaks.
    outside = np.full((5, 6), 3.0)
    assert familiarity.unfamiliar(centres[labels[:5]], outside, labels[:5]).all()
    assert not familiarity.unfamiliar(centres[labels[:5]]).any()


@pytest.mark.parametrize("strides", [1, 2])
def test_first_convolution_extremes_leave_out_the_positions_its_padding_reaches(strides):
    """On a plain grey picture every interior position of a convolution answers the same, so its
    largest and smallest answers agree; the edge positions, which also see the zero padding,
    would answer the step to black and pull the two apart."""
    import keras

    from engine.extremes import extremes_tensor, padding_reach

    inputs = keras.Input((16, 16, 3))
    layer = keras.layers.Conv2D(4, 3, strides=strides, padding="same", name="conv")
    outputs = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(outputs))
    assert padding_reach(layer) == (1, 1)
    layer.set_weights([np.random.default_rng(0).normal(size=(3, 3, 3, 4)), np.zeros(4)])
    measure = keras.Model(inputs, extremes_tensor(model))
    grey = np.full((1, 16, 16, 3), 0.5, "float32")
    statistics = np.asarray(measure(grey))
    largest, smallest = statistics[0, :4], -statistics[0, 4:]
    assert np.allclose(largest, smallest, atol=1e-5)
    answers = np.asarray(keras.Model(inputs, layer.output)(grey))[0]
    assert not np.allclose(answers.max(axis=(0, 1)), answers.min(axis=(0, 1)))  # the edges differ


def test_features_that_are_not_finite_are_refused_in_one_sentence():
    from engine.errors import UserError

    features = np.ones((10, 4))
    features[3, 1] = np.nan
    with pytest.raises(UserError, match="not all finite numbers"):
        Familiarity.fit(features, np.zeros(10, int), np.ones((5, 4)))


def test_the_statistics_are_cached_and_a_damaged_cache_is_fitted_again(tmp_path, monkeypatch):
    from engine import familiarity as module

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.keras").write_bytes(b"a model")
    rng = np.random.default_rng(2)
    fits = []

    def fit_run(run_dir, measure):
        fits.append(run_dir)
        train, labels = clusters(rng, 300, np.eye(3, 4) * 5)
        validation, predicted = clusters(rng, 100, np.eye(3, 4) * 5)
        return Familiarity.fit(
            train,
            labels,
            validation,
            train_extremes=(train, labels),
            validation_extremes=(validation, predicted),
        )

    monkeypatch.setattr(module, "fit_run", fit_run)
    first = module.load_or_fit(run_dir, measure=None)
    second = module.load_or_fit(run_dir, measure=None)
    assert len(fits) == 1 and (run_dir / FILE_NAME).is_file()
    assert second.threshold == first.threshold and np.array_equal(second.means, first.means)
    assert second.threshold_split == "validation"
    assert np.array_equal(second.extremes.high, first.extremes.high)
    assert second.extremes_threshold == first.extremes_threshold

    (run_dir / FILE_NAME).write_bytes(b"\x00garbage")
    module.load_or_fit(run_dir, measure=None)
    assert len(fits) == 2
    (run_dir / "best.keras").write_bytes(b"a model trained further")  # another model: fit again
    module.load_or_fit(run_dir, measure=None)
    assert len(fits) == 3
    module.load_or_fit(run_dir, measure=None)
    assert len(fits) == 3
    # statistics fitted the way an older version measured them are fitted again
    monkeypatch.setattr(module, "STATISTICS_VERSION", module.STATISTICS_VERSION + 1)
    module.load_or_fit(run_dir, measure=None)
    assert len(fits) == 4
    assert [path.name for path in run_dir.iterdir() if path.name.startswith(".")] == []


@pytest.fixture(scope="module")
def square_run(tmp_path_factory) -> Path:
    """tests/test_explain.py's run on bright squares left or right, trained once per process."""
    from test_explain import trained_square_run

    return trained_square_run(tmp_path_factory)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_noise_and_other_pictures_are_flagged_and_validation_as_promised(square_run):
    from conftest import pattern_image
    from test_explain import SIZE

    from engine.features import run_dataset
    from engine.predict import Predictor

    (square_run / FILE_NAME).unlink(missing_ok=True)
    predictor = Predictor(square_run)
    dataset = run_dataset(square_run)
    validation = dataset.images()[dataset.indices("validation")]
    results = predictor.predict([(f"v{i}", png(image)) for i, image in enumerate(validation)])
    assert predictor.familiarity_problem == "" and (square_run / FILE_NAME).is_file()
    assert predictor.familiarity().threshold_split == "validation"
    share = np.mean([result["unfamiliar"] for result in results])
    # Measured: 2 of 30 (6.7 %); the threshold's quantile allows one image either way.
    assert abs(share - 0.05) <= 1 / len(validation) + 1e-9, share

    rng = np.random.default_rng(5)
    noise = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(20)]
    other = [pattern_image(class_id, seed, SIZE) for class_id in range(4) for seed in range(3)]
    other += [rng.integers(0, 110, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(6)]  # no square
    other += [np.full((SIZE, SIZE, 3), value, np.uint8) for value in (0, 128, 255)]
    flags = {}
    for kind, images in (("noise", noise), ("other", other)):
        results = predictor.predict([(f"{kind}{i}", png(image)) for i, image in enumerate(images)])
        flags[kind] = np.mean([result["unfamiliar"] for result in results])
    # Measured: noise 100 %; other pictures (stripes of colour, noise without a square, flat
    # grey, black and white) 100 %.
    assert flags["noise"] >= 0.9 and flags["other"] >= 0.8, flags


def test_a_model_that_gives_no_features_predicts_without_the_flag(tmp_path):
    from engine.config import RunConfig
    from engine.jsonio import write_json
    from engine.predict import Predictor
    from engine.runs import create_run

    class Brightness:  # not a Keras model: it has no features to measure
        def __call__(self, images, training=False):
            bright = np.asarray(images).mean(axis=(1, 2, 3)) / 255.0
            return np.stack([1.0 - bright, bright], axis=1)

    run_dir = create_run(RunConfig(), tmp_path / "runs")
    write_json(run_dir / "load_report.json", {"class_names": ["dark", "bright"], "image_size": 8})
    predictor = Predictor(run_dir, model=Brightness())
    [result] = predictor.predict([("white", png(np.full((8, 8, 3), 255, np.uint8)))])
    assert result["top_k"][0]["label"] == "bright" and result["unfamiliar"] is None
    assert "not a Keras model" in predictor.familiarity_problem
