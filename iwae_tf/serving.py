"""Loading an exported model and checking its inputs: TensorFlow alone, no Keras, no TFP.

`load_exported(path)` reads a SavedModel written by `iwae_tf.export` into an `ExportedModel`
(numpy in, numpy out); `scripts/score.py` scores files with it. Importing this module loads
only TensorFlow, numpy, `iwae_tf.rng` and `iwae_tf.logs` (absl), so a machine that scores
needs none of the training code's dependencies (the package's `__init__` imports its
submodules lazily).

**Inputs follow the data.** A model's examples have the shape of its training data, recorded
in the metadata as `architecture.data_shape`: [H, W, C] images, or [D] rows (exports before
format 4 record only `data_size`, D). `check_images` also takes images flattened row-major to
[N, H * W * C] and reshapes them, and flattens images for a model of rows. Binary inputs are
required of Bernoulli models only; Gaussian models take intensities in [0, 1], the range they
were trained on.

**Bad input.** Each of these is rejected by the exported signatures with an in-graph assertion
(`assert_images`; an InvalidArgumentError whose message starts with the text below) and, with
a ValueError carrying the same text, by `check_images` on the host, which `ExportedModel` and
`scripts/score.py` call before any model call (for [28, 28, 1] images, or rows of 784):

    wrong rank         "x must have rank 4, [N, 28, 28, 1]"   "x must have rank 2, [N, 784]"
    wrong shape        "x must have shape [N, 28, 28, 1]"     "x must have 784 columns
                                                               (flattened images)"
    NaN or inf         "x contains NaN or inf"
    outside [0, 1]     "x has values outside [0, 1]"
    not binary         "x is not binary" (Bernoulli models)
    k < 1, n < 0       "k must be >= 1", "n must be >= 0"

A non-float dtype can never reach the graph: the signature's float32 input type rejects it
(TensorFlow's own InvalidArgumentError "... expected to be a float tensor but is a int64
tensor"), and `check_images` says "x must be a float array".

**Conversions** that lose nothing are made on the host (`check_images`, hence `ExportedModel`
and `scripts/score.py`): float16 and float64 become float32 (every value in [0, 1] that
float32 cannot hold exactly rounds to the nearest float32), bool becomes 0.0 / 1.0, and
[N, H, W] images gain the channel axis of a model of [H, W, 1] images. Integer arrays are
rejected rather than guessed at: uint8 images may be bytes (0..255) or bits (0, 1). An empty
batch (N = 0) is valid and scores to empty arrays.

**Counts.** k, n and the seed are integers (a float with an integral value is accepted):
1 <= k <= 2^31 - 1 and 0 <= n <= 2^31 - 1, because the networks index rows with int32, and
seeds fit int64. `check_count` and `check_seed` say so on the host; the signatures check k and
n in the graph as well.

Grey inputs (values strictly inside (0, 1)) are rejected by default: scoring an intensity
image as if it were binary data gives a meaningless number. On request (`binarize=True`,
`scripts/score.py --binarize`) they are binarized as the test set is (`iwae_tf.data.
eval_dataset`): row i becomes Bernoulli(intensity) with the stateless seed (binarize_seed, i).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from iwae_tf import logs, rng

METADATA_FILE = "metadata.json"

MSG_RANK = "x must have rank {rank}, [N, {dims}]"
MSG_WIDTH = "x must have {width} columns (flattened images)"
MSG_SHAPE = "x must have shape [N, {dims}]"
MSG_DTYPE = "x must be a float array"
MSG_NONFINITE = "x contains NaN or inf"
MSG_RANGE = "x has values outside [0, 1]"
MSG_BINARY = "x is not binary"
GREY_HINT = (
    "grey values are rejected; binarize them first (ExportedModel.score(binarize=True), "
    "scripts/score.py --binarize)"
)
INPUT_POLICY = (
    "x must be float32 [N, *data_shape] with values in [0, 1], exactly 0 or 1 for Bernoulli "
    "models. Rejected, with an error naming the problem: wrong rank or shape, a non-float "
    "dtype, NaN or inf, values outside [0, 1], and grey (non-binary) values for Bernoulli "
    "models. Grey images are binarized only on request, as Bernoulli(intensity) with "
    "stateless seed (binarize_seed, row index), like the test set."
)


MAX_COUNT = 2**31 - 1
"""The largest k or n: the networks index (sample, example) rows with int32."""

MSG_COUNT = "{name} must be an integer in [{minimum}, 2^31 - 1]"


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int in [minimum, MAX_COUNT]; ValueError naming `name` otherwise.

    Python and numpy integers pass, and floats with an integral value (1e3); bools, other
    floats, strings and out-of-range values are rejected.
    """
    message = MSG_COUNT.format(name=name, minimum=minimum)
    number = _integer(value)
    if number is None or not minimum <= number <= MAX_COUNT:
        raise ValueError(f"{message}; got {value!r}")
    return number


