"""Tests of iwae_tf.estimators: unbiasedness of DReG, STL's landing, and the refusals."""

import numpy as np
import pytest
import tensorflow as tf

from iwae_tf import bounds, estimators, rng
from iwae_tf.bounds import Objective
from iwae_tf.model import build_model

PIXELS, BATCH, K = 12, 4, 5


# ------------------------------------------------------------------ a linear-Gaussian model


def linear_gaussian_parts(q_mean, q_log_std, eps, x=1.3, w=0.8, b=-0.2, s=0.5):
    """LogWeightParts of p(z) = N(0, 1), p(x|z) = N(wz + b, s^2), q = N(q_mean, exp(q_log_std)^2),
    for [k, 1] noise eps: z = q_mean + exp(q_log_std) * eps."""
    std = tf.exp(q_log_std)
    z = q_mean + std * eps

    def normal(value, mean, sd):
        value, mean, sd = (tf.convert_to_tensor(t, tf.float64) for t in (value, mean, sd))
        return -0.5 * tf.square((value - mean) / sd) - tf.math.log(sd) - 0.5 * np.log(2 * np.pi)

    log_joint = normal(z, 0.0, 1.0) + normal(x, w * z + b, s)
    log_q = normal(z, q_mean, std)
    log_q_fixed = normal(z, tf.stop_gradient(q_mean), tf.stop_gradient(std))
    log_q_fixed_sample = normal(tf.stop_gradient(z), q_mean, std)
    return estimators.LogWeightParts(log_joint, log_q, log_q_fixed, log_q_fixed_sample)


def exact_posterior(x=1.3, w=0.8, b=-0.2, s=0.5):
    variance = 1.0 / (1.0 + w**2 / s**2)
    return variance * w * (x - b) / s**2, 0.5 * np.log(variance)


@pytest.mark.parametrize("objective", ["vae", "iwae"])
def test_stl_and_dreg_stick_the_landing_where_reparam_does_not(objective):
    mean, log_std = (tf.Variable(v, dtype=tf.float64) for v in exact_posterior())
    noise = np.random.default_rng(0).standard_normal((20, K, 1))
    for eps in noise:
        grads = {}
        for estimator in ("reparam", "stl", "dreg"):
            if estimator == "dreg" and objective == "vae":
                continue
            with tf.GradientTape() as tape:
                parts = linear_gaussian_parts(mean, log_std, tf.constant(eps))
                surrogate = estimators.surrogates(parts, Objective(objective), estimator)
            grads[estimator] = np.array(tape.gradient(surrogate.encoder, [mean, log_std]))
        # q is the posterior: log w = log p(x) for every z, so the path terms vanish.
        np.testing.assert_allclose(grads["stl"], 0.0, atol=1e-12)
        if "dreg" in grads:
            np.testing.assert_allclose(grads["dreg"], 0.0, atol=1e-12)
        assert np.max(np.abs(grads["reparam"])) > 1e-3  # The score term is still there.


def test_rws_wake_update_moves_q_towards_the_posterior():
    # Wake-phase steps on q from a poor start reduce KL(p(z|x) || q), the divergence the
    # update descends; a step along the negated update (the negative control) increases it.
    post_mean, post_log_std = exact_posterior()

    def kl_p_q(mean, log_std):  # KL(N(pm, ps^2) || N(m, s^2)).
        ps, s = np.exp(post_log_std), np.exp(log_std)
        return np.log(s / ps) + (ps**2 + (post_mean - mean) ** 2) / (2 * s**2) - 0.5

    def run(sign, steps=150, rate=0.1):
        mean, log_std = tf.Variable(-1.0, dtype=tf.float64), tf.Variable(0.5, dtype=tf.float64)
        noise = np.random.default_rng(1).standard_normal((steps, 20, 1))
        for eps in noise:
            with tf.GradientTape() as tape:
                parts = linear_gaussian_parts(mean, log_std, tf.constant(eps))
                encoder = estimators.surrogates(parts, Objective("rws"), "reparam").encoder
            for v, g in zip((mean, log_std), tape.gradient(encoder, [mean, log_std]), strict=True):
                v.assign_add(sign * rate * g)
        return kl_p_q(mean.numpy(), log_std.numpy())

    start = kl_p_q(-1.0, 0.5)
    end = run(+1)
    assert end < 0.2 * start, (start, end)
    assert run(-1, steps=20) > start


def test_piwae_encoder_follows_miwae_and_decoder_iwae():
    lw = tf.constant(np.random.default_rng(4).normal(-50, 5, (6, 3)))
    parts = estimators.LogWeightParts(lw, tf.zeros_like(lw), tf.zeros_like(lw), tf.zeros_like(lw))
    surrogate = estimators.surrogates(parts, Objective("piwae", num_groups=3), "reparam")
    np.testing.assert_allclose(surrogate.encoder, bounds.miwae_bound(lw, 3))
    np.testing.assert_allclose(surrogate.decoder, bounds.iwae_bound(lw))


