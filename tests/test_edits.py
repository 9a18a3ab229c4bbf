"""The user's exclusions and relabels (engine/data/edits.py): saved beside the cache, recorded in a
run's config, applied to splits and counts, undone; the saved file read as untrusted input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import write_class_folder

from engine.config import DataConfig, RunConfig
from engine.data import edits, load_dataset
from engine.errors import UserError
from engine.jsonio import DamagedFile
from engine.runs import create_run, load_config

COPY = "cat/zz_copy_of_cat_000.png"


@pytest.fixture
def folder(tmp_path):
    root = write_class_folder(tmp_path / "pets", per_class=8)
    shutil.copyfile(root / "cat" / "cat_000.png", root / COPY)
    return root


def total(counts: dict) -> dict[str, int]:
    return {split: sum(per_class.values()) for split, per_class in counts.items()}


def next_run(config: DataConfig, runs_dir):
    """A run of the working config with the saved choices, and its data as the run loads it."""
    run_dir = create_run(RunConfig(data=edits.with_saved(config)), runs_dir)
    return json.loads((run_dir / "config.json").read_text())["data"], load_dataset(
        load_config(run_dir).data
    )


def test_excluding_a_duplicate_changes_the_next_run_and_undo_restores_it(folder, tmp_path):
    config = DataConfig(spec=str(folder), image_size=16)
    before = load_dataset(config)
    assert before.duplicate_groups() == [["cat/cat_000.png", COPY]]
    split = next(
        s for s, ids in before.split_indices.items() if before.find_items([COPY])[0] in ids
    )

    edits.add(config, exclude=[COPY])
    recorded, dataset = next_run(config, tmp_path / "runs")
    assert recorded["exclude"] == [COPY] and recorded["relabel"] == {}
    counts = total(dataset.counts())
    assert counts[split] == total(before.counts())[split] - 1
    assert sum(counts.values()) == 24
    report = dataset.report()
    assert report["edits"]["excluded"] == 1
    assert report["edits"]["summary"] == "Excluded 1 file by the user, relabelled 0."
    assert COPY not in {name for names in dataset.manifest()["splits"].values() for name in names}
    # No other file moved: the carving is the unedited data's, less the excluded file.
    for name, indices in dataset.split_indices.items():
        expected = [i for i in before.split_indices[name].tolist() if before.item_ids()[i] != COPY]
        assert indices.tolist() == expected

    assert edits.undo(config, exclude=[COPY]) == edits.Edits()
    recorded, dataset = next_run(config, tmp_path / "runs")
    assert recorded["exclude"] == [] and total(dataset.counts()) == total(before.counts())


def test_relabel_moves_a_file_to_another_class_and_clear_takes_it_back(folder):
    config = DataConfig(spec=str(folder), image_size=16)
    before = load_dataset(config).counts()
    edits.add(config, relabel={"dog/dog_003.png": "fox"})
    dataset = load_dataset(edits.with_saved(config))
    split = next(
        s
        for s, ids in dataset.split_indices.items()
        if dataset.find_items(["dog/dog_003.png"])[0] in ids
    )
    assert dataset.counts()[split]["dog"] == before[split]["dog"] - 1
    assert dataset.counts()[split]["fox"] == before[split]["fox"] + 1
    assert dataset.report()["edits"]["relabelled"] == [
        {"file": "dog/dog_003.png", "from": "dog", "to": "fox"}
    ]
    assert dataset.source.labels[dataset.find_items(["dog/dog_003.png"])[0]] == 1  # unchanged
    edits.clear(config)
    assert load_dataset(edits.with_saved(config)).counts() == before


def test_choices_live_beside_the_cache_and_never_in_the_folder(folder, isolated_dirs):
    listing = sorted((path.name, path.stat().st_mtime_ns) for path in folder.rglob("*"))
    path = edits.edits_path(DataConfig(spec=str(folder)))
    edits.add(DataConfig(spec=str(folder), image_size=16), exclude=[COPY])
    assert path.parent == isolated_dirs / "edits" and path.is_file()
    assert sorted((path.name, path.stat().st_mtime_ns) for path in folder.rglob("*")) == listing
    # Keyed by the source: another image size, split seed or spelling of the path finds them.
    for other in (DataConfig(spec=f"{folder}/", image_size=32, split_seed=3),):
        assert edits.load(other).exclude == (COPY,)
    assert edits.load(DataConfig(spec="digits")) == edits.Edits()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "is empty"),
        (b"\x00\xff garbage", "not valid JSON"),
        (b'["cat/cat_000.png"]', "not a JSON object"),
        (b'{"exclude": "cat/cat_000.png"}', "does not list file names"),
        (b'{"exclude": [], "relabel": {"a.png": 3}}', "does not list file names"),
    ],
)
def test_a_damaged_file_is_a_sentence_and_nothing_is_lost(folder, content, reason):
    config = DataConfig(spec=str(folder), exclude=["dog/dog_001.png"])
    path = edits.edits_path(config)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(DamagedFile) as raised:
        edits.with_saved(config)
    assert reason in str(raised.value) and str(raised.value).endswith("delete or replace it.")
    # The next change starts from what the user saw (the config's own) and keeps the bad file.
    assert edits.add(config, exclude=[COPY]).exclude == (COPY, "dog/dog_001.png")
    assert path.with_suffix(".damaged.json").read_bytes() == content
    assert edits.load(config).exclude == (COPY, "dog/dog_001.png")


@pytest.mark.parametrize(
    "data, words",
    [
        ({"exclude": "cat/cat_000.png"}, "data.exclude='cat/cat_000.png' is not allowed"),
        ({"exclude": ["ok.png", 3]}, "must be a list of file names"),
        ({"exclude": [""]}, "must be a list of file names"),
        ({"relabel": ["a.png", "cat"]}, "data.relabel=['a.png', 'cat'] is not allowed"),
        ({"relabel": {"a.png": None}}, "must map file names to class names"),
    ],
)
def test_config_refuses_edits_that_are_not_names(data, words):
    with pytest.raises(UserError, match="data.(exclude|relabel)") as raised:
        RunConfig.from_dict({"data": data}).validate()
    assert words in str(raised.value)


def test_config_records_sorted_choices_and_round_trips():
    config = RunConfig.from_dict(
        {"data": {"exclude": ["b.png", "a.png", "b.png"], "relabel": {"z.png": "x", "c.png": "y"}}}
    ).validate()
    assert config.data.exclude == ("a.png", "b.png")
    assert list(config.data.relabel) == ["c.png", "z.png"]
    written = json.loads(json.dumps(config.to_dict()))
    assert written["data"]["exclude"] == ["a.png", "b.png"]
    assert RunConfig.from_dict(written) == config
    assert RunConfig.from_dict({}).data.exclude == () and RunConfig().data.relabel == {}


def test_choices_the_data_no_longer_has_are_reported_not_applied(folder):
    config = DataConfig(
        spec=str(folder),
        image_size=16,
        exclude=["cat/gone.png"],
        relabel={"dog/dog_001.png": "wolf", "fox/gone.png": "cat"},
    )
    dataset = load_dataset(config)
    assert total(dataset.counts()) == total(load_dataset(DataConfig(spec=str(folder))).counts())
    report = dataset.report()["edits"]
    assert sorted(entry["file"] for entry in report["not_applied"]) == [
        "cat/gone.png",
        "dog/dog_001.png",
        "fox/gone.png",
    ]
    assert "3 choices name files or classes the data does not have" in report["summary"]


def test_a_run_with_exclusions_verifies_its_own_manifest(folder):
    config = DataConfig(spec=str(folder), image_size=16, exclude=[COPY, "dog/dog_002.png"])
    trained = load_dataset(config)
    manifest = json.loads(json.dumps(trained.manifest()))
    later = load_dataset(config)
    later.verify_manifest(manifest)  # the excluded files are neither new nor gone
    for split, indices in trained.split_indices.items():
        assert np.array_equal(later.split_indices[split], indices)
    with pytest.raises(UserError, match="1 image is new, such as dog/dog_002.png"):
        load_dataset(DataConfig(spec=str(folder), image_size=16, exclude=[COPY])).verify_manifest(
            manifest
        )


def test_fill_in_gives_the_command_line_the_saved_choices(folder):
    edits.add(DataConfig(spec=str(folder)), exclude=[COPY], relabel={"dog/dog_001.png": "fox"})
    filled = edits.fill_in({"spec": str(folder)})
    assert filled["exclude"] == [COPY] and filled["relabel"] == {"dog/dog_001.png": "fox"}
    own = {"spec": str(folder), "exclude": []}  # a run's config.json: its own choices win
    assert edits.fill_in(own) is own
