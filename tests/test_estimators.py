"""Tests of iwae_tf.estimators: unbiasedness of DReG, STL's landing, and the refusals."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from iwae_tf import bounds, estimators, rng
from iwae_tf.bounds import Objective
from iwae_tf.model import build_model
from iwae_tf.networks import Gaussian, gaussian_log_prob

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
    log_q_score = normal(tf.stop_gradient(z), q_mean, std)
    return estimators.LogWeightParts(log_joint, log_q, log_q_score)


def exact_posterior(x=1.3, w=0.8, b=-0.2, s=0.5):
    variance = 1.0 / (1.0 + w**2 / s**2)
    return variance * w * (x - b) / s**2, 0.5 * np.log(variance)


DREG_OBJECTIVES = [
    Objective("vae"),
    Objective("iwae"),
    Objective("vr", alpha=0.5),
    Objective("vr", alpha=-3.0),
    Objective("miwae", num_groups=5),
    Objective("ciwae", beta=0.3),
    Objective("piwae", num_groups=5),
    Objective("rws"),
]


@pytest.mark.parametrize("objective", DREG_OBJECTIVES, ids=lambda o: o.name)
def test_stl_and_dreg_stick_the_landing_where_reparam_does_not(objective):
    mean, log_std = (tf.Variable(v, dtype=tf.float64) for v in exact_posterior())
    noise = np.random.default_rng(0).standard_normal((20, K, 1))
    for eps in noise:
        grads = {}
        for estimator in ("reparam", "stl", "dreg"):
            if objective.name == "rws" and estimator == "stl":
                continue
            with tf.GradientTape() as tape:
                parts = linear_gaussian_parts(mean, log_std, tf.constant(eps))
                surrogate = estimators.surrogates(parts, objective, estimator)
            grads[estimator] = np.array(tape.gradient(surrogate.encoder, [mean, log_std]))
        # q is the posterior: log w = log p(x) for every z, so the path terms vanish.
        np.testing.assert_allclose(grads["dreg"], 0.0, atol=1e-12)
        if "stl" in grads:
            np.testing.assert_allclose(grads["stl"], 0.0, atol=1e-12)
        if objective.name != "vae":  # The ELBO's score term has mean zero but not value zero.
            assert np.max(np.abs(grads["reparam"])) > 1e-3  # The score term is still there.


@pytest.mark.parametrize("objective", DREG_OBJECTIVES, ids=lambda o: o.name)
def test_dreg_coefficients_are_the_gradient_minus_its_diagonal_derivative(objective):
    # c_i - dc_i/dl_i, with c = dF/dl (for rws, the wake weights w~) by float64 autodiff.
    log_weights = tf.constant(np.random.default_rng(5).normal(-30.0, 3.0, (10, 4)))
    target = estimators.encoder_objective(objective)
    with tf.GradientTape() as outer:
        outer.watch(log_weights)
        with tf.GradientTape() as inner:
            inner.watch(log_weights)
            value = tf.reduce_sum(target(log_weights))
        c = inner.gradient(value, log_weights)
        if objective.name == "rws":
            c = tf.nn.softmax(log_weights, axis=0)
    # Examples are independent columns, so the Jacobian of c_i is block-diagonal per column.
    jacobian = outer.jacobian(c, log_weights, unconnected_gradients="zero").numpy()
    diagonal = np.einsum("ibib->ib", jacobian)
    expected = diagonal if objective.name == "rws" else c.numpy() - diagonal
    got = estimators.dreg_coefficients(objective, log_weights).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)


def test_dreg_coefficients_of_vr_are_iwae_at_alpha_0_and_vae_at_alpha_1():
    lw = tf.constant(np.random.default_rng(6).normal(-30.0, 3.0, (6, 3)))
    coefficients = lambda o: estimators.dreg_coefficients(o, lw).numpy()  # noqa: E731
    np.testing.assert_allclose(coefficients(Objective("vr", alpha=0.0)), coefficients(Objective()))
    np.testing.assert_allclose(coefficients(Objective("vr", alpha=1.0)), 1.0 / 6)
    np.testing.assert_allclose(
        coefficients(Objective("miwae", num_groups=1)), coefficients(Objective())
    )


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
    parts = estimators.LogWeightParts(lw, tf.zeros_like(lw))
    surrogate = estimators.surrogates(parts, Objective("piwae", num_groups=3), "reparam")
    np.testing.assert_allclose(surrogate.encoder, bounds.miwae_bound(lw, 3))
    np.testing.assert_allclose(surrogate.decoder, bounds.iwae_bound(lw))


# -------------------------------------------------------------------- unbiasedness of DReG


def tiny_model(variant, latent_sizes=(2,), layer_kind="local_reparameterization", init_seed=0):
    keras.utils.set_random_seed(init_seed)  # The initial weights.
    model = build_model(
        variant,
        K,
        latent_sizes=latent_sizes,
        hidden_sizes=((8,),) * len(latent_sizes),
        data_shape=(PIXELS,),
        uncertain_layer_kind=layer_kind,
        init_scale=0.3,
        seed=1,
    )
    model(tf.zeros([1, PIXELS]))
    return model


def encoder_gradients(model, x, num_draws, surrogate_fn):
    """[num_draws, parameters] encoder gradients of surrogate_fn(model, x, seed), one draw per
    seed; the same seeds for every surrogate, so that estimators compare on paired noise."""
    variables = model.encoder.trainable_variables

    @tf.function
    def gradient(index):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(surrogate_fn(model, x, rng.fold_in(rng.from_int(7), index)))
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, variables)], 0)

    return np.stack([gradient(tf.constant(i)).numpy() for i in range(num_draws)])


def paired_z_scores(a, b):
    """Per parameter, mean(a - b) / its standard error over the (paired) draws."""
    d = (a - b).astype(np.float64)
    return d.mean(0) / (d.std(0, ddof=1) / np.sqrt(len(d)) + 1e-30)


def parts_of(model, x, seed):
    return model.log_weight_parts(x, K, seed, with_score=True)


def estimator(objective, name):
    """The encoder surrogate of estimator `name` (for reparam: the reference gradient)."""

    def surrogate(model, x, seed):
        return estimators.surrogates(parts_of(model, x, seed), objective, name).encoder

    return surrogate


def dreg_unsquared(model, x, seed):  # Wrong: w~ instead of w~^2 (which is STL for iwae).
    parts = parts_of(model, x, seed)
    weights = tf.stop_gradient(tf.nn.softmax(parts.log_weights, axis=0))
    return tf.reduce_sum(weights * parts.path_log_weights, 0)


def dreg_without_stop_gradient(model, x, seed):  # Wrong: gradient also flows through w~^2.
    parts = parts_of(model, x, seed)
    weights = tf.square(tf.nn.softmax(parts.log_weights, axis=0))
    return tf.reduce_sum(weights * parts.path_log_weights, 0)


def iwae_coefficients(model, x, seed):  # Wrong for other objectives: iwae's w~^2.
    parts = parts_of(model, x, seed)
    coefficients = estimators.dreg_coefficients(Objective("iwae"), parts.log_weights)
    return tf.reduce_sum(coefficients * parts.path_log_weights, 0)


def stopped_gaussian_outputs(model, x, seed):
    """Wrong with 2 layers: q's parameters held fixed by stopping every layer's Gaussian
    outputs, which also cuts the path from h_1 through q(h_2 | h_1)."""
    encoder_seed, decoder_seed = rng.split(seed, 2)
    posterior = model.encoder(x, num_samples=K, seed=encoder_seed)
    latents = [sample for sample, _ in posterior]
    log_q = tf.add_n(
        [
            gaussian_log_prob(h, Gaussian(tf.stop_gradient(q.mean), tf.stop_gradient(q.std)))
            for h, q in posterior
        ]
    )
    log_joint = model.decoder.log_prob(x, latents, seed=decoder_seed)
    weights = tf.stop_gradient(tf.square(tf.nn.softmax(log_joint - log_q, axis=0)))
    return tf.reduce_sum(weights * (log_joint - log_q), 0)


UNBIASEDNESS_CASES = {
    "iwae": ("iwae", (2,), Objective(), [dreg_unsquared, dreg_without_stop_gradient]),
    "iwaeu_rec": ("iwaeu_rec", (2,), Objective(), [dreg_unsquared]),
    "iwae_2_layers": ("iwae", (2, 2), Objective(), [dreg_unsquared, stopped_gaussian_outputs]),
    "iwaeu_rec_2_layers": ("iwaeu_rec", (2, 2), Objective(), [stopped_gaussian_outputs]),
    "vr_alpha_0.5": ("iwae", (2,), Objective("vr", alpha=0.5), [iwae_coefficients]),
    "rws_iwaeu_rec_2_layers": ("iwaeu_rec", (2, 2), Objective("rws"), [iwae_coefficients]),
}


@pytest.mark.parametrize("case", sorted(UNBIASEDNESS_CASES))
def test_dreg_is_unbiased_and_wrong_variants_are_not(case):
    # The mean DReG encoder gradient equals the mean of the reference: the objective's plain
    # reparameterization gradient, or for rws the wake update.
    variant, latent_sizes, objective, wrongs = UNBIASEDNESS_CASES[case]
    model = tiny_model(variant, latent_sizes)
    x = tf.constant(np.random.default_rng(2).random((BATCH, PIXELS)) < 0.4, tf.float32)
    draws = 3000
    reference = encoder_gradients(model, x, draws, estimator(objective, "reparam"))
    z = paired_z_scores(encoder_gradients(model, x, draws, estimator(objective, "dreg")), reference)
    # Under unbiasedness each z is N(0, 1): with a few hundred parameters the largest |z| is
    # about 3.5, and few exceed 3.
    assert np.max(np.abs(z)) < 5.0, np.sort(np.abs(z))[-5:]
    assert np.mean(np.abs(z) > 3.0) < 0.02
    for wrong in wrongs:
        z_wrong = paired_z_scores(encoder_gradients(model, x, draws, wrong), reference)
        assert np.max(np.abs(z_wrong)) > 8.0, (wrong.__name__, np.sort(np.abs(z_wrong))[-5:])


def test_the_path_gradient_is_the_stopped_gaussian_one_with_one_layer():
    # With one stochastic layer q(h_1 | x) does not depend on other samples, so stopping its
    # outputs and subtracting the score term give the same gradient (a check of
    # path_log_weights that needs no statistics).
    model = tiny_model("iwaeu_rec")
    x = tf.constant(np.random.default_rng(2).random((BATCH, PIXELS)) < 0.4, tf.float32)
    dreg = encoder_gradients(model, x, 3, estimator(Objective(), "dreg"))
    stopped = encoder_gradients(model, x, 3, stopped_gaussian_outputs)
    np.testing.assert_allclose(dreg, stopped, rtol=1e-4, atol=1e-6)


def test_dreg_has_lower_variance_than_reparam_for_the_encoder_at_most_initializations():
    # How much DReG gains depends on where q is: at 6 initializations of this model the
    # median variance ratio (DReG / reparam, over parameters, 400 draws) measured 0.43, 2.2,
    # 0.19, 0.43, 0.03 and 0.17. Asserted: the median over 5 of them, where 1 means no gain.
    x = tf.constant(np.random.default_rng(3).random((BATCH, PIXELS)) < 0.4, tf.float32)
    ratios = []
    for init_seed in range(5):
        model = tiny_model("iwae", init_seed=init_seed)
        plain = encoder_gradients(model, x, 400, estimator(Objective(), "reparam"))
        doubly = encoder_gradients(model, x, 400, estimator(Objective(), "dreg"))
        used = plain.var(0) > 0  # Kernel rows of pixels that are 0 in every example get none.
        ratios.append(np.median(doubly.var(0)[used] / plain.var(0)[used]))
    assert np.median(ratios) < 0.8, ratios


# ----------------------------------------------------------------------------- refusals


def test_refused_combinations_say_why():
    small = dict(latent_sizes=(2,), hidden_sizes=((8,),))
    with pytest.raises(ValueError, match="wake update.*'stl' would drop all of it"):
        build_model("iwae", K, estimator="stl", objective="rws", **small)
    with pytest.raises(ValueError, match="VR-max"):
        build_model("iwae", K, estimator="dreg", objective=Objective("vr", alpha=-np.inf), **small)
    with pytest.raises(ValueError, match="Unknown estimator"):
        build_model("iwae", K, estimator="score", **small)


@pytest.mark.parametrize(
    "objective", [*DREG_OBJECTIVES, Objective("vr", alpha=-np.inf)], ids=lambda o: o.name
)
@pytest.mark.parametrize("name", estimators.ESTIMATORS)
def test_every_other_combination_builds_with_two_layers(objective, name):
    refused = (objective.name == "rws" and name == "stl") or (
        name == "dreg" and objective.alpha == -np.inf
    )
    if refused:
        return
    model = build_model(
        "iwaeu", K, latent_sizes=(3, 2), hidden_sizes=((8,), (8,)), data_shape=(PIXELS,),
        estimator=name, objective=objective,
    )  # fmt: skip
    surrogate = estimators.surrogates(
        parts_of(model, tf.ones([2, PIXELS]), rng.from_int(0)), objective, name
    )
    assert surrogate.encoder.shape == surrogate.decoder.shape == [2]
    assert np.all(np.isfinite(surrogate.encoder)) and np.all(np.isfinite(surrogate.decoder))


@pytest.mark.parametrize("name", estimators.ESTIMATORS)
@pytest.mark.parametrize("objective", ["iwae", "piwae", "rws"])
def test_conv_gaussian_models_take_every_estimator_with_two_layers(objective, name):
    # The conv stack sits below q(h_1 | x) and above p(x | h_1); the score term's recomputed
    # Gaussians (q(h_2 | stop h_1)) live in the MLP blocks above it, so every estimator applies.
    if objective == "rws" and name == "stl":
        return  # Refused (test_refused_combinations_say_why).
    objective = Objective(objective, num_groups=5 if objective == "piwae" else 1)
    model = build_model(
        "iwaeu", K, latent_sizes=(3, 2), hidden_sizes=((8,), (8,)), data_shape=(6, 4, 2),
        conv_filters=(3,), likelihood="gaussian", uncertain_layer_kind="flipout",
        estimator=name, objective=objective,
    )  # fmt: skip
    x = tf.constant(np.random.default_rng(0).random((2, 6, 4, 2)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        surrogate = estimators.surrogates(parts_of(model, x, rng.from_int(0)), objective, name)
        encoder_loss, decoder_loss = (-tf.reduce_sum(s) for s in surrogate)
    assert np.all(np.isfinite(surrogate.encoder)) and np.all(np.isfinite(surrogate.decoder))
    for loss, network in ((encoder_loss, model.encoder), (decoder_loss, model.decoder)):
        grads = tape.gradient(loss, network.trainable_variables)
        assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
        assert any("conv" in v.name for v in network.trainable_variables)
