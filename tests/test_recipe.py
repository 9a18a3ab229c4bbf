"""The recipe resolved from the data, and the optimizer, schedule and EMA it asks for."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import write_class_folder
from PIL import Image

from engine import recipe
from engine.config import RunConfig, TrainConfig
from engine.data import load_dataset
from engine.errors import UserError
from engine.optim import build_loss, build_optimizer, ema_momentum, learning_rate_schedule


def schedule_values(schedule, steps: list[int]) -> list[float]:
    return [float(schedule(step)) for step in steps]


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    config = TrainConfig(schedule="warmup_cosine", warmup_epochs=2)
    schedule = learning_rate_schedule(config, 1e-3, total_steps=100, steps_per_epoch=5)
    values = schedule_values(schedule, [0, 5, 10, 55, 100])
    assert values[0] == pytest.approx(0.0)
    assert values[1] == pytest.approx(0.5e-3)
    assert values[2] == pytest.approx(1e-3)
    assert values[3] == pytest.approx(0.5e-3, rel=1e-3)  # half-way through the cosine
    assert values[4] == pytest.approx(0.0, abs=1e-9)


def test_warmup_is_at_most_a_fifth_of_a_short_run():
    config = TrainConfig(schedule="warmup_cosine", warmup_epochs=10)
    schedule = learning_rate_schedule(config, 1e-3, total_steps=20, steps_per_epoch=10)
    assert float(schedule(4)) == pytest.approx(1e-3)  # warm-up over 4 steps, not 100


def test_cosine_and_constant_schedules():
    cosine = learning_rate_schedule(TrainConfig(schedule="cosine"), 1e-3, 10, 5)
    assert schedule_values(cosine, [0, 5, 10]) == pytest.approx([1e-3, 0.5e-3, 0.0], abs=1e-9)
    assert learning_rate_schedule(TrainConfig(schedule="constant"), 3e-4, 10, 5) == 3e-4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schedule": "linear"}, "schedule"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"weight_decay": -1.0}, "weight decay"),
        ({"label_smoothing": 1.0}, "label smoothing"),
    ],
)
def test_bad_training_settings_are_refused_with_a_sentence(changes, message):
    config = TrainConfig(**changes)
    with pytest.raises(UserError, match=message):
        learning_rate_schedule(config, 1e-3, 10, 5)
        build_optimizer(config, 1e-3)
        build_loss(config)


def test_optimizer_carries_weight_decay_and_ema():
    optimizer = build_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.05, ema=True), 1e-3)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(0.05)
    assert optimizer.use_ema
    plain = build_optimizer(TrainConfig(optimizer="adam", weight_decay=0.0, ema=False), 1e-3)
    assert type(plain) is keras.optimizers.Adam and not plain.use_ema


def test_ema_momentum_follows_the_length_of_the_run():
    assert ema_momentum(TrainConfig(ema_momentum=0.95), 10_000) == 0.95
    assert ema_momentum(TrainConfig(), 40) == pytest.approx(0.9)  # short runs: short memory
    assert ema_momentum(TrainConfig(), 4_000) == pytest.approx(0.995)
    assert ema_momentum(TrainConfig(), 10**7) == pytest.approx(0.999)


def test_label_smoothing_reaches_the_loss():
    loss = build_loss(TrainConfig(label_smoothing=0.1))
    target = np.array([[1.0, 0.0]])
    assert float(loss(target, np.array([[1.0, 0.0]]) * 0.999 + 0.0005)) > 0.1


def colour_photos(root, size: int, classes=("cat", "dog")):
    return load_dataset(str(write_class_folder(root, classes, per_class=6, size=size)))


def test_photos_get_the_residual_cnn_with_photo_augmentation_and_a_time_budget(tmp_path):
    chosen = recipe.recommend(colour_photos(tmp_path / "photos", 96))
    assert chosen.kind == "photos"
    assert chosen.config["model"]["name"] == "residual_cnn"
    assert chosen.config["data"]["image_size"] == 96
    assert chosen.config["augment"]["horizontal_flip"] is True
    # 12 photos are a small set: the stronger random resized crop instead of zoom and shift.
    assert chosen.config["augment"]["resized_crop"] > 0 and "zoom" not in chosen.config["augment"]
    train = chosen.config["train"]
    assert train["epochs"] == 0 and train["time_budget_minutes"] > 0
    assert (train["optimizer"], train["schedule"], train["ema"]) == ("adamw", "warmup_cosine", True)
    assert train["label_smoothing"] > 0


def test_photo_sets_above_the_small_set_size_get_zoom_and_shift(tmp_path, monkeypatch):
    dataset = colour_photos(tmp_path / "photos", 96)
    monkeypatch.setattr(recipe, "SMALL_PHOTO_SET", len(dataset.indices("train")))
    augment = recipe.recommend(dataset).config["augment"]
    assert augment["zoom"] > 0 and augment["translation"] > 0 and "resized_crop" not in augment
    monkeypatch.setattr(recipe, "SMALL_PHOTO_SET", len(dataset.indices("train")) + 1)
    assert recipe.recommend(dataset).config["augment"]["resized_crop"] > 0


def test_large_photos_train_from_scratch_at_160_pixels_unless_the_set_is_small(
    tmp_path, monkeypatch
):
    big, medium = colour_photos(tmp_path / "big", 200), colour_photos(tmp_path / "medium", 150)
    # 12 training photos are a small set: 128 px, where small sets were measured
    assert recipe.recommend(big).config["data"]["image_size"] == 128
    monkeypatch.setattr(recipe, "SMALL_PHOTO_SET", 1)
    chosen = recipe.recommend(big)
    assert chosen.config["data"]["image_size"] == 160
    assert "so 160x160 inputs" in chosen.notes[0]
    # photos under 160 px are not enlarged; transfer learning keeps its 128 px
    assert recipe.recommend(medium).config["data"]["image_size"] == 128
    transfer = recipe.recommend(big, weights_available=lambda name, size: True)
    assert transfer.kind == "transfer" and transfer.config["data"]["image_size"] == 128
    assert "so 128x128 inputs" in transfer.notes[0]


def test_digits_get_no_flips():
    chosen = recipe.recommend(load_dataset("digits"))
    assert chosen.kind == "grey images"
    assert not chosen.config["augment"].get("horizontal_flip")
    assert not chosen.config["augment"].get("vertical_flip")
    assert chosen.config["data"]["image_size"] == 32


def test_small_colour_images_get_flips_but_not_the_photo_size(tmp_path):
    chosen = recipe.recommend(colour_photos(tmp_path / "tiny", 24))
    assert chosen.kind == "small colour images"
    assert chosen.config["augment"]["horizontal_flip"] is True
    assert chosen.config["data"]["image_size"] == 32
    # No label smoothing: it would leave one cue where the classes show two (recipe.py's note).
    assert chosen.config["train"]["label_smoothing"] == 0.0
    assert any("no label smoothing" in note for note in chosen.notes), chosen.notes


def test_transfer_learning_when_weights_are_available_and_a_notice_when_not(tmp_path):
    dataset = colour_photos(tmp_path / "photos", 96)
    online = recipe.recommend(dataset, weights_available=lambda name, size: True)
    assert online.kind == "transfer"
    assert online.config["model"] == {
        "name": "mobilenet_v2",
        "weights": "imagenet",
        "mode": "two_phase",
    }
    offline = recipe.recommend(dataset, weights_available=lambda name, size: False)
    assert offline.kind == "photos"
    assert any("offline" in note for note in offline.notes)


def test_what_the_user_sets_wins_over_the_recipe(tmp_path):
    dataset = colour_photos(tmp_path / "photos", 96)
    config, chosen = recipe.resolve(
        dataset,
        {"model": {"name": "tutorial_cnn"}, "train": {"epochs": 7}, "augment": {"resized_crop": 0}},
    )
    assert isinstance(config, RunConfig)
    assert config.model.name == "tutorial_cnn"
    assert config.train.epochs == 7
    assert config.augment.resized_crop == 0
    assert config.augment.horizontal_flip is True  # the rest of the recipe stays
    assert config.train.optimizer == chosen.config["train"]["optimizer"]


def test_the_budget_note_names_the_budget_the_run_will_use(tmp_path):
    dataset = colour_photos(tmp_path / "photos", 96)
    train_count = len(dataset.indices("train"))

    def budget_notes(user):
        config, chosen = recipe.resolve(dataset, user)
        assert chosen.train_count == train_count
        notes = recipe.notes_for(chosen.notes, chosen.train_count, config)
        return [note for note in notes if "budget" in note]

    assert budget_notes({}) == [
        f"epochs are fitted to a 15-minute training budget on this machine ({train_count} "
        "training images)"
    ]
    assert "a 5-minute training budget" in budget_notes({"train": {"time_budget_minutes": 5}})[0]
    assert budget_notes({"train": {"epochs": 7}}) == []  # no budget when the user sets epochs


def mirrored_and_plain_folders(root):
    """Two sets of noise pictures: classes told apart by where a bright bar sits (left or right:
    mirror images of each other), and classes told apart by colour (a flip keeps the class)."""
    rng = np.random.default_rng(5)
    for kind, classes in (("mirrored", ("left", "right")), ("plain", ("red", "blue"))):
        for class_id, name in enumerate(classes):
            (root / kind / name).mkdir(parents=True)
            for number in range(30):
                image = rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)
                if kind == "mirrored":
                    column = int(rng.integers(2, 12)) + (24 if class_id else 0)
                    image[:, column : column + 4] = 255
                else:
                    image[..., 0 if class_id == 0 else 2] += 100
                Image.fromarray(image).save(root / kind / name / f"{number:02d}.png")
    return root / "mirrored", root / "plain"


def test_flips_are_left_out_when_they_turn_one_class_into_another(tmp_path):
    from engine.data.mirror import check_mirror

    mirrored, plain = map(load_dataset, map(str, mirrored_and_plain_folders(tmp_path)))
    check = check_mirror(mirrored.source, mirrored.indices("train"), mirrored.config.max_pixels)
    assert check.accuracy >= 0.9 and check.flipped_accuracy <= 0.1 and check.flips_swap_classes
    chosen = recipe.recommend(mirrored)
    assert (
        chosen.kind == "small colour images" and "horizontal_flip" not in chosen.config["augment"]
    )
    assert chosen.config["augment"]["translation"] > 0
    assert any("mirror images of each other" in note for note in chosen.notes), chosen.notes

    check = check_mirror(plain.source, plain.indices("train"), plain.config.max_pixels)
    assert check.accuracy >= 0.9 and check.flipped_accuracy >= 0.9 and not check.flips_swap_classes
    chosen = recipe.recommend(plain)
    assert chosen.config["augment"]["horizontal_flip"] is True
    assert not any("mirror" in note for note in chosen.notes)
