"""Test log-likelihood, bounds and active units of a trained model, in bounded memory.

**Log-likelihood.** The standard figure of merit (Burda, Grosse & Salakhutdinov 2016, "Importance
Weighted Autoencoders", ICLR, Section 5) is the test negative log-likelihood estimated with
K = 5000 importance samples,

    -log p(x) ~= -log (1/K) sum_{j=1..K} w_j,   w_j = p(x, h_j) / q(h_j | x),

which is itself a draw of the bound L_K and so slightly overestimates the true NLL. With uncertain
network weights every importance sample carries its own weight draws, w_j = p(x, h_j; theta_j) /
q(h_j | x; phi_j), so the same formula estimates the log-likelihood of the mixture model
p(x) = E_{q(theta)}[p(x; theta)] (see `iwae_tf.model`).

K samples for B examples would need K * B decoder rows at once; instead examples are taken in
blocks of b and samples in chunks of c <= K, with b * c <= `max_rows`, and the chunks are
combined with a running log-sum-exp,

    log sum_j w_j = logsumexp_chunks( logsumexp_{j in chunk} log w_j ),

which is exact, so memory is bounded by `max_rows` decoder rows whatever K and B are. The chunks
run one after the other (a `tf.while_loop` with `parallel_iterations=1`), so they never coexist.

**Other bounds from the same samples.** The ELBO estimate is (1/K) sum_j log w_j. L_k at the
training k is estimated from the same K samples split into floor(K / k) disjoint groups of k,

    L_k(x) ~= (1 / G) sum_{g=1..G} log (1/k) sum_{j in group g} w_j,

an average of G independent single-draw estimates of L_k (chunks are multiples of k, so groups
never straddle chunks).

**Active units** (Burda et al., Section 5.2): unit u of a stochastic layer is active if

    A_u = Cov_x( E_{q(h|x)}[h_u] ) > 1e-2,

the variance over the data of the unit's posterior mean. E_{q(h|x)}[h_u] is exact for the first
layer of a deterministic encoder; for higher layers (E over the layers below) and for uncertain
encoders (E over the weight posterior too) it is the average, over S samples of everything below,
of the Gaussian mean of layer l: a Rao-Blackwellized estimate whose noise does not include the
layer's own std (which would add about std^2 / S to A_u and could make dead units look active).

**Randomness.** Every draw is stateless (see `iwae_tf.rng`): the same model, data (in the same
batches) and seed give the same numbers in any process. Batch b of a dataset draws with
rng.fold_in(rng.from_int(seed), b), and each example block and sample chunk within it folds in
its own index.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from iwae_tf import bounds, files, rng, serving
from iwae_tf.model import ImportanceWeightedAutoencoder

COMPILED_ROWS_PER_CALL = 5_000
"""Rows per model call of the XLA-compiled path at most. A probe of 500 to 5000 rows per call on
the 784-200-200-50 net (BENCHMARKS.md, "Evaluation") found 5000 as fast as any, and it keeps the
[rows, 784] logits at 16 MB."""

DEFAULT_MAX_ROWS = 5_000
"""Default bound on (sample, example) rows per model call. Without XLA (the exported `score`),
5,000 rows ran 1.7 times faster than 50,000, whose [rows, 784] temporaries of 157 MB each
leave the cache (BENCHMARKS.md, "Evaluation"); 2,000 and 10,000 were no faster."""

ACTIVE_UNIT_THRESHOLD = 1e-2
"""Burda et al.'s threshold on Cov_x(E_q[h_u]) above which a unit counts as active."""


class LogLikelihoodEstimates(NamedTuple):
    """Per-example estimates from K importance samples.

    Attributes:
      log_px: [N] log (1/K) sum_j w_j, the K-sample estimate (and lower bound) of log p(x).
      elbo: [N] (1/K) sum_j log w_j, the ELBO averaged over the same K samples.
      iwae_bound_k: [N] estimates of L_k at k = `group_size`, each the mean of floor(K / k)
        disjoint groups of k of the same samples; None unless a group size was asked for,
        NaN if K < k.
      group_size: The k of `iwae_bound_k`, or None.
    """

    log_px: np.ndarray
    elbo: np.ndarray
    iwae_bound_k: np.ndarray | None = None
    group_size: int | None = None

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


