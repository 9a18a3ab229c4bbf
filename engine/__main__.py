"""Command line: `python -m engine train|resume|evaluate|predict|info|models|runs|cancel|...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Keep TensorFlow's start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from engine import distributed  # noqa: E402
from engine.cli_parser import build_parser  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train" and args.local_workers is not None:
            distributed.check_local_workers(args.local_workers)
        if args.command in ("train", "lr-find") and not getattr(args, "run_dir", None):
            args.user = user_values(args)  # a wrong value is refused before TensorFlow starts
        _start_tensorflow(args)
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _start_tensorflow(args: argparse.Namespace) -> None:
    """Start TensorFlow, quietly, where the command needs it before anything else.

    A cluster's worker joins its cluster first; a launcher of local workers keeps off the GPUs
    (its workers use them); a plain `train` leaves it to engine.training, which starts it once
    the run's turn in the queue has come, unless --verbose asks to see the start-up.
    """
    from engine.devices import quiet_tensorflow_start

    verbose = getattr(args, "verbose", False)
    if args.command in ("lr-find", "evaluate", "predict") or getattr(args, "tensorflow", False):
        quiet_tensorflow_start(verbose)
    elif args.command == "train" and args.local_workers is not None:
        quiet_tensorflow_start(verbose, devices=False)
    elif args.command == "train" and (verbose or distributed.in_cluster()):
        quiet_tensorflow_start(verbose, multi_worker=distributed.in_cluster())


def user_values(args: argparse.Namespace) -> dict:
    """The config file's values with the flags' on top, each checked; the recipe fills the rest."""
    from engine.recipe import merge

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
    RunConfig.from_dict(user).validate()
    return user


def resolved_config(args: argparse.Namespace):
    """The data's recipe, then the config file's values, the flags, and the exclusions and
    relabels saved for the dataset (unless the config names its own, as a run's config.json does)."""
    from engine.data import edits, load_dataset
    from engine.recipe import default_weights_check, resolve

    user = args.user if hasattr(args, "user") else user_values(args)
    user = {**user, "data": edits.fill_in(user.get("data", {}))}
    data_only = RunConfig.from_dict({"data": user.get("data", {})})
    dataset = load_dataset(data_only.data)
    config, recipe = resolve(dataset, user, default_weights_check)
    return config.validate(), recipe


def run_train(args: argparse.Namespace) -> int:
    from engine import runs

    # A cluster's chief (or a launcher of local workers) writes the run folder; another worker
    # trains into a throwaway one.
    local = args.local_workers is not None
    workers = args.local_workers if local else distributed.worker_count()
    writes_run = local or distributed.is_chief()
    if args.run_dir:
        run_dir = args.run_dir
    else:
        config, recipe = resolved_config(args)
        distributed.check_config(config, workers)
        from engine.recipe import describe, notes_for

        for note in notes_for(recipe.notes, recipe.train_count, config):
            print(f"recipe: {note}", file=sys.stderr, flush=True)

        print(f"using: {describe(config)}", file=sys.stderr, flush=True)
        if not writes_run:
            with distributed.scratch_run_dir(config) as run_dir:
                return _train_and_report(run_dir, writes_run=False)
        run_dir = runs.create_run(config, args.runs_dir)
        print(f"run {run_dir.name}: training {config.model.name} on {config.data.spec}", flush=True)
    if local:
        return distributed.launch_local_workers(run_dir, args.local_workers, args.verbose)
    if workers > 1:
        runs.update_status(run_dir, workers=workers)
    return _train_and_report(run_dir)


def _train_and_report(run_dir: Path, writes_run: bool = True) -> int:
    from engine.jsonio import read_json
    from engine.training import train_run

    started = time.monotonic()
    status = train_run(run_dir, echo=sys.stderr)
    if status.get("state") == "completed" and distributed.in_cluster():
        distributed.wait_for_every_worker()
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
    error = status.get("error")
    if error and not writes_run and "UnavailableError" in error:
        error = "This worker lost the cluster: the chief ended, was cancelled or failed."
    if error:
        print(f"error: {error}", file=sys.stderr)
    print(run_dir if writes_run else "(a worker: the chief writes the run folder)", flush=True)
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


def run_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluation import evaluate_run

    result = evaluate_run(args.run_dir, tta=args.tta)
    keys = (
        "split split_label model_file tta count accuracy accuracy_interval top_k top_k_accuracy "
        "misclassified_count classes_without_images"
    )
    brief = {key: result[key] for key in keys.split()}
    brief["macro_f1"] = result["macro_avg"]["f1-score"]
    print(json.dumps(brief, indent=2))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from engine.predict import predict_files

    results, warnings = predict_files(args.run_dir, args.images, args.top_k, args.tta, args.explain)
    print(json.dumps(results, indent=2))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0 if all("top_k" in r for r in results) else 1


def run_info(args: argparse.Namespace) -> int:
    from engine.data import load_dataset

    data = RunConfig().replace(
        data={"spec": args.spec, "image_size": args.image_size, "max_pixels": args.max_pixels}
    )
    dataset = load_dataset(data.validate().data)
    from engine.data.statistics import without_oversized

    print(json.dumps(without_oversized(dataset.summary(), dataset), indent=2, default=str))
    return 0


def run_models(args: argparse.Namespace) -> int:
    from engine.registry import list_models

    for model in list_models():
        print(f"{model['name']:<18} {model['family']:<13} {model['description']}")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    from engine.run_admin import prepare_resume

    request = prepare_resume(args.run_dir, args.epochs)
    print(
        f"run {args.run_dir.name}: continuing from epoch {request['from_epoch']} "
        f"({request['checkpoint']}) to epoch {request['total_epochs']}",
        flush=True,
    )
    return _train_and_report(args.run_dir)


COMMANDS = {
    "train": run_train,
    "lr-find": run_lr_find,
    "evaluate": run_evaluate,
    "predict": run_predict,
    "info": run_info,
    "models": run_models,
    "resume": run_resume,
}

if __name__ == "__main__":
    code = main()
    if sys.argv[1:2] in (["train"], ["resume"]):
        # The run's files are all written; skip TensorFlow's slow interpreter teardown, so the
        # process is gone as soon as its status says it ended (what a cancel waits for).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