def check_seed(value: Any) -> int:
    """`value` as an int that fits int64 (the signatures' seed type); ValueError otherwise."""
    number = _integer(value)
    if number is None or not -(2**63) <= number < 2**63:
        raise ValueError(f"seed must be an integer in [-2^63, 2^63 - 1]; got {value!r}")
    return number


def _integer(value: Any) -> int | None:
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(d) for d in shape)


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape)


def _rank_message(shape: tuple[int, ...]) -> str:
    return MSG_RANK.format(rank=len(shape) + 1, dims=_dims(shape))


def _shape_message(shape: tuple[int, ...]) -> str:
    if len(shape) == 1:
        return MSG_WIDTH.format(width=shape[0])
    return MSG_SHAPE.format(dims=_dims(shape))


def check_images(x: Any, shape: int | Sequence[int], binary: bool = True) -> np.ndarray:
    """Validates a batch of examples on the host; returns it as float32 [N, *shape].

    Args:
      x: Array-like [N, *shape]; or [N, prod(shape)] rows of images flattened row-major for a
        model of images, and images for a model of rows (flattened row-major).
      shape: The shape of one example (an int D for flat rows).
      binary: Whether values must be exactly 0 or 1 (else only within [0, 1]).

    Returns:
      x as a float32 numpy array [N, *shape].

    Raises:
      ValueError: With one of the documented messages (see the module docstring).
    """
    shape = _shape(shape)
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:  # Ragged nested lists.
        raise ValueError(
            f"{MSG_DTYPE} of one shape; got an unconvertible {type(x).__name__}: "
            f"{logs.error_line(e)}"
        ) from None
    size = int(np.prod(shape))
    if len(shape) > 1 and x.ndim == 2 and x.shape[1] == size:
        x = x.reshape((-1, *shape))
    elif len(shape) == 1 and x.ndim > 2 and int(np.prod(x.shape[1:])) == size:
        x = x.reshape((len(x), size))  # Images for a model of rows: flattened row-major.
    elif len(shape) == 3 and shape[2] == 1 and x.ndim == 3 and tuple(x.shape[1:]) == shape[:2]:
        x = x[..., np.newaxis]  # [N, H, W] greyscale images: the channel axis is implied.
    if x.ndim != len(shape) + 1:
        raise ValueError(f"{_rank_message(shape)}; got shape {x.shape}")
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"{_shape_message(shape)}; got shape {x.shape}")
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        hint = ""
        if np.issubdtype(x.dtype, np.integer):
            hint = "; convert it yourself: bits with x.astype('float32'), bytes with x / 255"
        raise ValueError(f"{MSG_DTYPE} (float32 in {{0, 1}}); got dtype {x.dtype}{hint}")
    # Checked before the float32 conversion, so that 1e300 is "outside [0, 1]" (not an inf
    # the conversion made) and 1e-50 is grey (not a 0 it made).
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        raise ValueError(f"{MSG_NONFINITE}: {int(bad.sum())} values, first x{_index(first)}")
    outside = (x < 0) | (x > 1)
    if outside.any():
        first = tuple(np.argwhere(outside)[0])
        raise ValueError(
            f"{MSG_RANGE}: min {x.min():g}, max {x.max():g}, first x{_index(first)} = {x[first]:g}"
        )
    if binary:
        grey = (x != 0) & (x != 1)
        if grey.any():
            first = tuple(np.argwhere(grey)[0])
            raise ValueError(
                f"{MSG_BINARY}: {int(grey.sum())} values strictly between 0 and 1, first "
                f"x{_index(first)} = {x[first]:g}; {GREY_HINT}"
            )
    return x.astype(np.float32)


