"""Test log-likelihood estimates with many importance samples, in bounded memory.

The standard figure of merit (Burda et al. 2016, Section 5) is the test negative
log-likelihood estimated with K = 5000 importance samples,

    -log p(x) ~= -log (1/K) sum_{j=1..K} w_j,   w_j = p(x, h_j) / q(h_j | x),

which is itself the bound L_K and so slightly overestimates the true NLL. K samples for a
batch of B examples would need K * B decoder rows at once; instead the samples are drawn in
chunks of C and combined with a running log-sum-exp,

    log sum_j w_j = logsumexp_c( logsumexp_{j in chunk c} log w_j ),

which is exact, so memory is bounded by C * B rows whatever K is.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from iwae_tf.model import ImportanceWeightedAutoencoder

DEFAULT_MAX_ROWS = 50_000


class LogLikelihoodEstimates(NamedTuple):
    """Per-example estimates from K importance samples.

    Attributes:
      log_px: [N] log (1/K) sum_j w_j, the K-sample estimate (and lower bound) of log p(x).
      elbo: [N] (1/K) sum_j log w_j, the ELBO averaged over the same K samples.
    """

    log_px: np.ndarray
    elbo: np.ndarray

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood over the examples, in nats."""
        return float(-np.mean(self.log_px))

    @property
    def nll_stderr(self) -> float:
        """Standard error of `nll` over examples: std(log_px) / sqrt(N)."""
        return _stderr(self.log_px)

    @property
    def negative_elbo(self) -> float:
        """Mean negative ELBO over the examples, in nats."""
        return float(-np.mean(self.elbo))


def _stderr(values: np.ndarray) -> float:
    if len(values) < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def chunked_log_weight_stats(
    model: ImportanceWeightedAutoencoder, x: tf.Tensor, num_samples: int, chunk_size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Draws num_samples log-weights per example in chunks; returns their statistics.

    Args:
      model: The model whose `log_weights` to sample.
      x: [batch, features] data.
      num_samples: K, total importance samples per example.
      chunk_size: C, samples drawn at once; memory is bounded by C * batch rows.

    Returns:
      ([batch] log sum_j w_j, [batch] sum_j log w_j), over all K samples.
    """
    batch = tf.shape(x)[0]
    log_sum = tf.fill([batch], tf.constant(-np.inf, x.dtype))
    total = tf.zeros([batch], x.dtype)
    full_chunks, remainder = divmod(num_samples, chunk_size)
    sizes = [chunk_size] * full_chunks + ([remainder] if remainder else [])
    for size in sizes:
        # A Python loop keeps each chunk's shape static; chunks are few (K / C).
        log_weights = model.log_weights(x, size)
        log_sum = tf.reduce_logsumexp(
            tf.stack([log_sum, tf.reduce_logsumexp(log_weights, axis=0)]), axis=0
        )
        total += tf.reduce_sum(log_weights, axis=0)
    return log_sum, total


def estimate_log_likelihood(
    model: ImportanceWeightedAutoencoder,
    dataset: tf.data.Dataset,
    num_samples: int = 5000,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> LogLikelihoodEstimates:
    """K-sample estimates of log p(x) and the ELBO for every example of a dataset.

    Args:
      model: A trained model.
      dataset: Batches of binary data [batch, features] (or (x, ...) tuples).
      num_samples: K importance samples per example.
      max_rows: Bound on decoder rows evaluated at once (chunk size * batch); this, not K,
        sets the memory used.

    Returns:
      The per-example estimates, in dataset order.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")

    @tf.function
    def batch_stats(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        chunk_size = max(1, min(num_samples, max_rows // max(1, x.shape[0] or 1)))
        log_sum, total = chunked_log_weight_stats(model, x, num_samples, chunk_size)
        return log_sum - math.log(num_samples), total / num_samples

    log_px, elbo = [], []
    for batch in dataset:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        batch_log_px, batch_elbo = batch_stats(tf.convert_to_tensor(x, tf.float32))
        log_px.append(batch_log_px.numpy())
        elbo.append(batch_elbo.numpy())
    return LogLikelihoodEstimates(np.concatenate(log_px), np.concatenate(elbo))
