"""Importance-weighted bounds on log p(x), computed from log-weights.

For an example x, draw z_1, ..., z_k independently from q(z|x) and form the importance
weights w_i = p(x, z_i) / q(z_i|x). The k-sample importance-weighted bound of Burda, Grosse
& Salakhutdinov (2016, "Importance Weighted Autoencoders", ICLR) is

    L_k(x) = E[ log (1/k) sum_i w_i ] <= log p(x),

with L_1 the evidence lower bound (ELBO) of Kingma & Welling (2014) and L_k increasing in k
towards log p(x). Everything here takes the log-weights log w_i, shaped [k, batch], and works
in log space with a max-shifted log-sum-exp, so that it stays finite and accurate with
log-weights around -1e4 and k in the thousands.

The two training objectives compared by Burda et al. are

    iwae:  log (1/k) sum_i w_i             (the k-sample bound)
    vae:   (1/k) sum_i log w_i             (the mean of k single-sample ELBO estimates)

and they coincide for k = 1. Their relatives, all from the same [k, batch] log-weights:

    vr(alpha):  1/(1 - alpha) log (1/k) sum_i w_i^(1 - alpha)
                Renyi's variational bound (Li & Turner, NeurIPS 2016): alpha = 0 is iwae,
                alpha -> 1 the ELBO, alpha -> -inf max_i log w_i ("VR-max"). For alpha < 0
                it need not be a lower bound on log p(x).
    miwae(M):   (1/M) sum_m log (1/(k/M)) sum_{i in group m} w_i
                the mean of M iwae bounds over disjoint groups of k/M samples
                (Rainforth et al., ICML 2018); M = 1 is iwae, M = k the ELBO.
    ciwae(beta): beta * elbo + (1 - beta) * iwae (Rainforth et al. 2018).
    piwae(M), rws: the decoder maximizes iwae, the encoder something else (miwae(M), and
                Bornschein & Bengio's wake update); their value here is iwae's, and
                `iwae_tf.estimators` gives the encoder its own surrogate.

References:
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    Y. Li, R. E. Turner. Renyi Divergence Variational Inference. NeurIPS 2016.
    T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh.
    Tighter Variational Bounds are Not Necessarily Better. ICML 2018.
    J. Bornschein, Y. Bengio. Reweighted Wake-Sleep. ICLR 2015.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

OBJECTIVES = ("iwae", "vae", "vr", "miwae", "ciwae", "piwae", "rws")

_VR_SERIES_WIDTH = 1e-3
"""Below this |1 - alpha| the VR bound uses its second-order expansion around alpha = 1."""


def log_mean_exp(log_values: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """Computes log (1/k) sum_i exp(v_i) along `axis`, without overflow or underflow.

    Uses log mean exp(v) = m + log mean exp(v - m) with m = max(v), so the largest term is
    exp(0) = 1 and nothing overflows; terms far below the maximum underflow harmlessly to 0.

    Args:
      log_values: Tensor of log-values v.
      axis: The axis to average over, of size k.

    Returns:
      The log of the mean of exp(v) along `axis`, with that axis removed.
    """
    log_values = tf.convert_to_tensor(log_values)
    num_values = tf.cast(tf.shape(log_values)[axis], log_values.dtype)
    return tf.reduce_logsumexp(log_values, axis=axis) - tf.math.log(num_values)


def iwae_bound(log_weights: tf.Tensor) -> tf.Tensor:
    """The k-sample importance-weighted bound, log (1/k) sum_i w_i, per example.

    Args:
      log_weights: [k, batch] tensor of log w_i = log p(x, z_i) - log q(z_i|x).

    Returns:
      [batch] tensor: a single-draw estimate of L_k(x) for each example.
    """
    return log_mean_exp(log_weights, axis=0)


def elbo(log_weights: tf.Tensor) -> tf.Tensor:
    """The evidence lower bound averaged over the k samples, (1/k) sum_i log w_i, per example.

    Args:
      log_weights: [k, batch] tensor of log-weights.

    Returns:
      [batch] tensor: the k-sample average of single-sample ELBO estimates.
    """
    return tf.reduce_mean(log_weights, axis=0)


def vr_bound(log_weights: tf.Tensor, alpha: float) -> tf.Tensor:
    """Renyi's variational bound L_alpha = 1/(1 - alpha) log (1/k) sum_i w_i^(1 - alpha).

    alpha = 0 is `iwae_bound`; alpha = -inf is max_i log w_i. Near alpha = 1, where the formula
    divides a vanishing log-mean-exp by a vanishing 1 - alpha, its expansion
    L_alpha = mean_i log w_i + (1 - alpha) / 2 * var_i log w_i + O((1 - alpha)^2) is used
    for |1 - alpha| < 1e-3 (at alpha = 1 it is the ELBO exactly).

    Args:
      log_weights: [k, batch] tensor of log-weights.
      alpha: A float, or -inf.

    Returns:
      [batch] tensor.
    """
    _check_alpha(alpha)
    if alpha == -math.inf:
        return tf.reduce_max(log_weights, axis=0)
    gap = 1.0 - alpha
    if abs(gap) < _VR_SERIES_WIDTH:
        mean, variance = tf.nn.moments(log_weights, axes=[0])
        return mean + 0.5 * gap * variance
    return log_mean_exp(gap * log_weights, axis=0) / gap


def _check_alpha(alpha: float) -> None:
    if math.isnan(alpha) or alpha == math.inf:
        raise ValueError(f"alpha must be a real number or -inf, got {alpha}.")


def miwae_bound(log_weights: tf.Tensor, num_groups: int) -> tf.Tensor:
    """(1/M) sum_m log mean_{i in group m} w_i over M disjoint groups of k/M samples.

    Group m holds samples m * k/M .. (m + 1) * k/M - 1.

    Args:
      log_weights: [k, batch] tensor of log-weights; k must be a multiple of M.
      num_groups: M >= 1.

    Returns:
      [batch] tensor.
    """
    k = log_weights.shape[0]
    if num_groups < 1 or (k is not None and k % num_groups):
        raise ValueError(f"num_groups must be >= 1 and divide k = {k}, got {num_groups}.")
    groups = tf.reshape(log_weights, tf.concat([[num_groups, -1], tf.shape(log_weights)[1:]], 0))
    return tf.reduce_mean(log_mean_exp(groups, axis=1), axis=0)


def ciwae_bound(log_weights: tf.Tensor, beta: float) -> tf.Tensor:
    """beta * ELBO + (1 - beta) * L_k, for beta in [0, 1].

    Args:
      log_weights: [k, batch] tensor of log-weights.
      beta: The ELBO's share.

    Returns:
      [batch] tensor.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}.")
    return beta * elbo(log_weights) + (1.0 - beta) * iwae_bound(log_weights)