class LogWeightStatistics(NamedTuple):
    """Sufficient statistics of K log-weights per example, all [N] except `num_groups`.

    Attributes:
      log_sum_exp: log sum_j w_j.
      sum: sum_j log w_j.
      group_bound_sum: sum over disjoint groups g of k samples of log (1/k) sum_{j in g} w_j
        (zeros without grouping).
      num_groups: Scalar int32, the number G of those groups (0 without grouping).
    """

    log_sum_exp: tf.Tensor
    sum: tf.Tensor
    group_bound_sum: tf.Tensor
    num_groups: tf.Tensor


def _chunk_statistics(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    num_samples: tf.Tensor | int,
    chunk_size: tf.Tensor | int,
    seed: tf.Tensor,
    group_size: int | None,
) -> LogWeightStatistics:
    """Statistics of num_samples log-weights for every row of x, drawn chunk_size at a time."""
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    chunk_size = tf.convert_to_tensor(chunk_size, tf.int32)
    batch = tf.shape(x)[0]

    def body(
        chunk: tf.Tensor,
        done: tf.Tensor,
        log_sum: tf.Tensor,
        total: tf.Tensor,
        group_sum: tf.Tensor,
        groups: tf.Tensor,
    ) -> tuple[tf.Tensor, ...]:
        size = tf.minimum(chunk_size, num_samples - done)
        log_weights = model.log_weights(x, size, seed=rng.fold_in(seed, chunk))
        log_sum = tf.reduce_logsumexp(
            tf.stack([log_sum, tf.reduce_logsumexp(log_weights, axis=0)]), axis=0
        )
        total += tf.reduce_sum(log_weights, axis=0)
        if group_size:
            # Chunks are multiples of the group size except the last, whose tail is dropped.
            chunk_groups = size // group_size
            grouped = tf.reshape(
                log_weights[: chunk_groups * group_size], [chunk_groups, group_size, batch]
            )
            group_sum += tf.reduce_sum(bounds.log_mean_exp(grouped, axis=1), axis=0)
            groups += chunk_groups
        return chunk + 1, done + size, log_sum, total, group_sum, groups

    zeros = tf.zeros([batch], x.dtype)
    loop_vars = (
        tf.constant(0),
        tf.constant(0),
        tf.fill([batch], tf.constant(-np.inf, x.dtype)),
        zeros,
        zeros,
        tf.constant(0),
    )
    # One chunk at a time: parallel iterations would hold several chunks' activations at once.
    _, _, log_sum, total, group_sum, groups = tf.while_loop(
        lambda chunk, done, *_: done < num_samples, body, loop_vars, parallel_iterations=1
    )
    return LogWeightStatistics(log_sum, total, group_sum, groups)


