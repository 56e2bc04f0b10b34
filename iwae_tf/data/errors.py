"""The error raised when a dataset's source files are missing and cannot be fetched.

It lives in a module of its own so that the builders (`mnist`, `omniglot`, `binarized_mnist`)
and the pipeline can all raise it without importing each other.
"""


class DataUnavailableError(RuntimeError):
    """The source files a dataset is built from are missing; the message says how to get them."""
