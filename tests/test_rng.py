"""Tests of iwae_tf.rng: Philox-4x32-10 against published and TensorFlow's own outputs."""

import math

import numpy as np
import pytest
import tensorflow as tf

from iwae_tf import rng


def _words(*values: int) -> tuple[tf.Tensor, ...]:
    return tuple(tf.constant(v, tf.uint32) for v in values)


# Known-answer vectors of Random123 (kat_vectors, "philox4x32 10"): counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_matches_random123_known_answers(counter, key, expected):
    out = rng.philox4x32(_words(*counter), _words(*key))
    assert [int(w) for w in out] == list(expected)


def _tensorflow_philox_words(size: int, seed: tuple[int, int]) -> np.ndarray:
    """TensorFlow's own Philox kernel's first `size` words under `seed`'s low words."""
    key = np.uint64(seed[0] % 2**32) | (np.uint64(seed[1] % 2**32) << np.uint64(32))
    return tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=[4 * math.ceil(size / 4)],
        key=tf.constant([key], tf.uint64),
        counter=tf.constant([0, 0], tf.uint64),
        alg=1,  # Philox.
        dtype=tf.uint32,
    ).numpy()[:size]


def _normals_from_tensorflow_philox(size: int, seed: tuple[int, int]) -> np.ndarray:
    """The documented transform applied to TensorFlow's own Philox kernel's words."""
    j = (_tensorflow_philox_words(size, seed) >> 9).astype(np.float64)
    return tf.math.ndtri(tf.constant((j + 0.5) * 2.0**-23, tf.float32)).numpy()


@pytest.mark.parametrize("seed", [(0, 0), (7, -3), (-(2**31), 2**31 - 1)])
def test_stateless_normal_is_tensorflows_philox_stream(seed):
    size = 1003  # Not a multiple of the 4 words per counter.
    ours = rng.stateless_normal([size], tf.constant(seed, tf.int32)).numpy()
    np.testing.assert_array_equal(ours, _normals_from_tensorflow_philox(size, seed))


def test_same_values_with_and_without_xla_and_for_any_shape():
    seed = tf.constant([3, 4], tf.int32)
    eager = rng.stateless_normal([5, 7, 3], seed)
    compiled = tf.function(rng.stateless_normal, jit_compile=True)([5, 7, 3], seed)
    # The Philox words are equal; XLA's inverse CDF may round differently in the last place.
    np.testing.assert_allclose(eager.numpy(), compiled.numpy(), rtol=1e-6, atol=1e-6)
    flat = rng.stateless_normal([105], seed)
    # The shape only arranges one stream: a reshaped draw of equal size is the same draw.
    np.testing.assert_array_equal(eager.numpy().ravel(), flat.numpy())
    other = rng.stateless_normal([105], tf.constant([3, 5], tf.int32))
    assert np.mean(other.numpy() == flat.numpy()) < 0.05


def test_draws_are_standard_normal():
    n = 1_000_000
    z = rng.stateless_normal([n], tf.constant([11, 12], tf.int32)).numpy().astype(np.float64)
    # Mean and variance within 5 standard errors of N(0, 1)'s.
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1.0) < 5 * math.sqrt(2 / n)
    assert np.abs(z).max() <= 5.33  # The inverse CDF's grid ends at 2^-24.
    # Kolmogorov-Smirnov distance to the N(0, 1) CDF, against the 0.1% critical value.
    z.sort()
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    empirical = np.arange(1, n + 1) / n
    distance = max(np.max(empirical - cdf), np.max(cdf - (empirical - 1 / n)))
    assert distance < 1.95 / math.sqrt(n)


def test_draws_need_a_seed():
    # A stateful fallback would ignore tf.random.set_seed under XLA (issue: every run shared
    # one noise stream); there is none.
    with pytest.raises(ValueError, match="seed"):
        rng.normal([10], None)


def test_seed_vocabulary():
    base = rng.from_int(7)
    np.testing.assert_array_equal(base.numpy(), [7, rng.EVALUATION_STREAM])
    np.testing.assert_array_equal(rng.from_int(7, rng.TRAIN_STREAM).numpy(), [7, 1])
    np.testing.assert_array_equal(
        rng.step_seed(7, rng.TRAIN_STREAM, 5).numpy(), rng.fold_in(rng.from_int(7, 1), 5).numpy()
    )
    # fold_in: two Philox words of counter (index low, index high, seed highs ^ tag) under the
    # key of the seed's low words, computed here from the tested Philox bijection.
    seed = tf.constant([2**33 + 5, 9], tf.int64)  # a high word, to see it used
    words = rng.philox4x32(_words(3, 0, 2, 0 ^ 0x0F01D1), _words(5, 9))
    np.testing.assert_array_equal(rng.fold_in(seed, 3).numpy(), [int(words[0]), int(words[1])])
    # The index's dtype does not matter (TensorFlow's own stateless_fold_in differs).
    for index in (tf.constant(3, tf.int32), tf.constant(3, tf.int64), 3):
        np.testing.assert_array_equal(rng.fold_in(seed, index), rng.fold_in(seed, 3))
    # Distinct steps, streams and integer seeds give distinct keys for the noise.
    keys = {
        tuple(rng.step_seed(s, stream, step).numpy())
        for s in (0, 1)
        for stream in (rng.TRAIN_STREAM, rng.VALIDATION_STREAM)
        for step in range(50)
    }
    assert len(keys) == 2 * 2 * 50
    children = {tuple(c.numpy()) for c in rng.split(base, 8)}
    assert len(children) == 8 and not children & {
        tuple(rng.fold_in(base, i).numpy()) for i in range(8)
    }