# -------------------------------------------------------------------- unbiasedness of DReG


def tiny_model(variant, layer_kind="local_reparameterization"):
    model = build_model(
        variant,
        K,
        latent_sizes=(2,),
        hidden_sizes=((8,),),
        data_size=PIXELS,
        uncertain_layer_kind=layer_kind,
        init_scale=0.3,
        seed=1,
    )
    model(tf.zeros([1, PIXELS]))
    return model


def encoder_gradients(model, x, num_draws, surrogate_fn):
    """[num_draws, parameters] encoder gradients of surrogate_fn(parts), one draw per seed."""
    variables = model.encoder.trainable_variables

    @tf.function
    def gradient(index):
        with tf.GradientTape() as tape:
            parts = model.log_weight_parts(x, K, rng.fold_in(rng.from_int(7), index))
            loss = tf.reduce_mean(surrogate_fn(parts))
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, variables)], 0)

    return np.stack([gradient(tf.constant(i)).numpy() for i in range(num_draws)])


def paired_z_scores(a, b):
    """Per parameter, mean(a - b) / its standard error over the (paired) draws."""
    d = (a - b).astype(np.float64)
    return d.mean(0) / (d.std(0, ddof=1) / np.sqrt(len(d)) + 1e-30)


def reparam(parts):
    return bounds.iwae_bound(parts.log_weights)


def dreg(parts):
    return estimators.surrogates(parts, Objective("iwae"), "dreg").encoder


def dreg_unsquared(parts):  # Wrong: w~ instead of w~^2 (which is STL for the iwae bound).
    weights = tf.stop_gradient(tf.nn.softmax(parts.log_weights, axis=0))
    return tf.reduce_sum(weights * (parts.log_joint - parts.log_q_fixed), 0)


def dreg_without_stop_gradient(parts):  # Wrong: gradient also flows through w~^2.
    weights = tf.square(tf.nn.softmax(parts.log_weights, axis=0))
    return tf.reduce_sum(weights * (parts.log_joint - parts.log_q_fixed), 0)


@pytest.mark.parametrize("variant", ["iwae", "iwaeu_rec"])
def test_dreg_is_unbiased_for_the_iwae_gradient_and_wrong_variants_are_not(variant):
    model = tiny_model(variant)
    x = tf.constant(np.random.default_rng(2).random((BATCH, PIXELS)) < 0.4, tf.float32)
    draws = 3000
    plain = encoder_gradients(model, x, draws, reparam)
    z = paired_z_scores(encoder_gradients(model, x, draws, dreg), plain)
    # Under unbiasedness each z is N(0, 1): with a few hundred parameters the largest |z| is
    # about 3.5, and few exceed 3.
    assert np.max(np.abs(z)) < 5.0, np.sort(np.abs(z))[-5:]
    assert np.mean(np.abs(z) > 3.0) < 0.02
    for wrong in (dreg_unsquared, dreg_without_stop_gradient):
        z_wrong = paired_z_scores(encoder_gradients(model, x, draws, wrong), plain)
        assert np.max(np.abs(z_wrong)) > 8.0, (wrong.__name__, np.sort(np.abs(z_wrong))[-5:])


def test_dreg_has_lower_variance_than_reparam_for_the_encoder():
    model = tiny_model("iwae")
    x = tf.constant(np.random.default_rng(3).random((BATCH, PIXELS)) < 0.4, tf.float32)
    plain = encoder_gradients(model, x, 400, reparam)
    doubly = encoder_gradients(model, x, 400, dreg)
    used = plain.var(0) > 0  # Kernel rows of pixels that are 0 in every example get no gradient.
    # Measured: median ratio 0.40 (this model, 400 draws); 1 would mean no gain.
    assert np.median(doubly.var(0)[used] / plain.var(0)[used]) < 0.8


# ----------------------------------------------------------------------------- refusals


def test_refused_combinations_say_why():
    with pytest.raises(ValueError, match="one stochastic layer"):
        build_model("iwae", K, latent_sizes=(3, 2), hidden_sizes=((8,), (8,)), estimator="dreg")
    with pytest.raises(ValueError, match="use estimator 'stl'"):
        build_model("vae", K, latent_sizes=(2,), hidden_sizes=((8,),), estimator="dreg")
    with pytest.raises(ValueError, match="derived for the iwae objective"):
        build_model(
            "iwae", K, latent_sizes=(2,), hidden_sizes=((8,),), estimator="dreg",
            objective=Objective("vr", alpha=0.5),
        )  # fmt: skip
    with pytest.raises(ValueError, match="its own encoder update"):
        build_model(
            "iwae", K, latent_sizes=(2,), hidden_sizes=((8,),), estimator="dreg", objective="rws"
        )
    with pytest.raises(ValueError, match="Unknown estimator"):
        build_model("iwae", K, latent_sizes=(2,), hidden_sizes=((8,),), estimator="score")
