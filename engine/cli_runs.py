"""The run-management subcommands: runs, cancel, rename, note and delete (none starts TensorFlow)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the run-management subcommands to the engine's command line."""
    runs_command = commands.add_parser("runs", help="list runs and their state")
    runs_command.set_defaults(handler=run_runs)
    runs_command.add_argument("--runs-dir", type=Path)

    cancel = commands.add_parser("cancel", help="ask a run to stop at its next batch")
    cancel.set_defaults(handler=run_cancel)
    cancel.add_argument("run_dir", type=Path)

    rename = commands.add_parser("rename", help="give a run a short readable name")
    rename.set_defaults(handler=run_rename)
    rename.add_argument("run_dir", type=Path)
    rename.add_argument("name")

    note = commands.add_parser("note", help="set a run's notes (an empty text clears them)")
    note.set_defaults(handler=run_note)
    note.add_argument("run_dir", type=Path)
    note.add_argument("text")

    delete = commands.add_parser("delete", help="delete a run's folder (never while it trains)")
    delete.set_defaults(handler=run_delete)
    delete.add_argument("run_dir", type=Path)


def run_runs(args: argparse.Namespace) -> int:
    from engine.runs import list_runs

    for run in list_runs(args.runs_dir):
        if run["accuracy"] is None:
            headline = "not evaluated"
        else:
            # The split is named so a validation number never reads as a test one.
            name = f"{run['accuracy_split']} accuracy" if run["accuracy_split"] else "accuracy"
            headline = f"{name} {run['accuracy'] * 100:.2f} %"
        damaged = f"  (damaged: {run['damaged']})" if run.get("damaged") else ""
        print(f"{run['run_id']:<60} {run['state']:<10} {headline}{damaged}")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    from engine.runs import request_cancel

    status = request_cancel(args.run_dir)
    print(f"cancel requested for {args.run_dir} (state {status.get('state')})")
    return 0


def run_rename(args: argparse.Namespace) -> int:
    from engine.run_admin import set_name

    print(f"{args.run_dir}: named {set_name(args.run_dir, args.name)!r}")
    return 0


def run_note(args: argparse.Namespace) -> int:
    from engine.run_admin import set_notes

    notes = set_notes(args.run_dir, args.text)
    print(f"{args.run_dir}: notes {'set' if notes else 'cleared'} ({len(notes):,} characters)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from engine.run_admin import delete_run

    delete_run(args.run_dir)
    print(f"deleted {args.run_dir}")
    return 0
