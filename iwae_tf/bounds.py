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

and they coincide for k = 1.
"""

from __future__ import annotations

import tensorflow as tf

OBJECTIVES = ("iwae", "vae")


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


def objective(log_weights: tf.Tensor, name: str) -> tf.Tensor:
    """The per-example training objective `name` ("iwae" or "vae"), to be maximized.

    Args:
      log_weights: [k, batch] tensor of log-weights.
      name: One of `OBJECTIVES`.

    Returns:
      [batch] tensor of objective values.

    Raises:
      ValueError: If `name` is not a known objective.
    """
    if name == "iwae":
        return iwae_bound(log_weights)
    if name == "vae":
        return elbo(log_weights)
    raise ValueError(f"Unknown objective {name!r}; expected one of {OBJECTIVES}.")
