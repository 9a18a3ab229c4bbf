"""Subcommands added to `python -m engine` (see engine.cli_parser.COMMAND_MODULES): audit."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import UserError

ISSUE_NAMES = {
    "unreadable": "unreadable",
    "dark": "very dark",
    "bright": "very bright",
    "blurry": "blurry",
    "low_information": "low information",
    "grayscale": "grayscale among colour",
    "odd_size": "odd size",
    "odd_aspect_ratio": "odd aspect ratio",
}
PROGRESS_SECONDS = 2.0  # at most one progress line per stage this often (and its last one)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the engine's command line."""
    audit = commands.add_parser(
        "audit",
        help="a data health report: exact and near duplicates, leaks between splits, label "
        "conflicts, odd images, class balance and (--label-issues) probably wrong labels; "
        "a summary, then the report's path (--out) or the report as JSON last",
    )
    audit.add_argument("spec", help="digits, tfds:NAME, a folder, a .zip or a .npz")
    audit.add_argument(
        "--run",
        type=Path,
        metavar="RUN_DIR",
        help="find label issues on this run's penultimate-layer features (implies --label-issues)",
    )
    audit.add_argument(
        "--label-issues",
        action="store_true",
        help="find photos whose label is probably wrong (cross-validated, cleanlab)",
    )
    audit.add_argument("--out", type=Path, metavar="FILE", help="write the JSON report here")
    # TensorFlow starts in run_audit, and only for --run, once the data and the run are known good.
    audit.set_defaults(handler=run_audit, tensorflow=False)


def run_audit(args: argparse.Namespace) -> int:
    from engine.data import load_dataset
    from engine.data.health import audit
    from engine.data.health_features import check_run
    from engine.jsonio import dumps, write_json

    if not args.spec.strip():
        raise UserError("No dataset given; use digits, tfds:NAME, a folder, a .zip or a .npz path.")
    progress = _progress_lines()
    dataset = load_dataset(args.spec, progress=lambda done, total: progress("index", done, total))
    if args.run is not None:
        from engine.devices import quiet_tensorflow_start

        check_run(args.run)  # a wrong run is a sentence before TensorFlow takes its seconds
        quiet_tensorflow_start()
    label_issues = args.label_issues or args.run is not None
    report = audit(dataset, run_dir=args.run, label_issues=label_issues, progress=progress)
    for line in summary_lines(report):
        print(line)
    if args.out is None:
        print(dumps(report), flush=True)
        return 0
    try:
        write_json(args.out, report)
    except OSError as error:
        raise UserError(
            f"The report cannot be written to {args.out} ({error.strerror or error}); "
            "pick another file with --out."
        ) from None
    print(dumps({"report": str(args.out), **counts(report)}), flush=True)
    return 0


def _progress_lines():
    """A progress(stage, done, total) that prints a stage's progress on stderr: its first line,
    one every PROGRESS_SECONDS, and its last."""
    started, printed, finished = time.monotonic(), {}, set()

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage in finished or (
            done < total and now - printed.get(stage, -1e9) < PROGRESS_SECONDS
        ):
            return
        printed[stage] = now
        if done >= total:
            finished.add(stage)
        what = "fold" if stage == "labels" else "image"
        print(
            f"audit {stage}: {what} {done:,}/{total:,}  {now - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    return progress


def counts(report: dict) -> dict:
    """The report's numbers: groups and files of each finding."""
    result = {"images": report["images"]}
    for key in ("exact_duplicates", "near_duplicates", "leakage", "label_conflicts"):
        result[key] = len(report[key])
    for kind, entries in report["image_issues"].items():
        result[kind] = len(entries)
    if "label_issues" in report:
        result["label_issues"] = len(report["label_issues"])
    return result


def summary_lines(report: dict) -> list[str]:
    """A few lines for the terminal: what was found, never a file or class name."""

    def groups(key: str) -> str:
        found = report[key]
        return f"{len(found):,} groups ({sum(len(group) for group in found):,} files)"

    lines = [
        f"audited {report['images']:,} images of {len(report['class_names'])} classes",
        f"exact duplicates: {groups('exact_duplicates')}",
        f"near duplicates: {groups('near_duplicates')}, "
        f"within {report['near_duplicate_distance']} bits",
        f"leakage (copies in two splits): {groups('leakage')}",
        f"label conflicts (copies in two classes): {groups('label_conflicts')}",
        "image issues: "
        + ", ".join(
            f"{ISSUE_NAMES.get(kind, kind)} {len(entries):,}"
            for kind, entries in report["image_issues"].items()
        ),
    ]
    for split, per_class in report["class_balance"].items():
        if sum(per_class.values()):
            lines.append(
                f"{split}: {sum(per_class.values()):,} images, largest class "
                f"{max(per_class.values()):,}, smallest {min(per_class.values()):,}"
            )
    model = report.get("label_model")
    if model:
        accuracy = model.get("accuracy")
        how = f"out-of-sample accuracy {accuracy:.1%}" if accuracy is not None else model["note"]
        lines.append(
            f"label issues: {len(report['label_issues']):,} (logistic regression on "
            f"{model['features']}, {model['folds']}-fold; {how})"
        )
    return lines
