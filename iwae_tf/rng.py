"""Fast N(0, 1) noise for the XLA-compiled train step: Philox-4x32-10 in plain TensorFlow ops.

XLA on CPU expands TensorFlow's random ops into slow code. Measured on the 2-core benchmark
machine (BENCHMARKS.md), in CPU time per normal: `tf.random.normal` 31-37 ns and
`tf.random.stateless_normal` 520-560 ns under XLA, against 12-15 ns for TensorFlow's own kernels
without XLA. The counter-based generator TensorFlow itself uses, Philox-4x32-10 (Salmon, Moraes,
Dror & Shaw, SC 2011), written with uint32/uint64 tensor ops, compiles under XLA into one fused
loop; each 32-bit output becomes one normal through the inverse CDF, ndtri(u) with u on the grid
(j + 1/2) / 2^23, j = 0 .. 2^23 - 1 (so |z| <= 5.3): 6-8 ns per normal under XLA. Without XLA
the same ops take about 20 ns, so this is for XLA-compiled steps. The random words are
identical with and without XLA (and equal TensorFlow's own Philox kernel's); the normals agree
to float32 rounding, as XLA's inverse CDF may differ from TensorFlow's in the last place.
"""

from __future__ import annotations

import tensorflow as tf

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox-4x32 multipliers.
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments.
_INT32_MAX = 2**31 - 1


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


def stateless_normal(shape: tf.Tensor | list, seed: tf.Tensor) -> tf.Tensor:
    """float32 N(0, 1) draws, a deterministic function of `shape` and the int32 [2] `seed`."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    size = tf.reduce_prod(shape)
    key = tf.unstack(tf.bitcast(tf.cast(seed, tf.int32), tf.uint32))
    index = tf.bitcast(tf.range((size + 3) // 4, dtype=tf.int32), tf.uint32)
    zeros = tf.zeros_like(index)
    words = tf.reshape(tf.stack(philox4x32((index, zeros, zeros, zeros), key), axis=-1), [-1])
    # The top 23 bits j give u = (j + 1/2) / 2^23, exact in float32 and symmetric about 1/2 in
    # [2^-24, 1 - 2^-24], so that the inverse normal CDF stays finite (|z| <= 5.3).
    j = tf.cast(tf.bitwise.right_shift(words[:size], tf.constant(9, tf.uint32)), tf.float32)
    return tf.reshape(tf.math.ndtri((j + 0.5) * 2.0**-23), shape)


def normal(shape: tf.Tensor | list, seed: tf.Tensor | None = None) -> tf.Tensor:
    """N(0, 1) noise: stateless given an int32 [2] seed, else keyed by two draws from
    TensorFlow's global random state (so `tf.random.set_seed` makes runs repeat)."""
    if seed is None:
        seed = tf.random.uniform([2], maxval=_INT32_MAX, dtype=tf.int32)
    return stateless_normal(shape, seed)