def objective(
    log_weights: tf.Tensor,
    name: str,
    alpha: float = 0.0,
    num_groups: int = 1,
    beta: float = 0.5,
) -> tf.Tensor:
    """The per-example training objective `name` (one of `OBJECTIVES`), to be maximized.

    Args:
      log_weights: [k, batch] tensor of log-weights.
      name: One of `OBJECTIVES`.
      alpha: The alpha of "vr".
      num_groups: The M of "miwae".
      beta: The beta of "ciwae".

    Returns:
      [batch] tensor of objective values (for "piwae" and "rws", the iwae bound that their
      decoders maximize).

    Raises:
      ValueError: If `name` is not a known objective, or its parameter is out of range.
    """
    if name in ("iwae", "piwae", "rws"):
        return iwae_bound(log_weights)
    if name == "vae":
        return elbo(log_weights)
    if name == "vr":
        return vr_bound(log_weights, alpha)
    if name == "miwae":
        return miwae_bound(log_weights, num_groups)
    if name == "ciwae":
        return ciwae_bound(log_weights, beta)
    raise ValueError(f"Unknown objective {name!r}; expected one of {OBJECTIVES}.")


class Objective(NamedTuple):
    """A training objective with its parameter: `Objective("vr", alpha=0.5)(log_weights)`.

    Attributes:
      name: One of `OBJECTIVES`.
      alpha: The alpha of "vr" (-inf: VR-max).
      num_groups: The M of "miwae".
      beta: The beta of "ciwae".
    """

    name: str = "iwae"
    alpha: float = 0.0
    num_groups: int = 1
    beta: float = 0.5

    def __call__(self, log_weights: tf.Tensor) -> tf.Tensor:
        """The per-example objective, [batch], of [k, batch] log-weights."""
        return objective(log_weights, self.name, self.alpha, self.num_groups, self.beta)

    def check(self, k: int) -> None:
        """Raises ValueError, naming the problem, if this objective cannot train with k samples."""
        if self.name not in OBJECTIVES:
            raise ValueError(f"Unknown objective {self.name!r}; expected one of {OBJECTIVES}.")
        if self.name == "vr":
            _check_alpha(self.alpha)
        if self.name in ("miwae", "piwae") and (self.num_groups < 1 or k % self.num_groups):
            raise ValueError(
                f"{self.name} needs num_groups (M) >= 1 dividing k = {k}, got {self.num_groups}."
            )
        if self.name == "ciwae" and not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"ciwae needs beta in [0, 1], got {self.beta}.")