def test_seed_derivation_is_the_same_under_xla():
    """TensorFlow's stateless_fold_in / split may pick another algorithm under XLA; ours not."""

    def derive(seed, step):
        child = rng.fold_in(seed, step)
        return tf.stack([child, *rng.split(child, 3)])

    seed = rng.from_int(11, rng.TRAIN_STREAM)
    step = tf.constant(123456789012, tf.int64)
    eager = derive(seed, step).numpy()
    compiled = tf.function(derive, jit_compile=True)(seed, step).numpy()
    np.testing.assert_array_equal(eager, compiled)


def test_signs_are_fair_and_seeded():
    n = 200_000
    s = rng.signs([n], tf.constant([1, 2], tf.int32)).numpy()
    assert set(np.unique(s)) == {-1.0, 1.0}
    assert abs(s.mean()) < 5 / math.sqrt(n)
    # Adjacent draws are uncorrelated.
    assert abs(np.mean(s[1:] * s[:-1])) < 5 / math.sqrt(n)
    np.testing.assert_array_equal(rng.signs([n], tf.constant([1, 2], tf.int32)).numpy(), s)


def test_different_seeds_differ_under_xla():
    """The bug this guards: under XLA, draws keyed by tf.random.uniform ignored the seed."""
    compiled = tf.function(lambda seed: rng.normal([64], seed), jit_compile=True)
    first = compiled(rng.step_seed(1, rng.TRAIN_STREAM, 0)).numpy()
    second = compiled(rng.step_seed(2, rng.TRAIN_STREAM, 0)).numpy()
    assert np.mean(first == second) < 0.05
    np.testing.assert_array_equal(compiled(rng.step_seed(1, rng.TRAIN_STREAM, 0)).numpy(), first)


def _per_element_words_with_wrong_counter(shape: list[int], seed: tf.Tensor) -> tf.Tensor:
    """A deliberately wrong per-element layout (counter e instead of e div 4): the control."""
    element = tf.bitcast(tf.reshape(tf.range(int(np.prod(shape))), shape), tf.uint32)
    zeros = tf.zeros_like(element)
    low, _ = rng._low_high(seed)
    words = rng.philox4x32((element, zeros, zeros, zeros), tf.unstack(low))
    lane = tf.bitwise.bitwise_and(element, tf.constant(3, tf.uint32))
    low_lanes = tf.where(lane == 0, words[0], words[1])
    return tf.where(lane < 2, low_lanes, tf.where(lane == 2, words[2], words[3]))


@pytest.mark.parametrize("shape", [[1003], [5, 7, 3], [2, 1, 6]])
def test_per_element_layout_is_the_same_stream(shape):
    seed_values = (7, -3)
    seed = tf.constant(seed_values, tf.int32)
    expected = _tensorflow_philox_words(int(np.prod(shape)), seed_values).reshape(shape)

    def per_element(fn):
        def run(seed):
            with rng.per_element_draws():
                return fn(shape, seed)

        return run

    # Words: bit-equal to TensorFlow's Philox kernel, eagerly and under XLA (integer ops).
    for run in (per_element(rng._words), tf.function(per_element(rng._words), jit_compile=True)):
        np.testing.assert_array_equal(run(seed).numpy(), expected)
    np.testing.assert_array_equal(rng._words(shape, seed).numpy(), expected)
    # Normals within float32 rounding of the inverse CDF; signs exactly.
    compiled_normal = tf.function(per_element(rng.stateless_normal), jit_compile=True)
    np.testing.assert_allclose(
        compiled_normal(seed).numpy(), rng.stateless_normal(shape, seed).numpy(), 1e-6, 1e-6
    )
    compiled_signs = tf.function(per_element(rng.signs), jit_compile=True)
    np.testing.assert_array_equal(compiled_signs(seed).numpy(), rng.signs(shape, seed).numpy())
    # Negative control: the same comparison catches a layout with the wrong counter.
    wrong = _per_element_words_with_wrong_counter(shape, seed).numpy()
    assert np.mean(wrong == expected) < 0.5


def test_per_element_layout_is_scoped():
    seed = tf.constant([1, 2], tf.int32)
    with rng.per_element_draws():
        assert rng._PER_ELEMENT.get()
        with rng.per_element_draws():
            pass
        assert rng._PER_ELEMENT.get()  # A nested exit restores, not clears.
    assert not rng._PER_ELEMENT.get()
    with pytest.raises(RuntimeError), rng.per_element_draws():
        raise RuntimeError("the layout must be reset on the way out")
    assert not rng._PER_ELEMENT.get()
    np.testing.assert_array_equal(
        rng._words([9], seed).numpy(), _tensorflow_philox_words(9, (1, 2))
    )
