"""Subcommands added to `python -m engine` (see engine.cli_parser.COMMAND_MODULES): compare, export."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the engine's command line."""
    compare = commands.add_parser(
        "compare",
        help="two runs on the same evaluated images: accuracies, paired counts, McNemar's exact "
        "p-value and a bootstrap interval of B - A; JSON on the last line",
    )
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.set_defaults(handler=run_compare, tensorflow=False)

    export = commands.add_parser(
        "export",
        help="export a run's model, checked on its evaluated split; prints the folder last",
    )
    export.add_argument("run_dir", type=Path)
    export.add_argument(
        "--format", required=True, choices=("savedmodel", "tflite", "tflite_dynamic")
    )
    export.add_argument("--out", type=Path, help="the export folder (default: RUN/exports/FORMAT)")
    export.set_defaults(handler=run_export, tensorflow=True)


def run_compare(args: argparse.Namespace) -> int:
    from engine.compare_stats import compare_runs

    result = compare_runs(args.run_a, args.run_b)
    print(json.dumps(result), flush=True)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from engine.export import export

    def progress(fraction: float, text: str) -> None:
        if text != "Scoring...":
            print(f"export: {text}", file=sys.stderr, flush=True)

    info = export(args.run_dir, args.format, args.out, progress=progress)
    keys = (
        "format artifact artifact_bytes split count keras_accuracy exported_accuracy "
        "accuracy_change max_abs_probability_difference prediction_agreement parity runtime"
    )
    print(json.dumps({key: info[key] for key in keys.split()}), flush=True)
    print(info["folder"], flush=True)
    return 0
