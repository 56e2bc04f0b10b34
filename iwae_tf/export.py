"""SavedModel export of a trained model, and a small wrapper to load and use one.

`export_saved_model` writes a SavedModel (`tf.saved_model.save` of a `tf.Module` holding only
the encoder's and decoder's variables and four `tf.function`s; no Keras objects, so loading
needs neither this package nor tf_keras nor TFP) with these signatures, D = data size (784),
d_l = size of stochastic layer l, L = number of stochastic layers:

    score (also serving_default)
        inputs:  x [N, D] float32 in {0, 1}; k [] int64 >= 1; seed [] int64
        outputs: log_px [N] = log (1/k) sum_j w_j, the k-sample estimate of log p(x)
                 elbo   [N] = (1/k) sum_j log w_j
    encode
        inputs:  x [N, D] float32 in {0, 1}
        outputs: h<l>_mean, h<l>_std [N, d_l] for l = 1..L (e.g. h1_mean, h1_std)
    decode
        inputs:  z [N, d_L] float32, the top stochastic layer
        outputs: probs [N, D], the Bernoulli means of p(x | z)
    sample
        inputs:  n [] int64 >= 0; seed [] int64
        outputs: images [n, D] float32 in {0, 1}; probs [n, D]; z [n, d_L]

`score` is `iwae_tf.evaluation.score`: w_j = p(x, h_j) / q(h_j | x) with h_j ~ q(h | x), and,
with uncertain weights, each importance sample j also carrying its own weight draws, so log_px
estimates the mixture model's log p(x) (Burda et al. 2016; Hernandez-Lobato et al.). Memory is
bounded for any N and k: inside the graph, examples are taken in blocks and samples in chunks of
at most `max_rows` rows per model call (recorded in the metadata), combined exactly by a running
log-sum-exp.

How the signatures treat randomness and uncertain weights:

* `score` and `sample` draw. They take an integer `seed` and use only stateless random ops
  (Philox), so the same inputs and seed give the same outputs in every process and on every
  load. Results depend on the whole input (block b of the batch, chunk c of the samples draw
  with fold_in(fold_in([seed, 0], b), c)), so score the same batches to reproduce a score.
* Integer scalars (k, n, seed) are int64 in the signatures, what TF Serving clients send;
  Python ints work too. The restored functions (`loaded.score`, `loaded.sample`) also take
  int32 tensors, e.g. `loaded.score(x=x, k=tf.constant(100), seed=tf.constant(7))`, as long
  as the integer arguments of one call share a dtype.
* `sample` is ancestral sampling from the mixture model: h_L ~ N(0, I), h_l ~ p(h_l | h_{l+1}),
  x ~ Bernoulli(probs), with a seeded draw of the uncertain weights per image (local
  reparameterization) or per call (reparameterization).
* `encode` and `decode` are deterministic: uncertain layers use their posterior-mean weights,
  and between stochastic layers the Gaussian means are propagated (encode: h_l given the mean
  of h_{l-1}; decode: h_l = mean of p(h_l | h_{l+1}) down to p(x | h_1)). For the first
  stochastic layer of a deterministic encoder, encode's h1_mean / h1_std are exactly
  q(h_1 | x)'s parameters.

**Bad input.** Each of these is rejected by the signatures with a `tf.debugging` assertion
inside the graph (an InvalidArgumentError whose message starts with the text below) and, with
a ValueError carrying the same text, by `ExportedModel` and `scripts/score.py` before any call:

    wrong rank         "x must have rank 2, [N, 784]"
    wrong width        "x must have 784 columns (flattened images)"
    NaN or inf         "x contains NaN or inf"
    outside [0, 1]     "x has values outside [0, 1]"
    not binary         "x is not binary"
    k < 1, n < 0       "k must be >= 1", "n must be >= 0"

A non-float dtype can never reach the graph: the signature's float32 input type rejects it
(TensorFlow's own InvalidArgumentError "... expected to be a float tensor but is a int64
tensor"), and the wrapper and script say "x must be a float array". Float16/64 inputs are
converted to float32 by the wrapper and script.

Grey inputs (values strictly inside (0, 1)) are rejected by default: scoring an intensity
image as if it were binary data gives a meaningless number. On request (`binarize=True`,
`scripts/score.py --binarize`) they are binarized as the test set is (`iwae_tf.data.
eval_dataset`): row i becomes Bernoulli(intensity) with the stateless seed (binarize_seed, i).

**Metadata.** `metadata.json` in the SavedModel's assets holds what the caller passed (see
`export_metadata` for what training passes) plus what is read off the model: `variant`,
`objective`, `architecture` (data_size, latent_sizes, hidden_sizes), `layer_types` (encoder,
decoder), `training_k`, `kl_weight`, `max_rows`, `signatures`,
`input_policy`, `versions` (iwae_tf, tensorflow, tf_keras, tensorflow_probability, numpy,
python) and `format_version`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import tempfile
from typing import Any

import numpy as np
import tensorflow as tf

from iwae_tf import data as data_lib
from iwae_tf import evaluation, rng
from iwae_tf.model import ImportanceWeightedAutoencoder
from iwae_tf.networks import Gaussian

FORMAT_VERSION = 2  # 2: int64 k and n in the signatures (1: int32).
METADATA_FILE = "metadata.json"

MSG_RANK = "x must have rank 2, [N, {width}]"
MSG_WIDTH = "x must have {width} columns (flattened images)"
MSG_DTYPE = "x must be a float array"
MSG_NONFINITE = "x contains NaN or inf"
MSG_RANGE = "x has values outside [0, 1]"
MSG_BINARY = "x is not binary"
GREY_HINT = (
    "grey values are rejected; binarize them first (ExportedModel.score(binarize=True), "
    "scripts/score.py --binarize)"
)
INPUT_POLICY = (
    "x must be float32 [N, D] with values exactly 0 or 1. Rejected, with an error naming the "
    "problem: wrong rank or width, a non-float dtype, NaN or inf, values outside [0, 1], and "
    "grey (non-binary) values. Grey images are binarized only on request, as Bernoulli("
    "intensity) with stateless seed (binarize_seed, row index), like the test set."
)


# ----------------------------------------------------------------------------- input checks


def check_images(x: Any, width: int, binary: bool = True) -> np.ndarray:
    """Validates a batch of flattened images on the host; returns it as float32.

    Args:
      x: Array-like [N, width].
      width: Expected number of columns D.
      binary: Whether values must be exactly 0 or 1 (else only within [0, 1]).

    Returns:
      x as a float32 numpy array.

    Raises:
      ValueError: With one of the documented messages (see the module docstring).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{MSG_RANK.format(width=width)}; got shape {x.shape}")
    if x.shape[1] != width:
        raise ValueError(f"{MSG_WIDTH.format(width=width)}; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{MSG_DTYPE} (float32 in {{0, 1}}); got dtype {x.dtype}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{MSG_NONFINITE}: {int(bad.sum())} values, first x[{row}, {col}]")
    outside = (x < 0) | (x > 1)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise ValueError(
            f"{MSG_RANGE}: min {x.min():g}, max {x.max():g}, first x[{row}, {col}] = "
            f"{x[row, col]:g}"
        )
    if binary:
        grey = (x != 0) & (x != 1)
        if grey.any():
            row, col = np.argwhere(grey)[0]
            raise ValueError(
                f"{MSG_BINARY}: {int(grey.sum())} values strictly between 0 and 1, first "
                f"x[{row}, {col}] = {x[row, col]:g}; {GREY_HINT}"
            )
    return x


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
        .map(lambda i, row: data_lib.binarize(row, tf.stack([base, i])))
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


