"""Subcommands added to `python -m engine` (see engine.cli_parser.COMMAND_MODULES)."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the engine's command line."""
