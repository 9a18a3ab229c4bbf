"""Atomic file writes: a reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to a temporary file beside path, then rename it over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write value as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, default=_to_builtin) + "\n").encode())


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file, or return default when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


def append_jsonl(path: str | os.PathLike, value: dict) -> None:
    """Append one JSON line; a single small write of a whole line, so readers see whole lines."""
    line = json.dumps(value, default=_to_builtin) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read the complete lines of a JSON-lines file; a line still being written is ignored."""
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


def _to_builtin(value: Any) -> Any:
    """Turn numpy scalars and arrays and paths into JSON-friendly values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