def _checked_x(x: tf.Tensor, width: int, binary: bool = True) -> tf.Tensor:
    """x, after in-graph checks of rank, width, finiteness, range and (optionally) binarity."""
    rank = _runtime_rank(x)
    # shape[-1] of a rank-0 x does not exist; pad so that the width check itself cannot fail.
    last = tf.concat([tf.shape(x), [-1]], axis=0)[tf.maximum(rank - 1, 0)]
    flat = tf.reshape(x, [-1])
    finite = tf.math.is_finite(flat)
    # NaNs are excluded from the range and binarity tests so that each failure has one cause.
    safe = tf.where(finite, flat, tf.zeros_like(flat))
    in_range = (safe >= 0.0) & (safe <= 1.0)
    is_binary = (safe == 0.0) | (safe == 1.0)
    checks = [
        (tf.equal(rank, 2), [MSG_RANK.format(width=width) + "; got rank", rank]),
        (tf.equal(last, width), [MSG_WIDTH.format(width=width) + "; got", last]),
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


def _checked_scalar(value: tf.Tensor, condition: tf.Tensor, message: str) -> tf.Tensor:
    return _assert_then([(condition, [message + "; got", value])], value)


# ----------------------------------------------------------------- posterior-mean networks


def _mean_dense(layer: Any, h: tf.Tensor) -> tf.Tensor:
    """A dense layer with its posterior-mean weights (a deterministic layer as it is)."""
    posterior = getattr(layer, "kernel_posterior", None)
    if posterior is None:
        return layer(h)
    out = tf.matmul(h, posterior.mean())
    if getattr(layer, "bias_posterior", None) is not None:
        out = tf.nn.bias_add(out, layer.bias_posterior.mean())
    return layer.activation(out) if layer.activation is not None else out


def _mean_outputs(mlp: Any, h: tf.Tensor) -> tf.Tensor:
    # networks.GaussianMLP / BernoulliMLP: tanh hidden layers, then the head.
    for layer in [*mlp.hidden, mlp.head]:
        h = _mean_dense(layer, h)
    return h


def _mean_gaussian(mlp: Any, h: tf.Tensor) -> Gaussian:
    # As networks.GaussianMLP: one head computes [mean, log std].
    mean, log_std = tf.split(_mean_outputs(mlp, h), 2, axis=-1)
    return Gaussian(mean, tf.exp(log_std))


# ---------------------------------------------------------------------------------- module


_INT32_MAX = 2**31 - 1


def _scalar(dtype: tf.DType, name: str) -> tf.TensorSpec:
    return tf.TensorSpec([], dtype, name=name)


class _ExportModule(tf.Module):
    """The exported object: the networks' variables and the four signature functions."""

    def __init__(self, model: ImportanceWeightedAutoencoder, max_rows: int) -> None:
        super().__init__(name="iwae_export")
        # Not tracked: saving the Keras model would serialize Keras metadata, trace every
        # layer and drag in the optimizer's slots. Tracking the variables the functions
        # capture is all a SavedModel needs.
        object.__setattr__(self, "_model", model)
        self.network_variables = list(model.encoder.variables) + list(model.decoder.variables)
        self.max_rows = int(max_rows)
        self.data_size = int(model.decoder.output_net.head.units)
        self.latent_sizes = tuple(int(s) for s in model.encoder.latent_sizes)
        x_spec = tf.TensorSpec([None, self.data_size], tf.float32, name="x")
        # `iwae_tf.evaluation.score(model, x, k, rng.from_int(s), max_rows)` computes in memory
        # what the exported `score` returns for seed s (with the export's max_rows).
        self.score = tf.function(self._score)
        self.sample = tf.function(self._sample)
        for dtype in (tf.int64, tf.int32):  # int64 first: the signatures' dtype.
            self.score.get_concrete_function(x_spec, _scalar(dtype, "k"), _scalar(dtype, "seed"))
            self.sample.get_concrete_function(_scalar(dtype, "n"), _scalar(dtype, "seed"))
        self.encode = tf.function(self._encode, input_signature=[x_spec])
        self.decode = tf.function(
            self._decode,
            input_signature=[tf.TensorSpec([None, self.latent_sizes[-1]], tf.float32, name="z")],
        )

    def _score(self, x: tf.Tensor, k: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        x = _checked_x(x, self.data_size)
        k = _checked_scalar(k, (k >= 1) & (k <= _INT32_MAX), "k must be in [1, 2^31 - 1]")
        seed = rng.from_int(seed)
        log_px, elbo = evaluation.score(self._model, x, tf.cast(k, tf.int32), seed, self.max_rows)
        return {"log_px": log_px, "elbo": elbo}

    def _encode(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = _checked_x(x, self.data_size)
        outputs = {}
        for i, block in enumerate(self._model.encoder.blocks):
            gaussian = _mean_gaussian(block, rows)
            outputs[f"h{i + 1}_mean"] = gaussian.mean
            outputs[f"h{i + 1}_std"] = gaussian.std
            rows = gaussian.mean
        return outputs

    def _decode(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        width = self.latent_sizes[-1]
        rank = _runtime_rank(z)
        last = tf.concat([tf.shape(z), [-1]], axis=0)[tf.maximum(rank - 1, 0)]
        h = _assert_then(
            [
                (tf.equal(rank, 2), [f"z must have rank 2, [N, {width}]; got rank", rank]),
                (tf.equal(last, width), [f"z must have {width} columns; got", last]),
                (tf.reduce_all(tf.math.is_finite(z)), ["z contains NaN or inf"]),
            ],
            z,
        )
        decoder = self._model.decoder
        for block in reversed(decoder.blocks):
            h = _mean_gaussian(block, h).mean
        return {"probs": tf.sigmoid(_mean_outputs(decoder.output_net, h))}

    def _sample(self, n: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        n = tf.cast(
            _checked_scalar(n, (n >= 0) & (n <= _INT32_MAX), "n must be in [0, 2^31 - 1]"), tf.int32
        )
        decoder = self._model.decoder
        seeds = [rng.fold_in(rng.from_int(seed), i) for i in range(4)]
        top = tf.random.stateless_normal([n, self.latent_sizes[-1]], seeds[0])
        h = top
        for i in reversed(range(len(decoder.blocks))):
            weight_seed, noise_seed = (rng.fold_in(seeds[1], 2 * i + j) for j in range(2))
            gaussian = decoder.blocks[i](h, seed=weight_seed)
            h = gaussian.mean + gaussian.std * tf.random.stateless_normal(
                tf.shape(gaussian.mean), noise_seed
            )
        probs = tf.sigmoid(decoder.output_net(h, seed=seeds[2]))
        uniform = tf.random.stateless_uniform(tf.shape(probs), seeds[3])
        return {"images": tf.cast(uniform < probs, tf.float32), "probs": probs, "z": top}

    def signatures(self) -> dict[str, Any]:
        functions = {
            name: getattr(self, name).get_concrete_function() for name in ("encode", "decode")
        }
        x_spec = tf.TensorSpec([None, self.data_size], tf.float32, name="x")
        seed = _scalar(tf.int64, "seed")
        functions["score"] = self.score.get_concrete_function(x_spec, _scalar(tf.int64, "k"), seed)
        functions["sample"] = self.sample.get_concrete_function(_scalar(tf.int64, "n"), seed)
        return {"serving_default": functions["score"], **functions}


# ------------------------------------------------------------------------------- metadata


def _hidden_sizes(mlp: Any) -> list[int]:
    return [int(layer.units) for layer in mlp.hidden]


def _versions() -> dict[str, str]:
    import tensorflow_probability as tfp
    import tf_keras

    import iwae_tf

    return {
        "iwae_tf": iwae_tf.__version__,
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tensorflow_probability": tfp.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def model_metadata(model: ImportanceWeightedAutoencoder, max_rows: int) -> dict[str, Any]:
    """What the metadata records about the model itself, read off the built model."""
    encoder, decoder = model.encoder, model.decoder
    kinds = {"encoder": encoder.config.layer_kind, "decoder": decoder.config.layer_kind}
    latent_sizes = [int(s) for s in encoder.latent_sizes]
    return {
        "format_version": FORMAT_VERSION,
        "variant": model.name,
        "objective": model.objective,
        "architecture": {
            "data_size": int(decoder.output_net.head.units),
            "latent_sizes": latent_sizes,
            "hidden_sizes": [_hidden_sizes(block) for block in encoder.blocks],
        },
        "layer_types": kinds,
        "training_k": int(model.num_importance_samples),
        "kl_weight": float(model.kl_weight),
        "max_rows": int(max_rows),
        "signatures": _signature_docs(int(decoder.output_net.head.units), latent_sizes),
        "input_policy": INPUT_POLICY,
        "versions": _versions(),
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _signature_docs(width: int, latent_sizes: list[int]) -> dict[str, Any]:
    top = latent_sizes[-1]
    encode_out = {}
    for i, size in enumerate(latent_sizes):
        encode_out[f"h{i + 1}_mean"] = f"float32 [N, {size}]"
        encode_out[f"h{i + 1}_std"] = f"float32 [N, {size}]"
    return {
        "score": {
            "inputs": {
                "x": f"float32 [N, {width}] in {{0, 1}}",
                "k": "int64 []",
                "seed": "int64 []",
            },
            "outputs": {"log_px": "float32 [N]", "elbo": "float32 [N]"},
        },
        "encode": {"inputs": {"x": f"float32 [N, {width}] in {{0, 1}}"}, "outputs": encode_out},
        "decode": {
            "inputs": {"z": f"float32 [N, {top}]"},
            "outputs": {"probs": f"float32 [N, {width}]"},
        },
        "sample": {
            "inputs": {"n": "int64 []", "seed": "int64 []"},
            "outputs": {
                "images": f"float32 [n, {width}]",
                "probs": f"float32 [n, {width}]",
                "z": f"float32 [n, {top}]",
            },
        },
        "serving_default": "score",
    }


def export_metadata(config: Any, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The caller's part of the metadata, from a training run's config and metrics.

    Args:
      config: An `iwae_tf.train.TrainConfig` (any dataclass with `model` and `dataset`).
      metrics: The run's metrics (as written to metrics.json); a nested "config" entry is
        dropped, since the config is recorded on its own.

    Returns:
      {"variant", "dataset", "test_split", "config", "training_metrics"}: what
      `export_saved_model` expects from a training run. `training_metrics` should hold
      test_nll, test_nll_stderr, eval_k and num_test_examples (the shipped-model test
      compares against them).
    """
    config_dict = dataclasses.asdict(config)
    metrics = {k: v for k, v in (metrics or {}).items() if k != "config"}
    return {
        "variant": config_dict["model"],
        "dataset": config_dict["dataset"],
        "test_split": config_dict.get("test_split"),
        "config": config_dict,
        "training_metrics": metrics,
    }


# -------------------------------------------------------------------------------- export


def export_saved_model(
    model: ImportanceWeightedAutoencoder,
    export_dir: str,
    metadata: dict[str, Any] | None = None,
    *,
    max_rows: int = evaluation.DEFAULT_MAX_ROWS,
    overwrite: bool = False,
) -> str:
    """Writes `model` as a SavedModel with the signatures of the module docstring.

    The SavedModel is written to a temporary sibling directory and then renamed, so
    `export_dir` never holds a half-written export.

    Args:
      model: A built model (called at least once).
      export_dir: Destination directory, e.g. exported/<run name>.
      metadata: JSON-serializable facts about the model, stored in assets/metadata.json next
        to those read off the model (which win on a clash; see `model_metadata`). From a
        training run, pass `export_metadata(config, metrics)`: keys "variant", "dataset",
        "test_split", "config", "training_metrics".
      max_rows: Bound on (sample, example) rows per model call inside `score`.
      overwrite: Replace an existing export at `export_dir`.

    Returns:
      export_dir.

    Raises:
      ValueError: The model is not built, or the metadata is not JSON-serializable.
      FileExistsError: `export_dir` exists (and is not empty) and overwrite is False.
    """
    if not (model.encoder.built and model.decoder.built):
        raise ValueError("The model is not built: call it on a batch before exporting.")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}.")
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir) and os.listdir(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} exists and is not empty; pass overwrite=True")
    full_metadata = {**(metadata or {}), **model_metadata(model, max_rows)}
    try:
        metadata_json = json.dumps(full_metadata, indent=2, sort_keys=True, allow_nan=True)
    except TypeError as e:
        raise ValueError(f"metadata is not JSON-serializable: {e}") from None

    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.", dir=parent)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            metadata_path = os.path.join(scratch, METADATA_FILE)
            with open(metadata_path, "w") as f:
                f.write(metadata_json + "\n")
            module = _ExportModule(model, max_rows)
            module.metadata_file = tf.saved_model.Asset(metadata_path)
            saved = os.path.join(staging, "saved_model")
            tf.saved_model.save(module, saved, signatures=module.signatures())
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(saved, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir


# ------------------------------------------------------------------------------- loading


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata dict of an exported SavedModel directory."""
    with open(os.path.join(path, "assets", METADATA_FILE)) as f:
        return json.load(f)


class ExportedModel:
    """A loaded export: numpy in, numpy out, with host-side input checks.

    Attributes:
      path: The SavedModel directory.
      metadata: Its metadata dict.
      data_size: D, the number of pixels.
      latent_sizes: Sizes of the stochastic layers, bottom first.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.metadata = read_metadata(path)
        self._saved_model = tf.saved_model.load(path)
        self._signatures = self._saved_model.signatures
        architecture = self.metadata["architecture"]
        self.data_size = int(architecture["data_size"])
        self.latent_sizes = tuple(int(s) for s in architecture["latent_sizes"])

    def _images(self, x: Any, binarize: bool, binarize_seed: int) -> tf.Tensor:
        x = check_images(x, self.data_size, binary=not binarize)
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
        """Per-example log_px and elbo of x [N, D] with k importance samples (see `score`).

        Args:
          x: [N, D] float array of 0s and 1s (grey values only with binarize=True).
          k: Importance samples per example.
          seed: Seed of the draws; the same x, k and seed give the same scores.
          binarize: Binarize grey values as Bernoulli(intensity) instead of rejecting them.
          binarize_seed: Seed of that binarization (0, row i: the test set's).

        Returns:
          {"log_px": [N], "elbo": [N]} float32 arrays.

        Raises:
          ValueError: Bad x (see the module docstring) or k < 1.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        out = self._signatures["score"](
            x=self._images(x, binarize, binarize_seed),
            k=self._scalar("score", "k", k),
            seed=self._scalar("score", "seed", seed),
        )
        return {name: value.numpy() for name, value in out.items()}

    def _scalar(self, signature: str, name: str, value: int) -> tf.Tensor:
        # Exports before format 2 took int32 k and n; use whatever the signature declares.
        spec = self._signatures[signature].structured_input_signature[1][name]
        return tf.constant(int(value), spec.dtype)

    def encode(self, x: Any) -> dict[str, np.ndarray]:
        """Posterior means and stds h<l>_mean, h<l>_std [N, d_l] of binary x [N, D]."""
        out = self._signatures["encode"](x=self._images(x, False, 0))
        return {name: value.numpy() for name, value in out.items()}

    def decode(self, z: Any) -> np.ndarray:
        """Bernoulli means [N, D] of p(x | z) for top-layer latents z [N, d_L]."""
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_sizes[-1]:
            raise ValueError(f"z must be [N, {self.latent_sizes[-1]}]; got shape {z.shape}")
        return self._signatures["decode"](z=tf.constant(z))["probs"].numpy()

    def sample(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """n images drawn from the model: {"images", "probs": [n, D], "z": [n, d_L]}."""
        if int(n) < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        out = self._signatures["sample"](
            n=self._scalar("sample", "n", n), seed=self._scalar("sample", "seed", seed)
        )
        return {name: value.numpy() for name, value in out.items()}


def load_exported(path: str) -> ExportedModel:
    """Loads a SavedModel written by `export_saved_model` (see `ExportedModel`).

    Raises:
      FileNotFoundError: `path` holds no such SavedModel.
    """
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path} holds no SavedModel (saved_model.pb)")
    if not os.path.exists(os.path.join(path, "assets", METADATA_FILE)):
        raise FileNotFoundError(f"{path} has no assets/{METADATA_FILE}: not an iwae_tf export")
    return ExportedModel(path)
