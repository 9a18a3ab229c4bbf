"""Command line: `python -m engine train|evaluate|predict|info|models|runs|cancel`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "2"
)  # keep TensorFlow's start-up chatter off the terminal

from engine.config import RunConfig  # noqa: E402
from engine.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine", description="Image Classification Studio engine."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model in this process; prints the run directory last"
    )
    _add_config_flags(train)
    train.add_argument("--runs-dir", type=Path, help="where run folders go (default: runs/)")
    train.add_argument(
        "--run-dir", type=Path, help=argparse.SUPPRESS
    )  # a run created by the dashboard

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

    info = commands.add_parser("info", help="a dataset summary as JSON")
    info.add_argument("spec")
    info.add_argument("--image-size", type=int, default=0)

    commands.add_parser("models", help="the models you can train")

    runs_command = commands.add_parser("runs", help="list runs and their state")
    runs_command.add_argument("--runs-dir", type=Path)

    cancel = commands.add_parser("cancel", help="ask a run to stop at its next batch")
    cancel.add_argument("run_dir", type=Path)

    args = parser.parse_args(argv)
    from engine.devices import quiet_tensorflow_start

    if args.command in ("train", "lr-find", "evaluate", "predict"):
        quiet_tensorflow_start(verbose=getattr(args, "verbose", False))
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


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


def resolved_config(args: argparse.Namespace):
    """The data's recipe, with the config file's values and then the flags on top."""
    from engine.data import load_dataset
    from engine.recipe import default_weights_check, merge, resolve

    user = RunConfig.load_partial(args.config) if args.config else {}
    flags: dict[str, dict] = {"data": {}, "model": {}, "train": {}}
    for flag, section, key in (
        ("dataset", "data", "spec"),
        ("image_size", "data", "image_size"),
        ("model", "model", "name"),
        ("epochs", "train", "epochs"),
        ("batch_size", "train", "batch_size"),
        ("learning_rate", "train", "learning_rate"),
        ("seed", "train", "seed"),
    ):
        if getattr(args, flag) is not None:
            flags[section][key] = getattr(args, flag)
    user = merge(user, {section: values for section, values in flags.items() if values})
    data_only = RunConfig.from_dict({"data": user.get("data", {})})
    dataset = load_dataset(data_only.data)
    config, recipe = resolve(dataset, user, default_weights_check)
    _check_model_name(config.model.name)
    return config, recipe


def run_train(args: argparse.Namespace) -> int:
    from engine import runs
    from engine.jsonio import read_json
    from engine.training import train_run

    if args.run_dir:
        run_dir = args.run_dir
    else:
        config, recipe = resolved_config(args)
        for note in recipe.notes:
            print(f"recipe: {note}", file=sys.stderr, flush=True)
        from engine.recipe import describe

        print(f"using: {describe(config)}", file=sys.stderr, flush=True)
        run_dir = runs.create_run(config, args.runs_dir)
        print(f"run {run_dir.name}: training {config.model.name} on {config.data.spec}", flush=True)
    started = time.monotonic()
    status = train_run(run_dir, echo=sys.stderr)
    evaluation = read_json(run_dir / "evaluation.json") or {}
    summary = {
        "state": status.get("state"),
        "epochs": status.get("epochs_done"),
        "best_epoch": status.get("best_epoch"),
        "split": evaluation.get("split"),
        "accuracy": evaluation.get("accuracy"),
        "images_per_second": status.get("images_per_second"),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    if status.get("error"):
        print(f"error: {status['error']}", file=sys.stderr)
    print(run_dir, flush=True)
    return 0 if status.get("state") == "completed" else 1


def run_lr_find(args: argparse.Namespace) -> int:
    from engine.callbacks import format_seconds
    from engine.lr_find import lr_find

    config, recipe = resolved_config(args)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            elapsed = time.monotonic() - started
            eta = elapsed / max(done, 1) * (total - done)
            print(
                f"lr-find step {done}/{total}  ETA {format_seconds(eta)}",
                file=sys.stderr,
                flush=True,
            )

    result = lr_find(config, steps=args.steps, progress=progress)
    print(json.dumps(result), flush=True)
    return 0


def _check_model_name(name: str) -> None:
    from engine.models import list_models

    names = [model["name"] for model in list_models()]
    if name not in names:
        raise UserError(f"Unknown model '{name}'; choose one of {', '.join(names)}.")


def run_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluation import evaluate_run

    result = evaluate_run(args.run_dir, tta=args.tta)
    brief = {
        key: result[key]
        for key in (
            "split",
            "split_label",
            "model_file",
            "tta",
            "count",
            "accuracy",
            "top_k",
            "top_k_accuracy",
            "misclassified_count",
            "classes_without_images",
        )
    }
    brief["macro_f1"] = result["macro_avg"]["f1-score"]
    print(json.dumps(brief, indent=2))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from engine.predict import Predictor

    predictor = Predictor(args.run_dir)
    results = predictor.predict(
        [(str(path), path) for path in args.images], top_k=args.top_k, tta=args.tta
    )
    print(json.dumps(results, indent=2))
    return 0 if all("top_k" in r for r in results) else 1


def run_info(args: argparse.Namespace) -> int:
    from engine.config import DataConfig
    from engine.data import load_dataset

    dataset = load_dataset(DataConfig(spec=args.spec, image_size=args.image_size))
    print(json.dumps(dataset.summary(), indent=2, default=str))
    return 0


def run_models(args: argparse.Namespace) -> int:
    from engine.models import list_models

    for model in list_models():
        print(f"{model['name']:<18} {model['family']:<13} {model['description']}")
    return 0


def run_runs(args: argparse.Namespace) -> int:
    from engine.runs import list_runs

    for run in list_runs(args.runs_dir):
        if run["accuracy"] is None:
            headline = "not evaluated"
        else:
            # The split is named so a validation number never reads as a test one.
            name = f"{run['accuracy_split']} accuracy" if run["accuracy_split"] else "accuracy"
            headline = f"{name} {run['accuracy'] * 100:.2f} %"
        print(f"{run['run_id']:<60} {run['state']:<10} {headline}")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    from engine.runs import request_cancel

    status = request_cancel(args.run_dir)
    print(f"cancel requested for {args.run_dir} (state {status.get('state')})")
    return 0


COMMANDS = {
    "train": run_train,
    "lr-find": run_lr_find,
    "evaluate": run_evaluate,
    "predict": run_predict,
    "info": run_info,
    "models": run_models,
    "runs": run_runs,
    "cancel": run_cancel,
}

if __name__ == "__main__":
    code = main()
    if sys.argv[1:2] == ["train"]:
        # The run's files are all written; skip TensorFlow's slow interpreter teardown, so the
        # process is gone as soon as its status says it ended (what a cancel waits for).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
