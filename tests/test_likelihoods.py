"""Tests of the observation models: densities against float64 references and quadrature."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from iwae_tf import likelihoods, rng

SEED = tf.constant([3, 4], tf.int64)


def gaussian_reference(x, outputs, min_std):
    """float64 log N(x; sigmoid(a), s^2), s = min_std * exp(softplus(b - log min_std))."""
    a, b = np.split(np.asarray(outputs, np.float64), 2, axis=-1)
    log_floor = math.log(min_std)
    std = np.exp(log_floor + np.logaddexp(0.0, b - log_floor))
    return stats.norm.logpdf(x, special.expit(a), std)


def test_bernoulli_log_prob_sums_over_the_image_axes():
    gen = np.random.default_rng(0)
    logits = gen.normal(scale=3.0, size=(2, 5, 4, 3, 2))
    x = (gen.random((5, 4, 3, 2)) < 0.5).astype(np.float32)
    got = likelihoods.get("bernoulli").log_prob(x, tf.constant(logits, tf.float32), 3)
    p = special.expit(logits)
    want = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=(2, 3, 4))
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5)


LOGITS = np.array(
    [-100.0, -88.0, -30.0, -17.0, -5.0, -1.0, -1e-7, 0.0, 1e-7, 0.5, 3.0, 16.0, 30.0, 88.0, 100.0]
)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_softplus_matches_float64_and_has_the_sigmoid_gradient_everywhere(jit_compile):
    logits = tf.constant(LOGITS, tf.float32)

    @tf.function(jit_compile=jit_compile)
    def value_and_gradient(logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = likelihoods.softplus(logits)
        return value, tape.gradient(value, logits)

    value, gradient = value_and_gradient(logits)
    exact = np.logaddexp(0.0, LOGITS.astype(np.float32).astype(np.float64))
    # Absolute error within float32 rounding of the value (|l| ulp) plus the stated 6e-8.
    np.testing.assert_array_less(np.abs(value.numpy() - exact), 6e-8 + 1e-7 * np.abs(exact))
    np.testing.assert_allclose(gradient.numpy(), special.expit(LOGITS), rtol=1e-6, atol=1e-30)
    assert gradient.numpy()[LOGITS == 0.0] == 0.5


def test_softplus_without_its_gradient_would_be_wrong_at_zero():
    # Negative control: autodiff through max(l, 0) + log(1 + e^-|l|) itself gives 1, not
    # sigmoid(0) = 0.5, which is why the function defines its gradient.
    logit = tf.constant(0.0)
    with tf.GradientTape() as tape:
        tape.watch(logit)
        value = tf.maximum(logit, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(logit)))
    assert float(tape.gradient(value, logit)) != 0.5


def test_gaussian_log_prob_matches_float64_and_splits_mean_from_scale():
    gen = np.random.default_rng(1)
    outputs = gen.normal(scale=2.0, size=(3, 4, 4, 2 * 3))  # C = 3 channels, P = 2.
    x = gen.random((3, 4, 4, 3))
    likelihood = likelihoods.get("gaussian", min_std=0.05)
    got = likelihood.log_prob(tf.constant(x, tf.float32), tf.constant(outputs, tf.float32), 3)
    want = gaussian_reference(x, outputs, 0.05).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Negative control: reading the channels interleaved (mean, scale per channel) differs.
    swapped = outputs.reshape(3, 4, 4, 3, 2).swapaxes(-1, -2).reshape(3, 4, 4, 6)
    assert not np.allclose(gaussian_reference(x, swapped, 0.05).sum(axis=(1, 2, 3)), want)


@pytest.mark.parametrize("scale_logit", [-20.0, -2.0, 0.0, 3.0])
def test_gaussian_density_integrates_to_one(scale_logit):
    # Quadrature over one pixel: a density whose normalizer were off (a missing log sigma, a
    # sigma^2 for a sigma) would integrate to something else.
    likelihood = likelihoods.get("gaussian", min_std=0.01)
    outputs = tf.constant([[0.3, scale_logit]], tf.float32)
    std = float(likelihood.parameters(outputs)["std"][0, 0])
    mean = float(likelihood.parameters(outputs)["mean"][0, 0])
    grid = np.linspace(mean - 12 * std, mean + 12 * std, 20001, dtype=np.float64)
    log_density = likelihood.log_prob(
        tf.constant(grid[:, None], tf.float32), tf.tile(outputs, [len(grid), 1]), 1
    )
    total = np.trapz(np.exp(np.asarray(log_density, np.float64)), grid)
    assert abs(total - 1.0) < 1e-3, total


def test_gaussian_scale_has_a_smooth_floor_that_caps_each_pixel_density():
    likelihood = likelihoods.get("gaussian", min_std=0.01)
    scale_logits = np.linspace(-60.0, 5.0, 200).astype(np.float32)
    outputs = tf.constant(np.stack([np.zeros_like(scale_logits), scale_logits], axis=1))
    std = likelihood.parameters(outputs)["std"].numpy()[:, 0]
    assert std.min() >= 0.01 * (1 - 1e-6)
    np.testing.assert_allclose(std[0], 0.01, rtol=1e-5)  # Far below: at the floor.
    np.testing.assert_allclose(std[-1], math.exp(5.0), rtol=1e-3)  # Far above: exp(logit).
    assert (
        np.all(np.diff(std) >= 0) and std[-1] > std[180] > std[170] > 0.0101
    )  # Rises above the floor.
    # A constant pixel at the mean gets at most -log(min_std) - log(2 pi) / 2 nats.
    x = tf.fill([len(scale_logits), 1], 0.5)
    log_p = likelihood.log_prob(x, outputs, 1).numpy()
    cap = -math.log(0.01) - 0.5 * math.log(2 * math.pi)
    assert log_p.max() <= cap + 1e-4 and log_p.max() > cap - 1e-3


def test_output_bias_starts_the_mean_at_the_mean_image():
    mean_image = np.random.default_rng(2).random((4, 3, 2))
    for name in likelihoods.LIKELIHOODS:
        likelihood = likelihoods.get(name)
        bias = likelihood.output_bias(mean_image)
        assert bias.shape == (4, 3, 2 * likelihood.params_per_pixel)
        np.testing.assert_allclose(
            likelihood.mean(tf.constant(bias[np.newaxis])).numpy()[0],
            np.clip(mean_image, 1e-3, 1 - 1e-3),
            rtol=1e-5,
        )


def test_samples_follow_the_parameters():
    draws = 20000
    bernoulli = likelihoods.get("bernoulli")
    logits = tf.fill([draws, 2], 0.7)
    x = bernoulli.sample(logits, SEED).numpy()
    assert set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_allclose(x.mean(axis=0), special.expit(0.7), atol=0.02)
    gaussian = likelihoods.get("gaussian", min_std=0.01)
    outputs = tf.tile(tf.constant([[0.4, -1.5]]), [draws, 1])
    params = gaussian.parameters(outputs)
    x = gaussian.sample(outputs, SEED).numpy()[:, 0]
    std = float(params["std"][0, 0])
    np.testing.assert_allclose(x.mean(), float(params["mean"][0, 0]), atol=4 * std / 140)
    np.testing.assert_allclose(x.std(), std, rtol=0.03)
    assert not np.array_equal(x, gaussian.sample(outputs, rng.fold_in(SEED, 1)).numpy()[:, 0])


@pytest.mark.parametrize("name, min_std", [("poisson", 0.01), ("gaussian", 0.0), ("gaussian", 1)])
def test_bad_settings_are_refused(name, min_std):
    with pytest.raises(ValueError):
        likelihoods.get(name, min_std)