def _index(position: tuple) -> str:
    return "[" + ", ".join(str(int(i)) for i in position) + "]"


def binarize_rows(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Row i becomes Bernoulli(x_i) with stateless seed (seed, i), as `data.eval_dataset` does.

    Args:
      x: [N, D] float intensities in [0, 1] (check them first with `check_images`).
      seed: The binarization seed (0 is the test set's).

    Returns:
      [N, D] float32 array of 0s and 1s.
    """
    base = tf.constant(seed, tf.int64)
    rows = (
        tf.data.Dataset.from_tensor_slices(np.asarray(x, np.float32))
        .enumerate()
        .map(lambda i, row: rng.bernoulli(row, tf.stack([base, i])))
        .batch(4096)
    )
    parts = [batch.numpy() for batch in rows]
    return np.concatenate(parts) if parts else np.zeros_like(x, np.float32)


def _runtime_rank(x: tf.Tensor) -> tf.Tensor:
    # Not tf.rank(x): Grappler folds it to the signature's static rank 2, yet a SavedModel
    # signature does not enforce its input shapes, so a caller can feed any rank. Counting
    # the entries of the run-time shape vector cannot be folded.
    return tf.reduce_sum(tf.cast(tf.shape(x) >= 0, tf.int32))


def _assert_then(checks: list[tuple[tf.Tensor, list[Any]]], x: tf.Tensor) -> tf.Tensor:
    """Runs the (condition, message) assertions in order, then returns x gated on all of them.

    Chained, so that the first failing check is the one reported and no model op (whose own
    error, e.g. a failed reshape, would hide ours) runs on bad input.
    """
    dependency: list[Any] = []
    for condition, message in checks:
        with tf.control_dependencies(dependency):
            dependency = [tf.debugging.Assert(condition, message, summarize=8)]
    with tf.control_dependencies(dependency):
        return tf.identity(x)


def assert_images(x: tf.Tensor, shape: int | Sequence[int], binary: bool = True) -> tf.Tensor:
    """x, gated on in-graph checks of rank, shape, finiteness, range and (optionally) binarity.

    For the graph of a signature: a failing check raises InvalidArgumentError with the
    documented message, before any model op runs.
    """
    shape = _shape(shape)
    rank = _runtime_rank(x)
    # Compare the trailing dims only when the rank is right, padding so that the slice itself
    # cannot fail on a wrong rank.
    padded = tf.concat([tf.shape(x), -tf.ones([len(shape)], tf.int32)], axis=0)
    trailing = padded[1 : len(shape) + 1]
    shape_ok = tf.equal(rank, len(shape) + 1) & tf.reduce_all(tf.equal(trailing, shape))
    flat = tf.reshape(x, [-1])
    finite = tf.math.is_finite(flat)
    # NaNs are excluded from the range and binarity tests so that each failure has one cause.
    safe = tf.where(finite, flat, tf.zeros_like(flat))
    in_range = (safe >= 0.0) & (safe <= 1.0)
    is_binary = (safe == 0.0) | (safe == 1.0)
    checks = [
        (tf.equal(rank, len(shape) + 1), [_rank_message(shape) + "; got rank", rank]),
        (shape_ok, [_shape_message(shape) + "; got", tf.shape(x)]),
        (
            tf.reduce_all(finite),
            [MSG_NONFINITE + ": count", tf.reduce_sum(tf.cast(~finite, tf.int32))],
        ),
        (
            tf.reduce_all(in_range),
            [MSG_RANGE + ": min", tf.reduce_min(safe), "max", tf.reduce_max(safe)],
        ),
    ]
    if binary:
        checks.append(
            (
                tf.reduce_all(is_binary),
                [
                    MSG_BINARY + ": values strictly between 0 and 1, count",
                    tf.reduce_sum(tf.cast(~is_binary, tf.int32)),
                    "; " + GREY_HINT,
                ],
            )
        )
    return _assert_then(checks, x)


def assert_scalar(value: tf.Tensor, condition: tf.Tensor, message: str) -> tf.Tensor:
    """`value`, gated on an in-graph check of `condition` that reports `message`."""
    return _assert_then([(condition, [message + "; got", value])], value)


def assert_latents(z: tf.Tensor, width: int) -> tf.Tensor:
    """z, gated on in-graph checks: rank 2, `width` columns, finite."""
    rank = _runtime_rank(z)
    last = tf.concat([tf.shape(z), [-1]], axis=0)[tf.maximum(rank - 1, 0)]
    return _assert_then(
        [
            (tf.equal(rank, 2), [f"z must have rank 2, [N, {width}]; got rank", rank]),
            (tf.equal(last, width), [f"z must have {width} columns; got", last]),
            (tf.reduce_all(tf.math.is_finite(z)), ["z contains NaN or inf"]),
        ],
        z,
    )


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata dict of an exported SavedModel directory.

    Raises:
      OSError: The file is missing, unreadable or not a JSON object (one line).
    """
    metadata_path = os.path.join(path, "assets", METADATA_FILE)
    try:
        with open(metadata_path) as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} has no assets/{METADATA_FILE}: not an iwae_tf export"
        ) from None
    except (OSError, ValueError) as e:  # ValueError: JSON syntax, bad UTF-8.
        raise OSError(
            f"cannot read {metadata_path}: {logs.error_line(e)}; export the model again"
        ) from None
    if not isinstance(metadata, dict):
        raise OSError(f"{metadata_path} is not a JSON object; export the model again")
    return metadata


