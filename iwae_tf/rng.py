"""Seeds and stateless noise: the package's one seed vocabulary, and Philox-4x32-10 normals.

**Seeds.** Every random draw in iwae_tf is a stateless function of an integer seed. A seed is
an integer [2] tensor; `from_int(seed, stream)` makes one, `fold_in` derives a child seed for an
index (a step, a batch, a chunk), and `split` derives several independent ones (one per layer,
per network). Both derive children with the Philox function below, so a seed gives the same
draws with and without XLA. Streams keep purposes apart, so that training noise never reuses
the seeds of evaluation:

    EVALUATION_STREAM  the test-NLL estimate, active units and scoring: batch b uses
                       fold_in(from_int(seed), b)
    TRAIN_STREAM       train step s uses fold_in(from_int(seed, TRAIN_STREAM), s), with s the
                       optimizer's step counter, so a resumed run draws what it would have
    VALIDATION_STREAM  validation step j of every evaluation pass in `fit`
    DATA_STREAM        the static binarization of a training set: example i uses
                       fold_in(from_int(seed, DATA_STREAM), i)

**Noise.** XLA on CPU expands TensorFlow's own random ops into slow code (BENCHMARKS.md has
the measurements). The counter-based generator TensorFlow itself uses, Philox-4x32-10 (Salmon,
Moraes, Dror & Shaw, SC 2011), written with uint32/uint64 tensor ops, compiles under XLA into
one fused loop; each 32-bit output becomes one normal through the inverse CDF, ndtri(u) with u
on the grid (j + 1/2) / 2^23, j = 0 .. 2^23 - 1 (so |z| <= 5.3). The random words are identical
with and without XLA (and equal TensorFlow's own Philox kernel's); the normals agree to float32
rounding, as XLA's inverse CDF may differ from TensorFlow's in the last place.

**Layouts.** Philox turns counter c into 4 words, and a draw of n values takes the words of
counters 0 .. ceil(n/4) - 1 in order: value e is word e mod 4 of counter e div 4. The default
layout computes each counter once and interleaves its 4 words (stack and reshape). Fused
into a consumer by XLA on CPU, that interleave becomes a slow loop: a forward pass of an
IWAEU costs 2.2 times as much as with the per-element layout (BENCHMARKS.md, "Draw
layouts"). Inside `per_element_draws()`, value e computes the Philox words of its own
counter e div 4 and keeps word e mod 4: the same words in the same places, at 4 times the
arithmetic but elementwise, which XLA fuses well into a forward pass. In a gradient step the
recomputation costs more than it saves (1.3 times slower), so only evaluation uses it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import tensorflow as tf

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox-4x32 multipliers.
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments.


def _mulhilo(a: tf.Tensor, multiplier: int) -> tuple[tf.Tensor, tf.Tensor]:
    product = tf.cast(a, tf.uint64) * tf.constant(multiplier, tf.uint64)
    high = tf.bitwise.right_shift(product, tf.constant(32, tf.uint64))
    return tf.cast(high, tf.uint32), tf.cast(product, tf.uint32)  # The cast keeps the low bits.


def philox4x32(
    counters: tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor],
    key: tuple[tf.Tensor, tf.Tensor],
    rounds: int = 10,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The Philox-4x32 bijection of Random123: 4 uint32 counter words -> 4 random words.

    Args:
      counters: Four uint32 tensors of one shape.
      key: Two uint32 scalars.
      rounds: Rounds (10 is the standard, Crush-resistant choice).

    Returns:
      Four uint32 tensors shaped like the counters.
    """
    c0, c1, c2, c3 = counters
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0 += tf.constant(_W0, tf.uint32)
            k1 += tf.constant(_W1, tf.uint32)
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _low_high(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The (low, high) uint32 words of integer values, by bitcast: the same under XLA.

    int32 values are sign-extended first, so an int32 seed and the int64 seed of equal value
    have the same words.
    """
    words = tf.bitcast(tf.cast(values, tf.int64), tf.uint32)  # [..., 2], little-endian
    return words[..., 0], words[..., 1]


_PER_ELEMENT = contextvars.ContextVar("per_element_draws", default=False)


@contextlib.contextmanager
def per_element_draws() -> Iterator[None]:
    """Draws traced inside use the per-element layout (module docstring): same values.

    Read when a function is traced, so enter it inside the traced function's body.
    """
    token = _PER_ELEMENT.set(True)
    try:
        yield
    finally:
        _PER_ELEMENT.reset(token)


def _words(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """uint32 Philox words of `shape`, keyed by the low 32 bits of the two seed entries.

    Element e (in row-major order) is word e mod 4 of counter (e div 4, 0, 0, 0).
    """
    low, _ = _low_high(seed)
    key = tf.unstack(low)
    size = tf.reduce_prod(shape)
    if _PER_ELEMENT.get():
        element = tf.bitcast(tf.reshape(tf.range(size, dtype=tf.int32), shape), tf.uint32)
        counter = tf.bitwise.right_shift(element, tf.constant(2, tf.uint32))
        zeros = tf.zeros_like(counter)
        w0, w1, w2, w3 = philox4x32((counter, zeros, zeros, zeros), key)
        lane = tf.bitwise.bitwise_and(element, tf.constant(3, tf.uint32))
        return tf.where(lane < 2, tf.where(lane == 0, w0, w1), tf.where(lane == 2, w2, w3))
    index = tf.bitcast(tf.range((size + 3) // 4, dtype=tf.int32), tf.uint32)
    zeros = tf.zeros_like(index)
    words = tf.reshape(tf.stack(philox4x32((index, zeros, zeros, zeros), key), axis=-1), [-1])
    return tf.reshape(words[:size], shape)


def stateless_normal(shape: tf.Tensor | list, seed: tf.Tensor) -> tf.Tensor:
    """float32 N(0, 1) draws, a deterministic function of `shape` and the int32 [2] `seed`."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    # The top 23 bits j give u = (j + 1/2) / 2^23, exact in float32 and symmetric about 1/2 in
    # [2^-24, 1 - 2^-24], so that the inverse normal CDF stays finite (|z| <= 5.3).
    j = tf.cast(tf.bitwise.right_shift(_words(shape, seed), tf.constant(9, tf.uint32)), tf.float32)
    return tf.math.ndtri((j + 0.5) * 2.0**-23)


def normal(shape: tf.Tensor | list, seed: tf.Tensor) -> tf.Tensor:
    """N(0, 1) float32 noise of `shape`, a deterministic function of the [2] `seed`.

    A seed is required: a stateful fallback keyed by `tf.random.uniform` would ignore
    `tf.random.set_seed` under XLA, and runs would silently share one noise stream.
    """
    if seed is None:
        raise ValueError("rng.normal needs a seed; derive one with rng.from_int / rng.fold_in.")
    return stateless_normal(shape, seed)


def signs(shape: tf.Tensor | list, seed: tf.Tensor) -> tf.Tensor:
    """float32 Rademacher (+1 / -1 with probability 1/2 each) draws of `shape`, from `seed`."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    top_bit = tf.bitwise.right_shift(_words(shape, seed), tf.constant(31, tf.uint32))
    return 1.0 - 2.0 * tf.cast(top_bit, tf.float32)


def bernoulli(probs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """float32 {0, 1} draws of Bernoulli(probs), elementwise, from a [2] stateless `seed`.

    x = 1[u < p] with u ~ U[0, 1) from TensorFlow's Philox (named, so XLA cannot swap the
    algorithm): P(x = 1) = p, and p = 0 or 1 stay fixed. This is how data are binarized.
    """
    probs = tf.convert_to_tensor(probs, tf.float32)
    uniform = tf.random.stateless_uniform(
        tf.shape(probs), seed=seed, alg=tf.random.Algorithm.PHILOX
    )
    return tf.cast(uniform < probs, tf.float32)


EVALUATION_STREAM = 0
TRAIN_STREAM = 1
VALIDATION_STREAM = 2
DATA_STREAM = 3


def from_int(seed: int | tf.Tensor, stream: int = EVALUATION_STREAM) -> tf.Tensor:
    """The int64 [2] stateless seed [seed, stream] of an integer seed."""
    return tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])


_FOLD_IN_TAG, _SPLIT_TAG = 0x0F01D1, 0x5B1173  # Keep fold_in's and split's counters apart.


def _child_seeds(seed: tf.Tensor, c0: tf.Tensor, c1: tf.Tensor, tag: int) -> tf.Tensor:
    """int64 [..., 2] seeds: two Philox words of counter (c0, c1, high words ^ tag) under the
    key of `seed`'s low words. Our own Philox, so that the derivation is the same with and
    without XLA (TensorFlow's stateless_fold_in / stateless_split do not promise that)."""
    low, high = _low_high(seed)
    key = (low[0], low[1])
    c2 = tf.broadcast_to(high[0], tf.shape(c0))
    c3 = tf.broadcast_to(high[1] ^ tf.constant(tag, tf.uint32), tf.shape(c0))
    w0, w1, _, _ = philox4x32((c0, c1, c2, c3), key)
    return tf.cast(tf.stack([w0, w1], axis=-1), tf.int64)


def fold_in(seed: tf.Tensor, index: int | tf.Tensor) -> tf.Tensor:
    """The child seed of `seed` for an integer `index` (of any integer dtype): int64 [2]."""
    low, high = _low_high(tf.convert_to_tensor(index))
    return _child_seeds(seed, low, high, _FOLD_IN_TAG)


def split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent child seeds of `seed`, each int64 [2]."""
    counters = tf.bitcast(tf.range(num, dtype=tf.int32), tf.uint32)
    return tf.unstack(_child_seeds(seed, counters, tf.zeros_like(counters), _SPLIT_TAG), num)


def step_seed(seed: int | tf.Tensor, stream: int, step: int | tf.Tensor) -> tf.Tensor:
    """The seed of step `step` of `stream`: fold_in(from_int(seed, stream), step)."""
    return fold_in(from_int(seed, stream), step)
