"""JSON files: atomic, fsynced writes of finite numbers only, and reads that name a damaged file.

A reader never sees half a file, a crash never leaves a temporary file behind, and a file that is
empty, truncated, binary or not the expected kind raises DamagedFile (a UserError with a sentence)
instead of a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import UserError

MAX_OBJECT_BYTES = 64 * 2**20  # a run's JSON files are kilobytes; anything this large is not one


class DamagedFile(UserError):
    """A JSON file that exists but cannot be used; `reason` is a short clause naming the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"The file {path} is damaged ({reason}); delete or replace it.")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to a temporary file beside path, fsync it, then rename it over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            # Without this a crash after the rename can leave path empty: the rename reaches the
            # disk before the data does on common file systems.
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; some file systems cannot open a folder, which is fine."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def finite(value: Any) -> Any:
    """value with every NaN or infinite float (nested in dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Valid JSON for value: numpy values and paths converted, non-finite floats written as null."""
    return json.dumps(finite(value), indent=indent, default=_to_builtin, allow_nan=False)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write value as indented JSON, atomically."""
    atomic_write_bytes(path, (dumps(value, indent=2) + "\n").encode())


def overwrite_json_in_place(path: str | os.PathLike, value: Any) -> None:
    """Rewrite path's own bytes with compact JSON: the last resort when the disk has no room for a
    temporary file (a file no longer than the old one reuses the old one's blocks)."""
    data = (dumps(value) + "\n").encode()
    with open(path, "r+b" if Path(path).exists() else "wb") as handle:
        handle.write(data)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file, or return default when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


def parse_json_object(data: bytes, path: str | os.PathLike) -> dict:
    """The JSON object in data (path names it in errors); DamagedFile when it is not one."""
    name = Path(path).name
    if not data.strip():
        raise DamagedFile(path, f"{name} is empty")
    try:
        value = _loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedFile(path, f"{name} is not valid JSON (it is binary, not text)") from None
    except (ValueError, RecursionError):
        raise DamagedFile(path, f"{name} is not valid JSON (it is truncated or garbled)") from None
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
        raise DamagedFile(path, f"{name} is not a JSON object (it holds {kind})")
    return value


_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a bool"}


def read_json_object(path: str | os.PathLike) -> dict | None:
    """A JSON file that must hold an object: None when it does not exist, else DamagedFile when it
    is empty, not JSON, not an object, unreadable or implausibly large."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_OBJECT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DamagedFile(path, f"{path.name} cannot be read ({error.strerror})") from None
    if len(data) > MAX_OBJECT_BYTES:
        raise DamagedFile(path, f"{path.name} is over {MAX_OBJECT_BYTES // 2**20} MB")
    return parse_json_object(data, path)


def json_object_damage(path: str | os.PathLike) -> str | None:
    """Why a JSON-object file is damaged (DamagedFile.reason), or None when sound or absent."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"{Path(path).name} cannot be read ({error.strerror})"
    return _damage(os.fspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _damage(path: str, mtime_ns: int, size: int) -> str | None:
    """Parsed once per version of a file: an evaluation.json can be large and runs are listed often."""
    try:
        read_json_object(path)
    except DamagedFile as error:
        return error.reason
    return None


def append_jsonl(path: str | os.PathLike, value: dict) -> None:
    """Append one JSON line; a single small write of a whole line, so readers see whole lines."""
    line = dumps(value) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects on the complete lines of a JSON-lines file. A line still being written,
    and any line that is not a JSON object (garbage, binary, a list, a number), is left out."""
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break
                try:
                    row = _loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        pass
    except OSError:  # a folder where the file should be, no permission: no history to show
        return []
    return rows


def _loads(text: str) -> Any:
    """json.loads with NaN, Infinity and overflowing numbers such as 1e400 read as None."""
    return json.loads(text, parse_constant=lambda _: None, parse_float=_finite_float)


def _finite_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _to_builtin(value: Any) -> Any:
    """Turn numpy scalars and arrays and paths into JSON-friendly values."""
    if hasattr(value, "tolist"):
        return finite(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