def load_saved_model(path: str) -> Any:
    """`tf.saved_model.load(path)`, with a missing or damaged SavedModel reported in one line.

    Raises:
      FileNotFoundError: `path` holds no saved_model.pb.
      OSError: The SavedModel cannot be loaded: a truncated or corrupt saved_model.pb or
        variables file (TensorFlow raises a different exception type for each).
    """
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path} holds no SavedModel (saved_model.pb)")
    try:
        return tf.saved_model.load(path)
    except Exception as e:  # TensorFlow: OSError, IndexError, DataLossError, ...
        raise OSError(
            f"cannot load the SavedModel in {path}: it is truncated or corrupt "
            f"({type(e).__name__}: {logs.error_line(e)}); copy or export it again"
        ) from None


def input_spec(metadata: dict[str, Any]) -> tuple[tuple[int, ...], bool] | None:
    """(shape of one example, whether inputs must be binary) from an export's metadata.

    Exports before format 4 record only `data_size` and are all Bernoulli models. None if the
    metadata records neither.
    """
    architecture = metadata.get("architecture", {})
    shape = architecture.get("data_shape") or (
        [architecture["data_size"]] if "data_size" in architecture else None
    )
    if shape is None:
        return None
    binary = metadata.get("likelihood", {}).get("name", "bernoulli") == "bernoulli"
    return tuple(int(d) for d in shape), binary


