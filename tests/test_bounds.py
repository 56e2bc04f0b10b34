"""Tests of iwae_tf.bounds against a linear-Gaussian model whose log p(x) is closed form.

p(z) = N(0, I_d), p(x|z) = N(Wz + b, s^2 I_D), so p(x) = N(x; b, W W^T + s^2 I) and the
posterior is N(m, S) with S = (I + W^T W / s^2)^-1, m = S W^T (x - b) / s^2.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from iwae_tf import bounds

D, LATENT, NOISE = 6, 3, 0.7


@pytest.fixture(scope="module")
def linear_gaussian():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(D, LATENT))
    b = rng.normal(size=D)
    x = rng.normal(size=D) * 2.0
    log_px = stats.multivariate_normal(b, w @ w.T + NOISE**2 * np.eye(D)).logpdf(x)
    post_cov = np.linalg.inv(np.eye(LATENT) + w.T @ w / NOISE**2)
    post_mean = post_cov @ w.T @ (x - b) / NOISE**2
    return dict(w=w, b=b, x=x, log_px=log_px, post_mean=post_mean, post_cov=post_cov)


def log_weights(m, q_mean, q_cov, k, replicates, seed):
    """[k, replicates] log p(x, z) - log q(z), z ~ N(q_mean, q_cov), in float64."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(q_mean, q_cov, size=(k, replicates))
    log_prior = stats.multivariate_normal(np.zeros(LATENT)).logpdf(z)
    residual = m["x"] - (z @ m["w"].T + m["b"])
    log_lik = stats.norm(0.0, NOISE).logpdf(residual).sum(-1)
    log_q = stats.multivariate_normal(q_mean, q_cov).logpdf(z)
    return log_prior + log_lik - log_q


@pytest.mark.parametrize("k", [1, 5, 50])
def test_exact_posterior_gives_log_px_for_every_k(linear_gaussian, k):
    m = linear_gaussian
    lw = log_weights(m, m["post_mean"], m["post_cov"], k, replicates=4, seed=k)
    np.testing.assert_allclose(bounds.iwae_bound(tf.constant(lw)).numpy(), m["log_px"], rtol=1e-10)
    # In float32, as the model computes it.
    np.testing.assert_allclose(
        bounds.iwae_bound(tf.constant(lw, tf.float32)).numpy(), m["log_px"], rtol=1e-6
    )


def test_worse_q_orders_bounds_below_log_px(linear_gaussian):
    m = linear_gaussian
    q_mean = m["post_mean"] + 0.6
    q_cov = 2.0 * np.diag(np.diag(m["post_cov"]))  # mean-field and too wide: a poor q
    replicates = 4000
    means, stderrs = {}, {}
    for k in (1, 5, 50):
        estimates = bounds.iwae_bound(tf.constant(log_weights(m, q_mean, q_cov, k, replicates, k)))
        means[k] = float(np.mean(estimates))
        stderrs[k] = float(np.std(estimates) / np.sqrt(replicates))
    gaps = [
        (means[5] - means[1], stderrs[5] + stderrs[1]),
        (means[50] - means[5], stderrs[50] + stderrs[5]),
        (m["log_px"] - means[50], stderrs[50]),
    ]
    for gap, stderr in gaps:
        assert gap > 6 * stderr, (means, stderrs, m["log_px"])


def test_iwae_and_vae_objectives_coincide_at_k1():
    lw = tf.random.stateless_normal([1, 7], seed=[1, 2]) * 30.0
    np.testing.assert_array_equal(
        bounds.objective(lw, "iwae").numpy(), bounds.objective(lw, "vae").numpy()
    )
    lw5 = tf.random.stateless_normal([5, 7], seed=[1, 2]) * 30.0
    # For k > 1 they differ, by Jensen: log mean w >= mean log w.
    assert np.all(bounds.objective(lw5, "iwae").numpy() > bounds.objective(lw5, "vae").numpy())


def test_log_mean_exp_extreme_log_weights_match_float64_reference():
    rng = np.random.default_rng(3)
    lw64 = -1e4 + rng.normal(scale=20.0, size=(5000, 4))
    lw64[:, 3] = -1e4 + rng.normal(scale=0.01, size=5000)  # nearly equal weights
    reference = np.logaddexp.reduce(lw64, axis=0) - np.log(5000)
    got = bounds.iwae_bound(tf.constant(lw64, tf.float32)).numpy()
    assert np.all(np.isfinite(got))
    # float32 holds -1e4 to ~1e-3 absolute; the answer must be exact to that precision.
    np.testing.assert_allclose(got, reference, atol=2e-3, rtol=0)
    # A naive log(mean(exp(lw))) underflows to -inf here.
    assert np.all(np.isneginf(np.log(np.mean(np.exp(lw64.astype(np.float32)), axis=0))))


def test_log_mean_exp_handles_large_positive_values():
    lw = tf.constant([[1e4, 1e4 - 1.0], [1e4 - 2.0, 1e4]], tf.float32)
    expected = np.logaddexp.reduce([[1e4, 1e4 - 1.0], [1e4 - 2.0, 1e4]], axis=0) - np.log(2)
    np.testing.assert_allclose(bounds.log_mean_exp(lw).numpy(), expected, atol=2e-3)


