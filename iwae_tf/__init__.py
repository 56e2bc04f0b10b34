"""iwae_tf: importance-weighted autoencoders (VAE, IWAE, IWAE with uncertain weights) on tf_keras.

Where things are:

* `iwae_tf.bounds`: log-weights -> the k-sample bound L_k, the ELBO and other objectives.
* `iwae_tf.estimators`: the encoder's gradient estimators (reparam, STL, DReG), as surrogates.
* `iwae_tf.rng`: the one seed vocabulary (from_int, split, fold_in) and stateless draws.
* `iwae_tf.layers`: dense and conv layers, deterministic or with uncertain (Gaussian) weights.
* `iwae_tf.likelihoods`: p(x | h_1), Bernoulli for binary data and Gaussian for intensities.
* `iwae_tf.networks`: the encoder q(h|x) and decoder p(x, h), MLP or conv; they own sampling.
* `iwae_tf.model`: the trainable model (log_weights, train_step, test_step), `build_model`.
* `iwae_tf.config`: `TrainConfig`, every setting of a run; `iwae_tf.train` runs one.
* `iwae_tf.data`: tfds builders and tf.data pipelines for any TFDS image dataset.
* `iwae_tf.evaluation`: test NLL with K importance samples, active units.
* `iwae_tf.export` writes SavedModels; `iwae_tf.serving` loads them (TensorFlow alone).
* `iwae_tf.experiments`: the harness (presets, reproduction grids, plots, benchmarks).

Submodules and the names below are imported on first use, so that `import iwae_tf.serving`
loads neither Keras nor TFP.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "VARIANTS": "iwae_tf.model",
    "ImportanceWeightedAutoencoder": "iwae_tf.model",
    "build_model": "iwae_tf.model",
    "TrainConfig": "iwae_tf.config",
    "make_model": "iwae_tf.train",
    "train_and_evaluate": "iwae_tf.train",
    "elbo": "iwae_tf.bounds",
    "iwae_bound": "iwae_tf.bounds",
    "log_mean_exp": "iwae_tf.bounds",
    "estimate_log_likelihood": "iwae_tf.evaluation",
    "export_saved_model": "iwae_tf.export",
    "load_exported": "iwae_tf.serving",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
