"""Result files that are whole or absent: written to a temporary name, then renamed.

A run can be killed at any moment (a session ends, a machine is reclaimed, the disk fills). A
file written in place would then hold its first half and look finished to whoever reads it
next: a metrics.json that parses as truncated JSON, a CSV that stops at row 4,000 of 10,000.
Every result this package writes goes through `atomic_write`: the bytes go to a hidden
temporary file in the destination's directory, are flushed to disk, and the file is renamed
over the destination with `os.replace`, which POSIX makes atomic within one file system. A kill
or an error at any point leaves either the previous file or the complete new one (and at worst
a hidden `.NAME.*.tmp` file, which nothing reads).

`check_writable` lets a script fail in its first second, before hours of work, when its output
cannot be written.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import IO, Any

TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: str) -> str:
    """A hidden, unique sibling of `path`: DIR/.NAME.<random>.tmp (same file system)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}{TEMPORARY_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Opens a temporary sibling of `path` for writing; renames it to `path` on success.

    Usage: `with atomic_write("metrics.json") as f: json.dump(metrics, f)`. If the block
    raises (or the process dies), `path` keeps its previous content, or stays absent.

    Args:
      path: The destination file.
      mode: "w" (text) or "wb" (binary).
      **open_kwargs: Passed to `open` (e.g. newline="" for csv).

    Yields:
      The open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', got {mode!r}")
    temporary = temporary_path(path)
    try:
        # Mode "x" (not mkstemp) so that the file gets the usual permissions under the umask.
        with open(temporary, mode.replace("w", "x"), **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_json(path: str, value: Any) -> None:
    """Writes `value` as indented JSON to `path`, atomically."""
    with atomic_write(path) as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def check_writable(path: str, what: str) -> None:
    """Raises OSError with one line if a file cannot be created at `path`.

    Checks that the parent directory exists and is writable and that `path` is not a
    directory, without creating anything.

    Args:
      path: The file to be written.
      what: How the user named it, e.g. "--output", for the message.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path} is a directory; give a file name")
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot write {what} {path}: directory {directory} does not exist; create it first",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {what} {path}: directory {directory} is not writable")


def check_creatable_dir(path: str, what: str) -> None:
    """Raises OSError with one line if directory `path` cannot be created (or written).

    The nearest existing ancestor must be a writable directory; nothing is created.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{what} {path} is a file, not a directory")
    ancestor = path
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise NotADirectoryError(f"cannot create {what} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create {what} {path}: {ancestor} is not writable")
