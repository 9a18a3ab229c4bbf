"""`python -m engine audit`: the report file, the summary, progress lines and one-line errors."""

from __future__ import annotations

import json
import shutil

from conftest import engine_cli
from test_health import photo, save_jpeg

from engine.cli_parser import build_parser


def small_folder(root):
    for class_id, name in enumerate(("owl", "emu")):
        for number in range(10):
            save_jpeg(photo(class_id * 100 + number, size=64), root / name / f"{number}.jpg")
    shutil.copy(root / "owl" / "0.jpg", root / "emu" / "odd_one.jpg")
    return root


def test_audit_writes_the_report_and_prints_a_summary(tmp_path):
    root = small_folder(tmp_path / "birds")
    out = tmp_path / "reports" / "birds.json"
    result = engine_cli("audit", str(root), "--out", str(out))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    assert last["report"] == str(out)
    assert last["exact_duplicates"] == 1 and last["label_conflicts"] == 1
    assert last["images"] == 21 and last["leakage"] == 0
    assert "exact duplicates: 1 groups (2 files)" in lines
    assert "label conflicts (copies in two classes): 1 groups (2 files)" in lines
    report = json.loads(out.read_text())
    assert [{m["file"] for m in group} for group in report["label_conflicts"]] == [
        {"owl/0.jpg", "emu/odd_one.jpg"}
    ]
    assert sum(report["class_balance"]["train"].values()) > 0
    assert "audit index: image 21/21" in result.stderr
    assert "audit decode: image 21/21" in result.stderr
    assert "audit measure: image 21/21" in result.stderr
    assert "Traceback" not in result.stderr


def test_audit_without_out_prints_the_whole_report_last(tmp_path):
    root = small_folder(tmp_path / "birds")
    result = engine_cli("audit", str(root))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) >= {"exact_duplicates", "near_duplicates", "leakage", "image_issues"}
    assert report["images"] == 21


def test_a_bad_spec_or_run_is_one_sentence(tmp_path):
    missing = engine_cli("audit", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: The dataset ") and "check the path" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    root = small_folder(tmp_path / "birds")
    not_a_run = engine_cli("audit", str(root), "--run", str(tmp_path))
    assert not_a_run.returncode == 2 and "Traceback" not in not_a_run.stderr
    assert not_a_run.stderr.strip().splitlines()[-1:] == [
        f"error: {tmp_path} is not a run directory (it has no config.json); pick a folder "
        "under runs/."
    ]


def test_the_audit_command_starts_tensorflow_itself_and_only_for_a_run():
    parser = build_parser()
    plain = parser.parse_args(["audit", "photos"])
    assert (plain.tensorflow, plain.label_issues, plain.run, plain.out) == (
        False,
        False,
        None,
        None,
    )
    with_run = parser.parse_args(["audit", "photos", "--run", "runs/a", "--out", "h.json"])
    assert with_run.tensorflow is False and str(with_run.run) == "runs/a"
    assert str(with_run.out) == "h.json" and with_run.handler.__name__ == "run_audit"