def test_unknown_objective_is_rejected():
    with pytest.raises(ValueError, match="Unknown objective 'elbo2'"):
        bounds.objective(tf.zeros([2, 3]), "elbo2")


# ------------------------------------------------------------- the importance-weighted family


def random_log_weights(k=12, batch=7, seed=3, scale=30.0, offset=-150.0):
    """float64 [k, batch] log-weights spread over tens of nats, around -150."""
    return offset + scale * np.random.default_rng(seed).standard_normal((k, batch))


def logmeanexp64(values, axis=0):
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.mean(np.exp(values - top), axis=axis, keepdims=True))).squeeze(axis)


def vr64(lw, alpha):
    """Renyi bound in float64 by direct formula (alpha != 1)."""
    return logmeanexp64((1 - alpha) * lw) / (1 - alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.5, -1.0, 2.0, 1.01, 0.99, 50.0, -50.0])
def test_vr_bound_matches_float64(alpha):
    lw = random_log_weights()
    ours = bounds.vr_bound(tf.constant(lw, tf.float32), alpha).numpy()
    np.testing.assert_allclose(ours, vr64(lw, alpha), rtol=1e-5, atol=1e-3)


def test_vr_bound_limits():
    lw = random_log_weights(scale=3.0)
    x = tf.constant(lw, tf.float32)
    np.testing.assert_allclose(bounds.vr_bound(x, 0.0), bounds.iwae_bound(x), rtol=1e-6)
    np.testing.assert_allclose(bounds.vr_bound(x, 1.0), lw.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bounds.vr_bound(x, -np.inf), lw.max(axis=0), rtol=1e-6)
    # Near alpha = 1 (inside the expansion's width) it agrees with the float64 formula.
    for alpha in (1 - 1e-4, 1 + 1e-4):
        np.testing.assert_allclose(bounds.vr_bound(x, alpha), vr64(lw, alpha), atol=2e-4)
    # L_alpha decreases in alpha: VR-max >= iwae >= vr(0.5) >= ELBO >= vr(2).
    ordered = [bounds.vr_bound(x, a).numpy() for a in (-np.inf, 0.0, 0.5, 1.0, 2.0)]
    assert all(np.all(a >= b - 1e-4) for a, b in zip(ordered, ordered[1:], strict=False))
    with pytest.raises(ValueError, match="alpha"):
        bounds.vr_bound(x, np.nan)


def test_vr_bound_at_large_alpha_needs_the_shift():
    # Negative control: the unshifted float32 formula overflows where ours matches float64.
    lw = random_log_weights()
    naive = np.log(np.mean(np.exp(51.0 * lw.astype(np.float32)), axis=0)) / 51.0
    assert not np.all(np.isfinite(naive))
    ours = bounds.vr_bound(tf.constant(lw, tf.float32), -50.0).numpy()
    np.testing.assert_allclose(ours, vr64(lw, -50.0), rtol=1e-5)


@pytest.mark.parametrize("num_groups", [1, 2, 3, 4, 6, 12])
def test_miwae_bound_matches_float64(num_groups):
    lw = random_log_weights(k=12)
    expected = np.mean([logmeanexp64(group) for group in np.split(lw, num_groups, axis=0)], axis=0)
    ours = bounds.miwae_bound(tf.constant(lw, tf.float32), num_groups).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    if num_groups == 1:
        np.testing.assert_allclose(ours, logmeanexp64(lw), rtol=1e-6)  # iwae
    if num_groups == 12:
        np.testing.assert_allclose(ours, lw.mean(axis=0), rtol=1e-6)  # the ELBO


def test_miwae_bound_needs_groups_that_divide_k():
    with pytest.raises(ValueError, match="divide k = 12"):
        bounds.miwae_bound(tf.zeros([12, 3]), 5)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_ciwae_bound_mixes_elbo_and_iwae(beta):
    lw = random_log_weights()
    expected = beta * lw.mean(axis=0) + (1 - beta) * logmeanexp64(lw)
    ours = bounds.ciwae_bound(tf.constant(lw, tf.float32), beta).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="beta"):
        bounds.ciwae_bound(tf.constant(lw, tf.float32), 1.5)


def test_objective_dispatches_with_parameters():
    x = tf.constant(random_log_weights(k=6), tf.float32)
    np.testing.assert_array_equal(bounds.objective(x, "vr", alpha=0.5), bounds.vr_bound(x, 0.5))
    np.testing.assert_array_equal(
        bounds.objective(x, "miwae", num_groups=3), bounds.miwae_bound(x, 3)
    )
    np.testing.assert_array_equal(
        bounds.objective(x, "ciwae", beta=0.2), bounds.ciwae_bound(x, 0.2)
    )
    with pytest.raises(ValueError, match="Unknown objective"):
        bounds.objective(x, "elbo2")
