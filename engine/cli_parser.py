"""The command line's arguments: one subcommand per engine task."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from engine.config import DataConfig

# Modules that add their own subcommands: each has add_commands(commands), and every parser it
# adds sets defaults handler=FUNCTION(args) -> exit code and tensorflow=True|False (whether
# TensorFlow is started, quietly, before the handler runs).
COMMAND_MODULES = ("engine.cli_runs", "engine.cli_health", "engine.cli_insight")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine", description="Image Classification Studio engine."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model in this process; prints the run directory last"
    )
    _add_config_flags(train)
    train.add_argument("--runs-dir", type=Path, help="where run folders go (default: runs/)")
    # A run created by the dashboard, or a worker's run started by --local-workers.
    train.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    train.add_argument(
        "--local-workers",
        type=int,
        metavar="N",
        help="train on N worker processes here with MultiWorkerMirroredStrategy",
    )

    lr_find = commands.add_parser(
        "lr-find",
        help="sweep the learning rate over a short fit; prints JSON with a suggestion last",
    )
    _add_config_flags(lr_find)
    lr_find.add_argument("--steps", type=int, default=100, help="training steps in the sweep")

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a run's model on its test split (validation without one)"
    )
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "--tta", action="store_true", help="average each image's and its mirror's probabilities"
    )

    predict = commands.add_parser("predict", help="top-k predictions for image files, as JSON")
    predict.add_argument("run_dir", type=Path)
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument(
        "--tta", action="store_true", help="average each image's and its mirror's probabilities"
    )
    predict.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="write each image's Grad-CAM heatmap (DIR/<stem>.cam.npy) and overlay "
        "(DIR/<stem>.cam.png) there",
    )

    info = commands.add_parser("info", help="a dataset summary as JSON")
    info.add_argument("spec")
    info.add_argument("--image-size", type=int, default=0)
    info.add_argument(
        "--max-pixels",
        type=int,
        default=DataConfig.max_pixels,
        help="images with more pixels are skipped and reported, as training skips them",
    )

    commands.add_parser("models", help="the models you can train")

    resume = commands.add_parser(
        "resume",
        help="train a finished, cancelled or interrupted run for more epochs from its latest "
        "checkpoint, in this process; prints the run directory last",
    )
    resume.add_argument("run_dir", type=Path)
    resume.add_argument("--epochs", type=int, required=True, help="how many more epochs")

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(commands)
    return parser


def _add_config_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--dataset", help="digits, tfds:NAME, a folder, a .zip or a .npz (default: digits)"
    )
    command.add_argument("--model", help="a model name from `python -m engine models`")
    command.add_argument("--epochs", type=int, help="0 fits them to the time budget")
    command.add_argument("--batch-size", type=int)
    command.add_argument("--image-size", type=int)
    command.add_argument("--learning-rate", type=float)
    command.add_argument("--seed", type=int)
    command.add_argument(
        "--config",
        type=Path,
        help="a run config JSON (whole or partial); the flags above override it, the data's "
        "recipe fills the rest",
    )
    command.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's start-up messages"
    )