def _block_and_chunk_sizes(
    num_examples: tf.Tensor, num_samples: tf.Tensor, max_rows: int, group_size: int | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """(examples per block b, samples per chunk c) with b * c <= max_rows where possible.

    Samples are favoured: a chunk holds all K samples if K <= max_rows, so small batches need a
    single chunk; blocks then take as many examples as fit. With grouping, c is a multiple of
    the group size k (at least k, which may exceed max_rows / b for huge k).
    """
    group = max(1, group_size or 1)
    chunk = tf.minimum(num_samples, max_rows)
    block = tf.clip_by_value(max_rows // tf.maximum(chunk, 1), 1, tf.maximum(num_examples, 1))
    chunk = tf.minimum(num_samples, tf.maximum(1, max_rows // block))
    chunk = tf.maximum(group, chunk // group * group)
    return block, chunk


def compiled_chunk_sizes(
    num_samples: int, max_rows: int, group_size: int | None
) -> tuple[int, int, int]:
    """(examples per block b, samples per chunk c, chunks per block) of the compiled path.

    Rows per call are capped at min(max_rows, COMPILED_ROWS_PER_CALL). K is split into
    ceil(K / cap) chunks of equal size c, rounded up to a multiple of the group size, so the
    last chunk draws at most a few samples beyond K, which are masked out.
    """
    group = max(1, group_size or 1)
    rows = min(max_rows, COMPILED_ROWS_PER_CALL)
    cap = max(group, rows // group * group)
    num_chunks = -(-num_samples // cap)
    chunk = -(-num_samples // num_chunks)
    chunk = -(-chunk // group) * group
    return max(1, rows // chunk), chunk, num_chunks


def _compiled_statistics(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    num_samples: int,
    seed: tf.Tensor,
    max_rows: int,
    group_size: int | None,
) -> LogWeightStatistics:
    """`log_weight_statistics` for a Python-int K: the whole batch in one XLA program.

    The last block is padded with zero rows, whose statistics are dropped; within a block,
    chunk j draws c samples with fold_in(fold_in(seed, b), j) and keeps the first
    min(c, K - j c) of them. The program is cached per model and settings
    (`_statistics_program`), so batches of one shape compile once.
    """
    _, chunk, _ = compiled_chunk_sizes(num_samples, max_rows, group_size)
    log_sum, total, group_sum = _statistics_program(model, num_samples, max_rows, group_size)(
        x, seed
    )
    group = group_size or 1
    groups = (num_samples // chunk) * (chunk // group) + (num_samples % chunk) // group
    return LogWeightStatistics(log_sum, total, group_sum, tf.constant(groups if group_size else 0))


_PROGRAMS_ATTRIBUTE = "_iwae_tf_evaluation_programs"


def _programs(model: ImportanceWeightedAutoencoder) -> dict[Any, Any]:
    """The model's cache of compiled evaluation programs, created on first use.

    Kept on the model, untracked by Keras (`object.__setattr__`), so it lives and dies with
    the model: a module-level map would keep every model alive through the programs' closures.
    """
    if not hasattr(model, _PROGRAMS_ATTRIBUTE):
        object.__setattr__(model, _PROGRAMS_ATTRIBUTE, {})
    return getattr(model, _PROGRAMS_ATTRIBUTE)


def _statistics_program(
    model: ImportanceWeightedAutoencoder, num_samples: int, max_rows: int, group_size: int | None
) -> Any:
    """The jit-compiled function (x, seed) -> (log_sum, total, group_sum) of these settings.

    Kept for the model's lifetime: a fresh `tf.function` per call would trace and compile
    again (seconds) for every batch or every call of `estimate_log_likelihood`.
    """
    programs = _programs(model)
    key = (num_samples, max_rows, group_size)
    if key not in programs:
        block, chunk, num_chunks = compiled_chunk_sizes(num_samples, max_rows, group_size)
        group = group_size or 1

        def block_statistics(rows: tf.Tensor, block_seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
            def body(j: tf.Tensor, log_sum: tf.Tensor, total: tf.Tensor, group_sum: tf.Tensor):
                log_weights = model.log_weights(rows, chunk, rng.fold_in(block_seed, j))
                kept = tf.clip_by_value(num_samples - j * chunk, 0, chunk)
                in_chunk = tf.range(chunk)[:, tf.newaxis] < kept
                chunk_log_sum = tf.reduce_logsumexp(
                    tf.where(in_chunk, log_weights, -np.inf), axis=0
                )
                log_sum = tf.reduce_logsumexp(tf.stack([log_sum, chunk_log_sum]), axis=0)
                total += tf.reduce_sum(tf.where(in_chunk, log_weights, 0.0), axis=0)
                if group_size:
                    grouped = tf.reshape(log_weights, [chunk // group, group, block])
                    whole = (tf.range(chunk // group) + 1) * group <= kept
                    bound = bounds.log_mean_exp(grouped, axis=1)
                    group_sum += tf.reduce_sum(tf.where(whole[:, tf.newaxis], bound, 0.0), axis=0)
                return j + 1, log_sum, total, group_sum

            zeros = tf.zeros([block], rows.dtype)
            start = (
                tf.constant(0),
                tf.fill([block], tf.constant(-np.inf, rows.dtype)),
                zeros,
                zeros,
            )
            _, log_sum, total, group_sum = tf.while_loop(
                lambda j, *_: j < num_chunks, body, start, parallel_iterations=1
            )
            return log_sum, total, group_sum

        @tf.function(jit_compile=True)
        def program(x: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
            num_examples = tf.shape(x)[0]
            num_blocks = (num_examples + block - 1) // block
            padding = [[0, num_blocks * block - num_examples]] + [[0, 0]] * (x.shape.rank - 1)
            blocks = tf.reshape(tf.pad(x, padding), [num_blocks, block, *x.shape[1:]])

            def over_blocks(b: tf.Tensor, *arrays: tf.TensorArray) -> tuple[Any, ...]:
                with rng.per_element_draws():  # The same draws, fused faster (rng's docstring).
                    outputs = block_statistics(blocks[b], rng.fold_in(seed, b))
                return (b + 1, *(a.write(b, o) for a, o in zip(arrays, outputs, strict=True)))

            arrays = tuple(tf.TensorArray(x.dtype, size=num_blocks) for _ in range(3))
            _, *arrays = tf.while_loop(
                lambda b, *_: b < num_blocks,
                over_blocks,
                (tf.constant(0), *arrays),
                parallel_iterations=1,
            )
            return tuple(a.concat()[:num_examples] for a in arrays)

        programs[key] = program
    return programs[key]


def log_weight_statistics(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    num_samples: tf.Tensor | int,
    seed: tf.Tensor,
    max_rows: int = DEFAULT_MAX_ROWS,
    group_size: int | None = None,
    jit_compile: bool = False,
) -> LogWeightStatistics:
    """Statistics of K log-weights for every example of x, in bounded memory.

    Examples go through the model in blocks and samples in chunks (see the module docstring),
    both sized so that one model call sees at most about `max_rows` (sample, example) rows.
    Block b's chunk c draws with seed fold_in(fold_in(seed, b), c). Works in and out of
    `tf.function`; `num_samples` may be a tensor.

    Args:
      model: The model whose `log_weights` to sample.
      x: [N, *data_shape] float data.
      num_samples: K, importance samples per example (>= 1).
      seed: int32/int64 [2] stateless seed.
      max_rows: Bound on rows per model call; this, not K or N, sets the memory used.
      group_size: If set, also accumulate L_k over disjoint groups of k = group_size samples.
      jit_compile: With a Python-int K, compile the batch as one XLA program, in static shapes
        (`compiled_chunk_sizes`): the same estimator, with other block and chunk sizes and
        so other draws.

    Returns:
      The statistics, in the order of x.

    Raises:
      ValueError: A Python-int num_samples or max_rows outside [1, 2^31 - 1] (a tensor K is
        the caller's to check, as the exported `score` does in its graph).
    """
    if not isinstance(num_samples, tf.Tensor):
        num_samples = serving.check_count("num_samples", num_samples)
    max_rows = serving.check_count("max_rows", max_rows)
    x = tf.convert_to_tensor(x)
    if jit_compile and isinstance(num_samples, int):
        return _compiled_statistics(model, x, num_samples, seed, max_rows, group_size)
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    num_examples = tf.shape(x)[0]
    block, chunk = _block_and_chunk_sizes(num_examples, num_samples, max_rows, group_size)
    num_blocks = (num_examples + block - 1) // block

    def body(b: tf.Tensor, *outputs: tf.Tensor) -> tuple[tf.Tensor, ...]:
        rows = x[b * block : (b + 1) * block]
        stats = _chunk_statistics(model, rows, num_samples, chunk, rng.fold_in(seed, b), group_size)
        grown = [tf.concat([acc, new], 0) for acc, new in zip(outputs[:3], stats[:3], strict=True)]
        return (b + 1, *grown, stats.num_groups)

    empty = tf.zeros([0], x.dtype)
    _, log_sum, total, group_sum, groups = tf.while_loop(
        lambda b, *_: b < num_blocks,
        body,
        (tf.constant(0), empty, empty, empty, tf.constant(0)),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            tf.TensorShape([]),
        ),
        parallel_iterations=1,
    )
    return LogWeightStatistics(log_sum, total, group_sum, groups)


def score(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    num_samples: tf.Tensor | int,
    seed: tf.Tensor,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example K-sample estimates (log (1/K) sum_j w_j, (1/K) sum_j log w_j).

    This is what the exported `score` signature computes (see `iwae_tf.export`).

    Args:
      model: The model.
      x: [N, *data_shape] data.
      num_samples: K (>= 1), a Python int or an int32 scalar tensor.
      seed: int32/int64 [2] stateless seed.
      max_rows: Bound on rows per model call.

    Returns:
      ([N] log_px estimates, [N] ELBO estimates).
    """
    stats = log_weight_statistics(model, x, num_samples, seed=seed, max_rows=max_rows)
    num = tf.cast(num_samples, stats.sum.dtype)
    return stats.log_sum_exp - tf.math.log(num), stats.sum / num


def _padded_compiled_statistics(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    num_samples: int,
    seed: tf.Tensor,
    max_rows: int,
    group_size: int | None,
    batch_size: int | None,
) -> LogWeightStatistics:
    """`_compiled_statistics` of a batch zero-padded to `batch_size` examples, then cut back.

    A short last batch would otherwise compile a second program; padding at the end changes
    no draw of the real examples, whose blocks and chunks keep their indices.
    """
    num_examples = int(x.shape[0])
    if batch_size and num_examples < batch_size:
        padding = [[0, batch_size - num_examples]] + [[0, 0]] * (x.shape.rank - 1)
        x = tf.pad(x, padding)
    stats = _compiled_statistics(model, x, num_samples, seed, max_rows, group_size)
    return stats._replace(
        log_sum_exp=stats.log_sum_exp[:num_examples],
        sum=stats.sum[:num_examples],
        group_bound_sum=stats.group_bound_sum[:num_examples],
    )


def _batches(dataset: tf.data.Dataset, model: ImportanceWeightedAutoencoder) -> Any:
    """The dataset's batches as float32 tensors, each checked like the exported `score`'s
    inputs (`serving.check_images`): a batch of the wrong shape, with NaN, values outside
    [0, 1] or, for a Bernoulli model, grey values would otherwise give a meaningless NLL."""
    decoder = model.decoder
    for i, batch in enumerate(dataset):
        x = batch[0] if isinstance(batch, tuple | list) else batch
        try:
            x = serving.check_images(x, decoder.data_shape, decoder.likelihood.binary)
        except ValueError as e:
            raise ValueError(f"batch {i} of the dataset: {e}") from None
        yield tf.constant(x)


def estimate_log_likelihood(
    model: ImportanceWeightedAutoencoder,
    dataset: tf.data.Dataset,
    num_samples: int = 5000,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = 0,
    group_size: int | None = None,
    jit_compile: bool = True,
) -> LogLikelihoodEstimates:
    """K-sample estimates of log p(x) and the ELBO for every example of a dataset.

    Args:
      model: A trained model.
      dataset: Batches of data [batch, *data_shape] (or (x, ...) tuples).
      num_samples: K importance samples per example.
      max_rows: Bound on decoder rows evaluated at once (block size * chunk size); this, not
        K or the batch size, sets the memory used.
      seed: Integer seed: batch i draws with rng.fold_in(rng.from_int(seed), i), so results are
        reproducible for the same batching.
      group_size: If set (e.g. the training k), also estimate L_k at k = group_size from
        the same samples (see the module docstring).
      jit_compile: Compile the sampling with XLA (`log_weight_statistics`); about twice as
        fast on CPU (BENCHMARKS.md), with other draws than without.

    Returns:
      The per-example estimates, in dataset order.

    Raises:
      ValueError: num_samples, max_rows or group_size is not an integer in [1, 2^31 - 1];
        the dataset is empty; or a batch is not data of the model (the messages of
        `serving.check_images`, prefixed with the batch's index).
    """
    num_samples = serving.check_count("num_samples", num_samples)
    max_rows = serving.check_count("max_rows", max_rows)
    if group_size is not None:
        group_size = serving.check_count("group_size", group_size)
    base_seed = rng.from_int(seed)

    @tf.function(reduce_retracing=True)
    def batch_stats(x: tf.Tensor, index: tf.Tensor) -> LogWeightStatistics:
        batch_seed = rng.fold_in(base_seed, index)
        return log_weight_statistics(model, x, num_samples, batch_seed, max_rows, group_size)

    log_px, elbo, bound_k = [], [], []
    batch_size = None
    for i, x in enumerate(_batches(dataset, model)):
        if jit_compile:
            stats = _padded_compiled_statistics(
                model, x, num_samples, rng.fold_in(base_seed, i), max_rows, group_size, batch_size
            )
            batch_size = batch_size or int(x.shape[0])
        else:
            stats = batch_stats(x, tf.constant(i))
        log_px.append(stats.log_sum_exp.numpy() - math.log(num_samples))
        elbo.append(stats.sum.numpy() / num_samples)
        groups = int(stats.num_groups)
        bound_k.append(stats.group_bound_sum.numpy() / groups if groups else log_px[-1] * np.nan)
    if not log_px:
        raise ValueError("The dataset is empty.")
    return LogLikelihoodEstimates(
        np.concatenate(log_px),
        np.concatenate(elbo),
        np.concatenate(bound_k) if group_size else None,
        group_size,
    )


@dataclasses.dataclass(frozen=True)
class ActiveUnits:
    """Active units per stochastic layer, bottom first.

    Attributes:
      variances: Per layer, [dims] A_u = Var_x(E_q[h_u | x]) over the data.
      threshold: A unit is active when A_u > threshold.
    """

    variances: tuple[np.ndarray, ...]
    threshold: float = ACTIVE_UNIT_THRESHOLD

    @property
    def counts(self) -> tuple[int, ...]:
        """Number of active units in each stochastic layer."""
        return tuple(int(np.sum(v > self.threshold)) for v in self.variances)

    @property
    def active(self) -> tuple[np.ndarray, ...]:
        """Per layer, a boolean [dims] mask of the active units."""
        return tuple(v > self.threshold for v in self.variances)


def posterior_means(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    num_samples: int,
    seed: tf.Tensor,
) -> list[tf.Tensor]:
    """E_{q(h|x)}[h_l] for every stochastic layer l, each [batch, dims].

    The Gaussian means of layer l averaged over `num_samples` draws of everything below it
    (the layers beneath and, for uncertain encoders, the weights); exact for the first layer
    of a deterministic encoder, whose mean does not depend on any draw.

    Args:
      model: The model.
      x: [batch, *data_shape] data.
      num_samples: S, draws averaged over.
      seed: int32/int64 [2] stateless seed.

    Returns:
      One [batch, dims] tensor per stochastic layer, bottom first.
    """
    posterior = model.encoder(x, num_samples=num_samples, seed=seed)
    return [tf.reduce_mean(gaussian.mean, axis=0) for _, gaussian in posterior]


def active_units(
    model: ImportanceWeightedAutoencoder,
    dataset: tf.data.Dataset,
    threshold: float = ACTIVE_UNIT_THRESHOLD,
    num_samples: int = 100,
    seed: int = 0,
) -> ActiveUnits:
    """Counts the active units of every stochastic layer over a dataset (Burda et al.).

    Args:
      model: The model.
      dataset: Batches of data [batch, *data_shape] (or (x, ...) tuples).
      threshold: A unit is active when Var_x(E_q[h_u | x]) > threshold.
      num_samples: Draws S averaged over for E_q[h_u | x] (see `posterior_means`); the
        first layer of a deterministic encoder needs none and computes it exactly.
      seed: Integer seed of those draws (batch i uses rng.fold_in(rng.from_int(seed), i)).

    Returns:
      The per-unit variances and the threshold.
    """
    base_seed = rng.from_int(seed)

    @tf.function(reduce_retracing=True)
    def batch_means(x: tf.Tensor, index: tf.Tensor) -> list[tf.Tensor]:
        batch_seed = rng.fold_in(base_seed, index)
        return posterior_means(model, x, num_samples, batch_seed)

    # Shifted float64 sums: Var = (sum (m - s)^2 - (sum (m - s))^2 / N) / (N - 1), with the
    # first batch's mean as shift s, stays accurate when the means are far from 0.
    count, shifts, sums, squares = 0, None, None, None
    for i, x in enumerate(_batches(dataset, model)):
        means = [m.numpy().astype(np.float64) for m in batch_means(x, tf.constant(i))]
        if shifts is None:
            shifts = [m.mean(axis=0) for m in means]
            sums = [np.zeros_like(s) for s in shifts]
            squares = [np.zeros_like(s) for s in shifts]
        for m, s, total, square in zip(means, shifts, sums, squares, strict=True):
            total += np.sum(m - s, axis=0)
            square += np.sum((m - s) ** 2, axis=0)
        count += len(means[0])
    if count < 2:
        raise ValueError(f"Active units need at least 2 examples, got {count}.")
    variances = tuple(
        (square - total**2 / count) / (count - 1)
        for total, square in zip(sums, squares, strict=True)
    )
    return ActiveUnits(variances, threshold)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Everything `evaluate` measures on one dataset.

    Attributes:
      estimates: Per-example log p(x), ELBO and L_k estimates from the K samples.
      num_samples: K.
      train_k: The training k at which L_k was estimated (None: not estimated).
      active_units: Active units per stochastic layer.
      seed: The seed of the draws.
    """

    estimates: LogLikelihoodEstimates
    num_samples: int
    train_k: int | None
    active_units: ActiveUnits
    seed: int

    def summary(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (nats; NLLs positive, bounds as log-likelihoods)."""
        e = self.estimates
        result: dict[str, Any] = {
            "num_examples": int(len(e.log_px)),
            "num_samples": self.num_samples,
            "seed": self.seed,
            "nll": e.nll,
            "nll_stderr": e.nll_stderr,
            "negative_elbo": e.negative_elbo,
            "negative_elbo_stderr": _stderr(e.elbo),
            "train_k": self.train_k,
            "iwae_bound_train_k": None,
            "iwae_bound_train_k_stderr": None,
            "active_units": list(self.active_units.counts),
            "active_unit_threshold": self.active_units.threshold,
            "latent_sizes": [len(v) for v in self.active_units.variances],
            "active_unit_variances": [v.tolist() for v in self.active_units.variances],
        }
        if e.iwae_bound_k is not None and np.all(np.isfinite(e.iwae_bound_k)):
            result["iwae_bound_train_k"] = float(np.mean(e.iwae_bound_k))
            result["iwae_bound_train_k_stderr"] = _stderr(e.iwae_bound_k)
        return result

    def write_per_example_csv(self, path: str) -> None:
        """Writes index, log_px, elbo (and iwae_bound_k) per example to a CSV file."""
        e = self.estimates
        columns: list[tuple[str, Sequence[float]]] = [("log_px", e.log_px), ("elbo", e.elbo)]
        if e.iwae_bound_k is not None:
            columns.append((f"iwae_bound_k{e.group_size}", e.iwae_bound_k))
        with files.atomic_write(path, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index"] + [name for name, _ in columns])
            for i, values in enumerate(zip(*(c for _, c in columns), strict=True)):
                writer.writerow([i] + [repr(float(v)) for v in values])


def evaluate(
    model: ImportanceWeightedAutoencoder,
    dataset: tf.data.Dataset,
    num_samples: int = 5000,
    train_k: int | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = 0,
    active_unit_samples: int = 100,
    active_unit_threshold: float = ACTIVE_UNIT_THRESHOLD,
    jit_compile: bool = True,
) -> Evaluation:
    """Test NLL with K samples, the ELBO, L_k at the training k and the active units.

    Args:
      model: A trained model.
      dataset: Batches of data [batch, *data_shape], in a fixed order.
      num_samples: K importance samples per example.
      train_k: k at which to estimate L_k from the same samples; default the model's
        `num_importance_samples`.
      max_rows: Bound on rows per model call (sets the memory used).
      seed: Seed of every draw.
      active_unit_samples: Draws averaged over for E_q[h | x] (see `active_units`).
      active_unit_threshold: Activity threshold on Var_x(E_q[h_u | x]).
      jit_compile: Compile the sampling with XLA (see `estimate_log_likelihood`).

    Returns:
      The evaluation.
    """
    train_k = train_k or model.num_importance_samples
    estimates = estimate_log_likelihood(
        model, dataset, num_samples, max_rows, seed, group_size=train_k, jit_compile=jit_compile
    )
    units = active_units(model, dataset, active_unit_threshold, active_unit_samples, seed)
    return Evaluation(estimates, num_samples, train_k, units, seed)