class ExportedModel:
    """A loaded export: numpy in, numpy out, with host-side input checks.

    Attributes:
      path: The SavedModel directory.
      metadata: Its metadata dict.
      data_shape: The shape of one example, e.g. (28, 28, 1), or (D,) for rows.
      binary: Whether inputs must be binary (Bernoulli models).
      latent_sizes: Sizes of the stochastic layers, bottom first.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.metadata = read_metadata(path)
        self._saved_model = load_saved_model(path)
        self._signatures = self._saved_model.signatures
        self.data_shape, self.binary = input_spec(self.metadata)
        self.latent_sizes = tuple(int(s) for s in self.metadata["architecture"]["latent_sizes"])

    def _images(self, x: Any, binarize: bool, binarize_seed: int) -> tf.Tensor:
        if binarize and not self.binary:
            raise ValueError(
                "binarize=True is for Bernoulli models; this model's likelihood takes "
                "intensities in [0, 1]"
            )
        x = check_images(x, self.data_shape, binary=self.binary and not binarize)
        if binarize:
            x = binarize_rows(x, binarize_seed)
        return tf.constant(x)

    def score(
        self,
        x: Any,
        k: int = 5000,
        seed: int = 0,
        binarize: bool = False,
        binarize_seed: int = 0,
    ) -> dict[str, np.ndarray]:
        """Per-example log_px and elbo of x [N, *data_shape] with k importance samples.

        Args:
          x: [N, *data_shape] float array (or images flattened to rows), of 0s and 1s for
            Bernoulli models (grey values only with binarize=True), else in [0, 1].
          k: Importance samples per example.
          seed: Seed of the draws; the same x, k and seed give the same scores.
          binarize: Binarize grey values as Bernoulli(intensity) instead of rejecting them.
          binarize_seed: Seed of that binarization (0, row i: the test set's).

        Returns:
          {"log_px": [N], "elbo": [N]} float32 arrays.

        Raises:
          ValueError: Bad x, k or seed (see the module docstring).
        """
        k = check_count("k", k)
        seed = check_seed(seed)
        x = self._images(x, binarize, check_seed(binarize_seed))
        out = self._signatures["score"](
            x=x, k=self._scalar("score", "k", k), seed=self._scalar("score", "seed", seed)
        )
        return {name: value.numpy() for name, value in out.items()}

    def _scalar(self, signature: str, name: str, value: int) -> tf.Tensor:
        # Exports before format 2 took int32 k and n; use whatever the signature declares.
        spec = self._signatures[signature].structured_input_signature[1][name]
        return tf.constant(int(value), spec.dtype)

    def encode(self, x: Any) -> dict[str, np.ndarray]:
        """Posterior means and stds h<l>_mean, h<l>_std [N, d_l] of x [N, *data_shape]."""
        out = self._signatures["encode"](x=self._images(x, False, 0))
        return {name: value.numpy() for name, value in out.items()}

    def decode(self, z: Any) -> np.ndarray:
        """Means [N, *data_shape] of p(x | z) for top-layer latents z [N, d_L].

        The Bernoulli's probabilities or the Gaussian's mean; the `decode` signature returns
        every parameter of the likelihood.
        """
        try:
            z = np.asarray(z, np.float32)
        except (ValueError, TypeError) as e:
            raise ValueError(f"z must be a float array; {logs.error_line(e)}") from None
        if z.ndim != 2 or z.shape[1] != self.latent_sizes[-1]:
            raise ValueError(f"z must be [N, {self.latent_sizes[-1]}]; got shape {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError("z contains NaN or inf")
        out = self._signatures["decode"](z=tf.constant(z))
        return out["probs" if "probs" in out else "mean"].numpy()

    def sample(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """n images drawn from the model: {"images", the likelihood's parameters ("probs" or
        "mean" and "std"), each [n, *data_shape], "z": [n, d_L]}."""
        n = check_count("n", n, minimum=0)
        seed = check_seed(seed)
        out = self._signatures["sample"](
            n=self._scalar("sample", "n", n), seed=self._scalar("sample", "seed", seed)
        )
        return {name: value.numpy() for name, value in out.items()}


def load_exported(path: str) -> ExportedModel:
    """Loads a SavedModel written by `export_saved_model` (see `ExportedModel`).

    Raises:
      FileNotFoundError: `path` holds no SavedModel, or one without iwae_tf's metadata.
      OSError: The SavedModel or its metadata is damaged (see `load_saved_model`).
    """
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path} holds no SavedModel (saved_model.pb)")
    return ExportedModel(path)
