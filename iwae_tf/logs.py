"""Quiet logs for the scripts: TensorFlow's chatter off by default, back with `--verbosity=1`.

A run should print its own progress and results. TensorFlow also prints C++ INFO and WARNING
lines when it starts (CPU features, oneDNN) and compiles (XLA), and libraries emit Python
warnings (deprecations) that are not the user's business. `quiet_tensorflow(sys.argv)`, called
by each script before TensorFlow is imported, silences them, and absl's INFO lines of the
libraries, unless absl's own `--verbosity` (`-v`) flag asks for 1 or more. Python errors and
warnings logged at WARNING or above still show; scripts print their own progress.

Errors end a script with one line, `SCRIPT: error: MESSAGE`, and exit status 1 (`fail`): the
first line of the exception's message, never a traceback.

This module imports nothing heavy, so it can run before TensorFlow is loaded.
"""

from __future__ import annotations

import logging
import os
import sys
import typing
import warnings
from collections.abc import Sequence

from absl import app
from absl import logging as absl_logging

_FLAG_NAMES = ("--verbosity", "-v")


def requested_verbosity(argv: Sequence[str]) -> int:
    """The value of `--verbosity` / `-v` on the command line (absl's flag), or 0.

    Read from argv directly because TensorFlow's C++ logging reads its level once, when
    TensorFlow is imported, which is before absl parses the flags.
    """
    value = None
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, sep, rest = arg.partition("=")
        if name in _FLAG_NAMES:
            value = rest if sep else (args[i + 1] if i + 1 < len(args) else None)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0  # absl itself reports the bad value when it parses the flags.


def quiet_tensorflow(argv: Sequence[str]) -> int:
    """Silences TensorFlow's C++ and Python logs below ERROR and library warnings.

    Does nothing when `--verbosity` >= 1 is given, or when TF_CPP_MIN_LOG_LEVEL is already
    set in the environment (the user's choice wins).

    Args:
      argv: The command line (sys.argv).

    Returns:
      The requested verbosity.
    """
    verbosity = requested_verbosity(argv)
    if verbosity >= 1:
        return verbosity
    # C++ logs off: INFO and WARNING, and the ERROR lines a CPU-only machine gets from its
    # CUDA probe (cuInit); failures that matter reach Python as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    # absl runs at INFO under app.run; libraries (tfds, TensorFlow's saver) log through it.
    app.call_after_init(lambda: absl_logging.set_verbosity(absl_logging.WARNING))
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    _import_tensorflow_without_stderr()
    return verbosity


def _import_tensorflow_without_stderr() -> None:
    """Imports TensorFlow with file descriptor 2 pointed at /dev/null.

    Loading TensorFlow's shared libraries prints C++ lines (the CUDA stub's "could not find
    cuda drivers", absl's "all log messages before absl::InitializeLog()") before any log
    level applies. An import that fails still raises, and its traceback prints afterwards.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def error_line(error: BaseException) -> str:
    """The one line that names `error`: an in-graph assertion's message for TensorFlow's
    InvalidArgumentError, else the first non-empty line of the message."""
    text = str(getattr(error, "message", None) or error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assertions = [line for line in lines if "assertion failed" in line]
    return (assertions or lines or [type(error).__name__])[0]


def fail(error: BaseException) -> typing.NoReturn:
    """Exits with status 1 and `SCRIPT: error: <error_line(error)>` on stderr."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "iwae_tf"
    sys.exit(f"{script}: error: {error_line(error)}")
