"""SavedModel export of a trained model; `iwae_tf.serving` loads it and checks inputs.

`export_saved_model` writes a SavedModel (`tf.saved_model.save` of a `tf.Module` holding only
the encoder's and decoder's variables and four `tf.function`s; no Keras objects, so loading
needs neither this package nor tf_keras nor TFP) with these signatures, S = the shape of one
example ([28, 28, 1] for MNIST images, or [D] for rows), d_l = size of stochastic layer l,
L = number of stochastic layers:

    score (also serving_default)
        inputs:  x [N, *S] float32 in [0, 1] ({0, 1} for Bernoulli models); k [] int64 >= 1;
                 seed [] int64
        outputs: log_px [N] = log (1/k) sum_j w_j, the k-sample estimate of log p(x)
                 elbo   [N] = (1/k) sum_j log w_j
    encode
        inputs:  x [N, *S] float32, as for score
        outputs: h<l>_mean, h<l>_std [N, d_l] for l = 1..L (e.g. h1_mean, h1_std)
    decode
        inputs:  z [N, d_L] float32, the top stochastic layer
        outputs: p(x | z)'s parameters, each [N, *S]: probs (Bernoulli) or mean, std (Gaussian)
    sample
        inputs:  n [] int64 >= 0; seed [] int64
        outputs: images [n, *S] float32 drawn from p(x | z) ({0, 1} for Bernoulli models);
                 the parameters as for decode; z [n, d_L]

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
* `sample` is `model.sample_images`: ancestral sampling from the mixture model, with seed
  split(from_int(seed), 2)[0]: h_L ~ N(0, I), h_l ~ p(h_l | h_{l+1}), with a seeded draw of
  the uncertain weights per image (per-row kinds) or per call (reparameterization); then
  images ~ Bernoulli(probs) with split(...)[1].
* `encode` and `decode` are deterministic (`Encoder.posterior_mean`, `Decoder.decode`):
  uncertain layers use their posterior-mean weights, and between stochastic layers the
  Gaussian means are propagated (encode: h_l given the mean of h_{l-1}; decode: h_l = mean of
  p(h_l | h_{l+1}) down to p(x | h_1)). For the first stochastic layer of a deterministic
  encoder, encode's h1_mean / h1_std are exactly q(h_1 | x)'s parameters.

**Bad input** (wrong rank or shape, NaN or inf, values outside [0, 1], grey values for
Bernoulli models, k < 1, n < 0) fails in the graph with the messages listed in
`iwae_tf.serving`, whose `ExportedModel` and `check_images` give the same messages on the host
before any call.

**Metadata.** `metadata.json` in the SavedModel's assets holds what the caller passed (see
`export_metadata` for what training passes) plus what is read off the model: `variant`,
`objective`, `objective_parameters`, `architecture` (data_shape, data_size, latent_sizes,
hidden_sizes, conv_filters), `likelihood` (name, min_std), `layer_types` (encoder, decoder),
`training_k`, `kl_weight`, `max_rows`, `signatures`, `input_policy`, `versions` (iwae_tf,
tensorflow, tf_keras, tensorflow_probability, numpy, python) and `format_version`.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import platform
import shutil
import tempfile
from typing import Any

import numpy as np
import tensorflow as tf

from iwae_tf import evaluation, likelihoods, rng, serving
from iwae_tf.model import ImportanceWeightedAutoencoder

FORMAT_VERSION = 4
"""4: inputs and outputs shaped like the data, and the likelihood's parameters; 3: `sample`
draws through `Decoder.sample`; 2: int64 k and n in the signatures (1: int32)."""

# ---------------------------------------------------------------------------------- module


STAGING_INFIX = ".staging-"


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
        self.data_shape = model.decoder.data_shape
        self.binary = model.decoder.likelihood.binary
        self.latent_sizes = tuple(int(s) for s in model.encoder.latent_sizes)
        x_spec = self._x_spec()
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

    def _x_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec([None, *self.data_shape], tf.float32, name="x")

    def _images(self, x: tf.Tensor) -> tf.Tensor:
        return serving.assert_images(x, self.data_shape, binary=self.binary)

    def _score(self, x: tf.Tensor, k: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        x = self._images(x)
        k = serving.assert_scalar(
            k, (k >= 1) & (k <= serving.MAX_COUNT), "k must be in [1, 2^31 - 1]"
        )
        seed = rng.from_int(seed)
        log_px, elbo = evaluation.score(self._model, x, tf.cast(k, tf.int32), seed, self.max_rows)
        return {"log_px": log_px, "elbo": elbo}

    def _encode(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        posterior = self._model.encoder.posterior_mean(self._images(x))
        outputs = {}
        for i, gaussian in enumerate(posterior):
            outputs[f"h{i + 1}_mean"] = gaussian.mean
            outputs[f"h{i + 1}_std"] = gaussian.std
        return outputs

    def _decode(self, z: tf.Tensor) -> dict[str, tf.Tensor]:
        z = serving.assert_latents(z, self.latent_sizes[-1])
        decoder = self._model.decoder
        return decoder.likelihood.parameters(decoder.decode_outputs(z))

    def _sample(self, n: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        n = serving.assert_scalar(
            n, (n >= 0) & (n <= serving.MAX_COUNT), "n must be in [0, 2^31 - 1]"
        )
        draw = self._model.sample_images(tf.cast(n, tf.int32), seed)
        return {"images": draw.images, **draw.parameters, "z": draw.latents}

    def signatures(self) -> dict[str, Any]:
        functions = {
            name: getattr(self, name).get_concrete_function() for name in ("encode", "decode")
        }
        x_spec = self._x_spec()
        seed = _scalar(tf.int64, "seed")
        functions["score"] = self.score.get_concrete_function(x_spec, _scalar(tf.int64, "k"), seed)
        functions["sample"] = self.sample.get_concrete_function(_scalar(tf.int64, "n"), seed)
        return {"serving_default": functions["score"], **functions}


# ------------------------------------------------------------------------------- metadata


def _versions() -> dict[str, str]:
    import tensorflow_probability as tfp
    import tf_keras

    from iwae_tf import __version__

    return {
        "iwae_tf": __version__,
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
        "objective": model.objective.name,
        "objective_parameters": model.objective._asdict(),
        "estimator": model.estimator,
        "architecture": {
            "data_shape": list(decoder.data_shape),
            "data_size": decoder.data_size,
            "latent_sizes": latent_sizes,
            "hidden_sizes": [list(sizes) for sizes in encoder.hidden_sizes],
            "conv_filters": list(encoder.conv_filters),
        },
        "likelihood": decoder.likelihood._asdict(),
        "layer_types": kinds,
        "training_k": int(model.num_importance_samples),
        "kl_weight": float(model.kl_weight),
        "max_rows": int(max_rows),
        "signatures": _signature_docs(decoder.data_shape, decoder.likelihood, latent_sizes),
        "input_policy": serving.INPUT_POLICY,
        "versions": _versions(),
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _signature_docs(
    data_shape: tuple[int, ...], likelihood: likelihoods.Likelihood, latent_sizes: list[int]
) -> dict[str, Any]:
    top = latent_sizes[-1]
    shape = ", ".join(str(d) for d in data_shape)
    values = "{0, 1}" if likelihood.binary else "[0, 1]"
    x = f"float32 [N, {shape}] in {values}"
    encode_out = {}
    for i, size in enumerate(latent_sizes):
        encode_out[f"h{i + 1}_mean"] = f"float32 [N, {size}]"
        encode_out[f"h{i + 1}_std"] = f"float32 [N, {size}]"
    parameters = {name: f"float32 [N, {shape}]" for name in likelihood.parameter_names}
    return {
        "score": {
            "inputs": {"x": x, "k": "int64 []", "seed": "int64 []"},
            "outputs": {"log_px": "float32 [N]", "elbo": "float32 [N]"},
        },
        "encode": {"inputs": {"x": x}, "outputs": encode_out},
        "decode": {"inputs": {"z": f"float32 [N, {top}]"}, "outputs": parameters},
        "sample": {
            "inputs": {"n": "int64 []", "seed": "int64 []"},
            "outputs": {
                "images": f"float32 [n, {shape}]",
                **{name: f"float32 [n, {shape}]" for name in likelihood.parameter_names},
                "z": f"float32 [n, {top}]",
            },
        },
        "serving_default": "score",
    }


def export_metadata(config: Any, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The caller's part of the metadata, from a training run's config and metrics.

    Args:
      config: An `iwae_tf.config.TrainConfig` (any dataclass with `model` and `dataset`).
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

    The SavedModel is written to a hidden sibling directory (.NAME.staging-*) and then
    renamed, so `export_dir` never holds a half-written export; staging directories that a
    killed export to the same `export_dir` left behind are removed first.

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
      OSError: The SavedModel could not be written (e.g. the disk is full); `export_dir` is
        left as it was.
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
    prefix = f".{os.path.basename(export_dir)}{STAGING_INFIX}"
    for stale in glob.glob(os.path.join(glob.escape(parent), glob.escape(prefix) + "*")):
        shutil.rmtree(stale, ignore_errors=True)  # Left by a killed export to the same dir.
    staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            metadata_path = os.path.join(scratch, serving.METADATA_FILE)
            with open(metadata_path, "w") as f:
                f.write(metadata_json + "\n")
            module = _ExportModule(model, max_rows)
            module.metadata_file = tf.saved_model.Asset(metadata_path)
            saved = os.path.join(staging, "saved_model")
            try:
                tf.saved_model.save(module, saved, signatures=module.signatures())
            except tf.errors.OpError as e:  # A full disk, a quota: TensorFlow's file errors.
                raise OSError(
                    f"cannot write the SavedModel to {export_dir}: "
                    f"{e.message.strip().splitlines()[0]}"
                ) from None
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(saved, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir
