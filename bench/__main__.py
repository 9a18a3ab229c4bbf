"""`python -m bench [NAME...] [--data-root DIR] [--quick] [--repeats N]`: run comparisons, write results.

accuracy also takes `--budget-minutes M --seeds N --datasets NAME... --recipes NAME...`.

Runs the named comparisons (all when none is named) one after another, prints a markdown table and
writes it to bench/results/latest.md, with the same rows as JSON in bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

from bench.accuracy import DATASETS as ACCURACY_DATASETS  # noqa: E402
from bench.accuracy import NOTEBOOK_RECIPES  # noqa: E402

NOTEBOOK_RECIPE_NAMES = tuple(NOTEBOOK_RECIPES)
from bench.common import (  # noqa: E402
    DEFAULT_DATA_ROOT,
    PROJECT_ROOT,
    BenchError,
    machine_info,
    require_folder,
    result_row,
    write_reports,
)

# Comparison name -> the dataset folders it reads under the data root.
COMPARISONS: dict[str, tuple[str, ...]] = {
    "pipeline": ("cats_vs_dogs",),
    "training": ("cats_vs_dogs",),
    "dashboard": ("cats_vs_dogs", "flowers128"),
    "predict": ("cats_vs_dogs",),
    "memory": ("cats_vs_dogs",),
    "accuracy": ("flowers128", "cifar10_subset", "cats_vs_dogs", "mnist_subset"),
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of Image Classification Studio against the usual Keras ways.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"comparisons to run: {', '.join(COMPARISONS)} (default: all)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder holding cats_vs_dogs/, flowers128/, cifar10_subset/, mnist_subset/ "
        "(default: ../shared/data beside the repository)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few images, 1 repeat, 1 epoch (accuracy: 1 seed, 0.1-minute budget): checks "
        "the plumbing",
    )
    parser.add_argument(
        "--repeats", type=int, help="repeats per contender (default: 3, or 1 with --quick)"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        help="accuracy: training minutes per run, the same for every recipe "
        "(default: 15, or 0.1 with --quick)",
    )
    parser.add_argument(
        "--seeds", type=int, help="accuracy: seeds per recipe (default: 3, or 1 with --quick)"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=ACCURACY_DATASETS,
        metavar="DATASET",
        help=f"accuracy: datasets to compare on, any of {', '.join(ACCURACY_DATASETS)} "
        "(default: all)",
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=NOTEBOOK_RECIPE_NAMES,
        metavar="RECIPE",
        help="accuracy: notebook recipes to compare with, any of "
        f"{', '.join(NOTEBOOK_RECIPE_NAMES)} (default: all; default and tutorial always run)",
    )
    arguments = parser.parse_args(argv)
    unknown = [name for name in arguments.names if name not in COMPARISONS]
    if unknown:
        parser.error(
            f"unknown comparison {', '.join(unknown)}; choose from {', '.join(COMPARISONS)}"
        )
    if arguments.repeats is not None and arguments.repeats < 1:
        parser.error("--repeats must be at least 1")
    if arguments.seeds is not None and arguments.seeds < 1:
        parser.error("--seeds must be at least 1")
    if arguments.budget_minutes is not None and not arguments.budget_minutes > 0:
        parser.error("--budget-minutes must be more than 0")
    return arguments


def check_data(data_root: Path, names: list[str], datasets: list[str] | None = None) -> None:
    """Fail before any work when the data root or a dataset folder a comparison needs is missing.

    `datasets` narrows what accuracy needs (digits is built in).
    """
    if not data_root.is_dir():
        raise BenchError(
            f"The data root {data_root} does not exist; pass --data-root DIR with a folder holding "
            "cats_vs_dogs/, flowers128/, cifar10_subset/ and mnist_subset/."
        )
    for name in names:
        folders = COMPARISONS[name]
        if name == "accuracy" and datasets:
            folders = tuple(folder for folder in datasets if folder != "digits")
        for folder in folders:
            require_folder(data_root, folder)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    names = arguments.names or list(COMPARISONS)
    repeats = arguments.repeats or (1 if arguments.quick else 3)
    data_root = arguments.data_root.expanduser().resolve()
    try:
        check_data(data_root, names, arguments.datasets)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.chdir(PROJECT_ROOT)  # AppTest and `python -m engine` children resolve paths from here
    machine = machine_info()
    started = time.monotonic()
    rows: list[dict] = []
    failed: list[str] = []
    durations: dict[str, float] = {}
    accuracy_options = {
        "budget_minutes": arguments.budget_minutes,
        "seeds": arguments.seeds,
        "datasets": arguments.datasets,
        "recipes": arguments.recipes,
    }
    for name in names:
        print(f"== {name}", flush=True)
        began = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
            options = accuracy_options if name == "accuracy" else {}
            rows += module.run(data_root, arguments.quick, repeats, **options)
        except Exception as error:  # one broken comparison must not lose the others' results
            traceback.print_exc()
            failed.append(name)
            rows.append(
                result_row(
                    f"{name}: failed",
                    "-",
                    None,
                    goal="runs",
                    met=False,
                    notes=f"{type(error).__name__}: {error}"[:300],
                )
            )
        durations[name] = round(time.monotonic() - began, 1)
        print(f"   {name} took {durations[name]:.0f} s", flush=True)
    flags = " ".join(
        [
            *names,
            *(["--quick"] if arguments.quick else []),
            f"--repeats {repeats}",
            *(
                [f"--budget-minutes {arguments.budget_minutes:g}"]
                if arguments.budget_minutes
                else []
            ),
            *([f"--seeds {arguments.seeds}"] if arguments.seeds else []),
            *(["--datasets", *arguments.datasets] if arguments.datasets else []),
            *(["--recipes", *arguments.recipes] if arguments.recipes else []),
        ]
    )
    machine |= {
        "command": f"python -m bench {flags}",
        "seconds": round(time.monotonic() - started, 1),
        "seconds_per_comparison": durations,
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        "data_root": str(data_root),
    }
    print(write_reports(rows, machine))
    if failed:  # a goal not met is a result; a comparison that crashed is an error
        print(
            f"error: {', '.join(failed)} did not complete; see the traceback above.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
