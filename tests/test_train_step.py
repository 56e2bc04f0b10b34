"""The update `train_step` applies is the gradient of the documented loss.

`iwae_tf.model` documents the loss of a train step as

    -mean_b objective(log w[:, b]) + kl_weight * sum KL(q(W) || N(0, prior_scale^2)) / N,

with log w drawn with the seed rng.step_seed(model.seed, rng.TRAIN_STREAM, step). One XLA
step of plain SGD at learning rate 1 moves the weights by minus the gradient it applied; that
must equal the gradient of the formula above, written out here in its own terms (a max-shifted
log-mean-exp, Gaussian and Bernoulli log-densities by hand, the closed-form Gaussian KL) and
differentiated with a separate GradientTape. Deliberately wrong losses (a sum over the batch,
the KL left out, a stop-gradient on log q) must fail the same comparison.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from iwae_tf import estimators, rng
from iwae_tf import layers as L
from iwae_tf.bounds import Objective
from iwae_tf.model import build_model

PIXELS, BATCH, K, NUM_TRAIN = 30, 8, 4, 50
TFP_SCALE_EPS = np.finfo(np.float32).eps  # TFP's posterior std is softplus(rho) + eps.


def _normal_log_density(z, mean, std):
    return tf.reduce_sum(
        -0.5 * tf.square((z - mean) / std) - tf.math.log(std) - 0.5 * np.log(2 * np.pi), -1
    )


def _documented_loss(model, x, seed, objective, kl_weight, wrong=None):
    """The loss of one train step, from the formula in the module docstring."""
    encoder_seed, decoder_seed = rng.split(seed, 2)
    ((z, q),) = model.encoder(x, K, encoder_seed)
    log_q = _normal_log_density(z, q.mean, q.std)
    if wrong == "stop_gradient_log_q":
        log_q = tf.stop_gradient(log_q)
    logits, _ = model.decoder([tf.reshape(z, [-1, z.shape[-1]])], seed=decoder_seed)
    logits = tf.reshape(logits, [K, BATCH, PIXELS])
    log_px_given_z = tf.reduce_sum(x * logits - tf.math.log1p(tf.exp(logits)), -1)
    log_w = log_px_given_z + _normal_log_density(z, 0.0, 1.0) - log_q
    per_example = _per_example_objective(log_w, "iwae" if wrong == "iwae_instead" else objective)
    reduce = tf.reduce_sum if wrong == "sum_over_batch" else tf.reduce_mean
    loss = -reduce(per_example)
    if kl_weight and wrong != "no_kl":
        kl = 0.0
        for layer in _uncertain_layers(model):
            mu, rho = L.kernel_posterior_variables(layer)
            sigma = tf.nn.softplus(rho) + TFP_SCALE_EPS
            kl += tf.reduce_sum(-tf.math.log(sigma) + (sigma**2 + mu**2) / 2.0 - 0.5)
        loss += kl_weight * kl / NUM_TRAIN
    return loss


def _log_mean_exp(values, axis=0):
    top = tf.reduce_max(values, axis, keepdims=True)
    return tf.squeeze(top, axis) + tf.math.log(tf.reduce_mean(tf.exp(values - top), axis))


def _per_example_objective(log_w, objective):
    """The bounds' formulas of iwae_tf.bounds, written out again: objective is a name or a
    bounds.Objective-like (name, alpha, num_groups, beta) tuple."""
    name, alpha, num_groups, beta = (objective, 0.0, 1, 0.5) if isinstance(objective, str) else (
        objective)  # fmt: skip
    if name == "iwae":
        return _log_mean_exp(log_w)
    if name == "vae":
        return tf.reduce_mean(log_w, 0)
    if name == "vr" and alpha == -np.inf:
        return tf.reduce_max(log_w, 0)
    if name == "vr":
        return _log_mean_exp((1 - alpha) * log_w) / (1 - alpha)
    if name == "miwae":
        return tf.reduce_mean(_log_mean_exp(tf.reshape(log_w, [num_groups, -1, BATCH]), 1), 0)
    if name == "ciwae":
        return beta * tf.reduce_mean(log_w, 0) + (1 - beta) * _log_mean_exp(log_w)
    raise ValueError(name)


def _uncertain_layers(model):
    return [
        layer
        for network in (model.encoder, model.decoder)
        for layer in network.submodules
        if getattr(layer, "kernel_posterior", None) is not None
    ]


def _mismatch(got, want):
    """Largest error of any variable's gradient, relative to that gradient's size."""
    return max(
        float(np.max(np.abs(g - w)) / (np.max(np.abs(w)) + 1e-8))
        for g, w in zip(got, want, strict=True)
    )


@pytest.mark.parametrize(
    "variant, kl_weight, objective",
    [
        ("iwae", 0.0, None),
        ("vae", 0.0, None),
        ("iwaeu", 1.0, None),
        ("iwae", 0.0, Objective("vr", alpha=0.5)),
        ("iwaeu", 0.0, Objective("vr", alpha=-np.inf)),
        ("iwaeu_rec", 0.0, Objective("miwae", num_groups=2)),
        ("iwae", 0.0, Objective("ciwae", beta=0.3)),
    ],
)
def test_the_applied_update_is_the_gradient_of_the_documented_loss(variant, kl_weight, objective):
    keras.utils.set_random_seed(0)
    x = tf.constant(np.random.default_rng(1).random((BATCH, PIXELS)) < 0.4, tf.float32)
    model = build_model(
        variant,
        K,
        latent_sizes=(3,),
        hidden_sizes=((16,),),
        data_shape=(PIXELS,),
        init_scale=0.1,
        kl_weight=kl_weight,
        num_train_examples=NUM_TRAIN,
        seed=11,
        objective=objective,
    )
    model(x)
    before = [v.numpy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=True, steps_per_execution=1)
    model.fit(tf.data.Dataset.from_tensors(x), epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 1
    applied = [b - v.numpy() for b, v in zip(before, model.trainable_variables, strict=True)]

    for variable, value in zip(model.trainable_variables, before, strict=True):
        variable.assign(value)
    seed = rng.step_seed(11, rng.TRAIN_STREAM, 0)

    def gradient(wrong=None):
        with tf.GradientTape() as tape:
            loss = _documented_loss(model, x, seed, tuple(model.objective), kl_weight, wrong)
        grads = tape.gradient(loss, model.trainable_variables)
        return [np.zeros(v.shape) if g is None else g.numpy() for v, g in zip(
            model.trainable_variables, grads, strict=True)]  # fmt: skip

    # float32, XLA against eager: agreement to ~1e-5 of each gradient's size.
    tolerance = 2e-4
    assert _mismatch(applied, gradient()) < tolerance
    wrongs = ["sum_over_batch", "stop_gradient_log_q"] + (["no_kl"] if kl_weight else [])
    wrongs += ["iwae_instead"] if model.objective.name not in ("iwae",) else []
    for wrong in wrongs:
        assert _mismatch(applied, gradient(wrong)) > 50 * tolerance, wrong


def test_two_runs_with_one_seed_are_bit_identical_and_other_seeds_differ(mnist_data_dir):
    """Training under XLA (as `iwae_tf.train` runs it) is a function of the seed.

    The model and data are built as `train_and_evaluate` builds them; the script-level resume
    test in test_train.py also compares two processes bit for bit.
    """
    from iwae_tf import data
    from iwae_tf.config import TrainConfig
    from iwae_tf.train import make_model

    def run(seed):
        config = TrainConfig(
            model="iwaeu", k=3, seed=seed, steps_per_execution=5, data_dir=mnist_data_dir,
            train_split="train[:400]",
        )  # fmt: skip
        keras.utils.set_random_seed(seed)
        model = make_model(config, num_train_examples=400)
        assert model.jit_compile
        train = data.train_dataset("mnist", 20, seed, mnist_data_dir, split="train[:400]")
        history = model.fit(train, epochs=2, steps_per_epoch=20, verbose=0).history
        state = [v.numpy() for v in model.variables + model.optimizer.variables()]
        kernels = [v.numpy() for v in model.trainable_variables if "kernel_posterior_loc" in v.name]
        return state, history, kernels

    first, again, other = run(5), run(5), run(6)
    assert len(first[0]) > 3 * 12  # weights, Adam slots, step counter
    # The same ops on the same inputs in the same configuration: bit-identical.
    for a, b in zip(first[0], again[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert first[1] == again[1]
    assert first[1]["loss"] != other[1]["loss"]
    assert len(first[2]) == 6 and all(
        np.max(np.abs(a - b)) > 1e-2 for a, b in zip(first[2], other[2], strict=True)
    ), "another seed must give other weights"


@pytest.mark.parametrize(
    "variant, estimator, objective, latent_sizes",
    [
        ("iwae", "dreg", "iwae", (3,)),
        ("iwaeu_rec", "stl", "iwae", (3,)),
        ("iwaeu", "reparam", Objective("piwae", num_groups=2), (3,)),
        ("iwae", "reparam", "rws", (3,)),
        ("iwaeu", "dreg", Objective("vr", alpha=0.5), (3, 2)),
        ("iwae", "dreg", "rws", (3, 2)),
    ],
)
def test_each_network_steps_along_its_own_surrogate(variant, estimator, objective, latent_sizes):
    # The wiring of train_step: encoder variables from the estimator's surrogate, decoder
    # variables from the objective's (the surrogates themselves are tested in
    # test_estimators.py). Taking both from the objective must fail.
    x = tf.constant(np.random.default_rng(1).random((BATCH, PIXELS)) < 0.4, tf.float32)
    model = build_model(
        variant, K, latent_sizes=latent_sizes, hidden_sizes=((16,),) * len(latent_sizes),
        data_shape=(PIXELS,), init_scale=0.1, seed=11, estimator=estimator, objective=objective,
    )  # fmt: skip
    model(x)
    before = [v.numpy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=True, steps_per_execution=1)
    model.fit(tf.data.Dataset.from_tensors(x), epochs=1, verbose=0)
    applied = dict(
        zip(
            [v.ref() for v in model.trainable_variables],
            [b - v.numpy() for b, v in zip(before, model.trainable_variables, strict=True)],
            strict=True,
        )
    )
    for variable, value in zip(model.trainable_variables, before, strict=True):
        variable.assign(value)
    seed = rng.step_seed(11, rng.TRAIN_STREAM, 0)
    encoder_vars = model.encoder.trainable_variables
    decoder_vars = model.decoder.trainable_variables

    def gradients(encoder_part):
        with tf.GradientTape(persistent=True) as tape:
            parts = model.log_weight_parts(x, K, seed, with_score=True)
            surrogate = estimators.surrogates(parts, model.objective, estimator)
            encoder_loss = -tf.reduce_mean(getattr(surrogate, encoder_part))
            decoder_loss = -tf.reduce_mean(surrogate.decoder)
        return [g.numpy() for g in tape.gradient(encoder_loss, encoder_vars)] + [
            g.numpy() for g in tape.gradient(decoder_loss, decoder_vars)
        ]

    got = [applied[v.ref()] for v in encoder_vars + decoder_vars]
    assert _mismatch(got, gradients("encoder")) < 2e-4
    assert _mismatch(got, gradients("decoder")) > 1e-2
