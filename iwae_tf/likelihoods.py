r"""Observation models p(x | h_1): how the decoder's output becomes a density over images.

The decoder ends in a tensor of *parameters* shaped like the data with `params_per_pixel`
values per pixel stacked on the channel axis: [rows, H, W, C * P] for image data, or
[rows, D * P] for flat rows (data shape [D]). A likelihood splits them, and every density is a
product over the pixels, so log p(x | h_1) is a sum over the data axes.

* `bernoulli` (binary data; Burda et al. 2016): one logit l per pixel,

      log p(x | l) = sum_d [x_d l_d - softplus(l_d)],    mean = sigmoid(l).

* `gaussian` (continuous intensities; the uncertain-weights slides' p(x|z) = prod_d
  N(x_d | mu_d(z), sigma_d^2(z))): a mean and a scale per pixel,

      log p(x | mu, sigma) = sum_d [-(x_d - mu_d)^2 / (2 sigma_d^2) - log sigma_d - log(2 pi)/2],
      mu = sigmoid(a),   log sigma = log s_min + softplus(b - log s_min).

  The mean is squashed into (0, 1), the data's range. The scale has a smooth floor `s_min`
  (`min_std`): a pixel that is constant in the training set (MNIST's borders are always 0)
  would otherwise drive sigma to 0 and the bound to +inf, since a density is unbounded. With
  the floor, each pixel contributes at most -log s_min - log(2 pi)/2 nats (3.69 for
  s_min = 0.01). Above the floor, log sigma ~= b. These are densities: nats of a continuous
  model, not comparable with the Bernoulli's probabilities of binary images, and they depend on
  the intensity scale (x in [0, 1] here; scaling x by c shifts log p(x) by -D log c).

References:
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014 (Frey Face with a
    Gaussian decoder).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from iwae_tf import rng

__all__ = ["LIKELIHOODS", "DEFAULT_MIN_STD", "Likelihood", "get"]

DEFAULT_MIN_STD: float = 0.01
"""Floor of the Gaussian likelihood's standard deviation, in units of the [0, 1] intensities."""

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class Likelihood(NamedTuple):
    """An observation model p(x | decoder parameters), per pixel, summed over the data axes.

    Attributes:
      name: "bernoulli" or "gaussian".
      min_std: The Gaussian's scale floor (unused by the Bernoulli).
    """

    name: str
    min_std: float = DEFAULT_MIN_STD

    @property
    def params_per_pixel(self) -> int:
        """P: parameters per pixel in the decoder's output (1 logit, or a mean and a scale)."""
        return 1 if self.name == "bernoulli" else 2

    @property
    def binary(self) -> bool:
        """Whether the data must be exactly 0 or 1."""
        return self.name == "bernoulli"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of `parameters`' outputs, as the SavedModel's `decode` and `sample` return them."""
        return ("probs",) if self.name == "bernoulli" else ("mean", "std")

    def split(self, outputs: tf.Tensor) -> list[tf.Tensor]:
        """The decoder's raw outputs [..., C * P] as P tensors [..., C]."""
        return tf.split(outputs, self.params_per_pixel, axis=-1)

    def log_prob(self, x: tf.Tensor, outputs: tf.Tensor, event_ndims: int) -> tf.Tensor:
        """log p(x | outputs), summed over the last `event_ndims` axes (the data's).

        Args:
          x: Data, broadcastable against each parameter tensor.
          outputs: The decoder's raw outputs, [..., C * P].
          event_ndims: Rank of one example (1 for flat rows, 3 for [H, W, C] images).

        Returns:
          The log-likelihoods, shaped like the leading axes.
        """
        # Flattened to [..., D] first: XLA on CPU runs the elementwise work over a [..., H, W, 1]
        # layout up to 1.6 times slower than over the same values as rows (measured).
        x = _flatten(x, event_ndims)
        if self.name == "bernoulli":
            logits = _flatten(outputs, event_ndims)
            # One softplus per logit (TFP's Bernoulli.log_prob computes two).
            return tf.reduce_sum(x * logits - softplus(logits), axis=-1)
        mean_logits, scale_logits = (_flatten(t, event_ndims) for t in self.split(outputs))
        log_std = self._log_std(scale_logits)
        z = (x - tf.sigmoid(mean_logits)) * tf.exp(-log_std)
        return tf.reduce_sum(-0.5 * tf.square(z) - log_std - _HALF_LOG_TWO_PI, axis=-1)

    def _log_std(self, scale_logits: tf.Tensor) -> tf.Tensor:
        log_floor = math.log(self.min_std)
        return log_floor + tf.nn.softplus(scale_logits - log_floor)

    def parameters(self, outputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """The distribution's parameters by name: {"probs"} or {"mean", "std"}."""
        if self.name == "bernoulli":
            return {"probs": tf.sigmoid(outputs)}
        mean_logits, scale_logits = self.split(outputs)
        return {"mean": tf.sigmoid(mean_logits), "std": tf.exp(self._log_std(scale_logits))}

    def mean(self, outputs: tf.Tensor) -> tf.Tensor:
        """E[x | outputs]: the Bernoulli's probabilities or the Gaussian's mean."""
        return self.parameters(outputs)["probs" if self.name == "bernoulli" else "mean"]

    def sample(self, outputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Draws x ~ p(x | outputs) with a stateless [2] seed (Gaussian draws are not clipped)."""
        if self.name == "bernoulli":
            return rng.bernoulli(tf.sigmoid(outputs), seed)
        params = self.parameters(outputs)
        return params["mean"] + params["std"] * rng.normal(tf.shape(params["mean"]), seed)

    def output_bias(self, mean_image: np.ndarray | float, clip: float = 1e-3) -> np.ndarray:
        """Initial bias of the decoder's outputs, [..., C * P], from the training mean image.

        Each location parameter starts at logit(clip(mean, clip, 1 - clip)), so that the first
        decoder output is the average image, as Burda et al. do for the Bernoulli. The
        Gaussian's scale logit starts at 0 (sigma ~= 1, above any pixel's spread).
        """
        p = np.clip(np.asarray(mean_image, dtype=np.float64), clip, 1.0 - clip)
        logits = np.log(p / (1.0 - p)).astype(np.float32)
        if self.name == "bernoulli":
            return logits
        return np.concatenate([logits, np.zeros_like(logits)], axis=-1)

    def check(self) -> None:
        """Raises ValueError if the name or the floor is not valid."""
        if self.name not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.name!r}; expected one of {LIKELIHOODS}")
        if not (math.isfinite(self.min_std) and 0.0 < self.min_std < 1.0):
            raise ValueError(f"min_std must be in (0, 1), got {self.min_std}")


@tf.custom_gradient
def softplus(logits: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """softplus(l) = log(1 + e^l) = max(l, 0) + log(1 + e^-|l|), with gradient sigmoid(l).

    Written out rather than `tf.nn.softplus`: XLA on CPU fuses these elementwise ops into
    the likelihood's sum about 10% faster (BENCHMARKS.md, "Evaluation"). log(1 + u) rather than
    log1p(u) for u = e^-|l| in (0, 1]: its absolute error is below 6e-8 nats per pixel, and
    log1p is the slowest op of the three. The gradient is given, since max and |.| have
    none at l = 0.
    """

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        return upstream * tf.sigmoid(logits)

    value = tf.maximum(logits, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(logits)))
    return value, gradient


def _flatten(t: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """[..., *event] -> [..., prod(event)], row-major."""
    t = tf.convert_to_tensor(t)
    if event_ndims == 1:
        return t
    leading = tf.shape(t)[: t.shape.rank - event_ndims]
    return tf.reshape(t, tf.concat([leading, [-1]], axis=0))


LIKELIHOODS: tuple[str, ...] = ("bernoulli", "gaussian")
"""Names accepted by `get`."""


def get(name: str | Likelihood, min_std: float = DEFAULT_MIN_STD) -> Likelihood:
    """The likelihood called `name` (a `Likelihood` passes through), checked."""
    likelihood = name if isinstance(name, Likelihood) else Likelihood(name, float(min_std))
    likelihood.check()
    return likelihood
