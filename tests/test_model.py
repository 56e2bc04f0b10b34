"""Tests of the model's log-weights against log p(x) computed by quadrature.

With a 1-D latent z ~ N(0, 1) and a decoder without hidden layers, p(x|z) =
prod_j Bernoulli(x_j; sigmoid(w_j z + b_j)), and log p(x) = log int N(z) p(x|z) dz is a 1-D
integral that a fine grid evaluates to ~1e-8. Every importance-weighted estimate the model
produces must then be below it, increase with k, and approach it.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from scipy import special, stats

from iwae_tf import bounds, evaluation, rng
from iwae_tf.model import VARIANTS, build_model

PIXELS = 12


def quadrature_log_px(x, kernel, bias):
    """log int N(z; 0, 1) prod_j Bern(x_j; sigmoid(kernel_j z + bias_j)) dz on a fine grid."""
    z = np.linspace(-12.0, 12.0, 200_001)
    logits = z[:, None] * kernel[None, :] + bias[None, :]
    log_lik = (x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)).sum(-1)
    log_integrand = stats.norm.logpdf(z) + log_lik
    return special.logsumexp(log_integrand) + np.log(z[1] - z[0])


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(1)
    model = build_model("iwae", latent_sizes=(1,), hidden_sizes=((),), data_shape=(PIXELS,))
    x = tf.constant(np.random.default_rng(0).integers(0, 2, size=(1, PIXELS)), tf.float32)
    model(x)
    # A deliberately poor q(z|x) = N(2, e^1): far from the posterior, so bounds separate.
    head = model.encoder.blocks[0].head
    head.set_weights([np.zeros((PIXELS, 2), np.float32), np.array([2.0, 1.0], np.float32)])
    kernel, bias = (v.numpy() for v in model.decoder.output_net.head.weights)
    log_px = quadrature_log_px(x.numpy()[0], kernel[0], bias)
    return model, x, log_px


def test_log_weights_shape_and_finiteness(tiny_model):
    model, x, _ = tiny_model
    lw = model.log_weights(tf.tile(x, [3, 1]), 7, rng.from_int(0))
    assert lw.shape == (7, 3)
    assert np.all(np.isfinite(lw.numpy()))


def test_bounds_increase_with_k_and_stay_below_quadrature_log_px(tiny_model):
    model, x, log_px = tiny_model
    replicates = 20_000
    xs = tf.tile(x, [replicates, 1])
    means, stderrs = {}, {}
    for k in (1, 5, 50):
        estimates = bounds.iwae_bound(model.log_weights(xs, k, rng.from_int(k))).numpy()
        means[k], stderrs[k] = estimates.mean(), estimates.std() / np.sqrt(replicates)
    assert means[5] - means[1] > 6 * (stderrs[1] + stderrs[5]), means
    assert means[50] - means[5] > 6 * (stderrs[5] + stderrs[50]), means
    assert log_px - means[50] > 6 * stderrs[50], (means, log_px)


def test_many_sample_estimate_converges_to_quadrature_log_px(tiny_model):
    model, x, log_px = tiny_model
    estimates = evaluation.estimate_log_likelihood(
        model,
        tf.data.Dataset.from_tensor_slices(tf.tile(x, [20, 1])).batch(10),
        20_000,
        max_rows=50_000,
    )
    # The gap log p(x) - L_K shrinks like Var(w) / (2 K E[w]^2); at K = 20000 it is tiny,
    # and a model or estimator off by a constant (e.g. a missing log(2 pi) / 2) misses it.
    assert abs(estimates.log_px.mean() - log_px) < 0.01, (estimates.log_px.mean(), log_px)
    assert estimates.log_px.std() < 0.01
    # The ELBO is below log p(x) by KL(q || p(z|x)) > 0.
    assert estimates.elbo.mean() < log_px - 0.01


def test_chunked_estimate_equals_unchunked_in_distribution(tiny_model):
    model, x, _ = tiny_model
    ds = tf.data.Dataset.from_tensor_slices(tf.tile(x, [400, 1])).batch(100)
    whole = evaluation.estimate_log_likelihood(model, ds, 100, max_rows=100 * 100)
    chunked = evaluation.estimate_log_likelihood(model, ds, 100, max_rows=100 * 7)
    # Same estimator (K = 100) whichever the chunking: the means agree within MC error.
    stderr = np.hypot(whole.log_px.std(), chunked.log_px.std()) / np.sqrt(400)
    assert abs(whole.log_px.mean() - chunked.log_px.mean()) < 4 * stderr
    np.testing.assert_allclose(whole.elbo.mean(), chunked.elbo.mean(), atol=0.2)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_and_improves_its_bound(variant):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # Two prototype images with pixel noise: a model that learns them gains many nats.
    prototypes = rng.random((2, 64)) < 0.3
    flips = rng.random((400, 64)) < 0.05
    data = (prototypes[rng.integers(0, 2, 400)] ^ flips).astype(np.float32)
    model = build_model(variant, 5, latent_sizes=(4,), hidden_sizes=((32,),), data_shape=(64,))
    model.compile(optimizer=keras.optimizers.Adam(3e-3, epsilon=1e-4))
    before = model.evaluate(data, batch_size=100, verbose=0, return_dict=True)
    history = model.fit(data, batch_size=20, epochs=6, verbose=0)
    after = model.evaluate(data, batch_size=100, verbose=0, return_dict=True)
    assert set(history.history) == {"loss", "iwae_bound", "elbo"}
    assert after["iwae_bound"] > before["iwae_bound"] + 5.0, (before, after)
    assert after["loss"] == pytest.approx(
        -after["iwae_bound"] if VARIANTS[variant].objective == "iwae" else -after["elbo"],
        rel=1e-6,
    )


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="Unknown model variant 'iwea'"):
        build_model("iwea")
    with pytest.raises(
        ValueError, match=r"num_importance_samples must be an integer in \[1, 2\^31 - 1\]"
    ):
        build_model("iwae", 0)
    with pytest.raises(ValueError, match="needs uncertain weights"):
        build_model("iwae", kl_weight=1.0, num_train_examples=10)


def test_two_stochastic_layers_converge_to_quadrature_log_px():
    """p(x) = int int N(h2) N(h1; a h2 + b, exp(c h2 + d)^2) prod_j Bern(x_j | w_j h1 + v_j)."""
    keras.utils.set_random_seed(2)
    model = build_model("iwae", latent_sizes=(1, 1), hidden_sizes=((), ()), data_shape=(PIXELS,))
    x = tf.constant(np.random.default_rng(4).integers(0, 2, size=(1, PIXELS)), tf.float32)
    model(x)
    # Wide proposals (q(h1|x) = N(0, e^1), q(h2|h1) = N(0.3 h1, e^0.5)) keep weights light-tailed.
    q_h1, q_h2 = (block.head for block in model.encoder.blocks)
    q_h1.set_weights([np.zeros((PIXELS, 2), np.float32), np.array([0.0, 1.0], np.float32)])
    q_h2.set_weights([np.array([[0.3, 0.0]], np.float32), np.array([0.0, 0.5], np.float32)])
    p_h1 = model.decoder.blocks[0].head
    p_h1.set_weights([np.array([[1.2, 0.3]], np.float32), np.array([0.5, -0.7], np.float32)])
    (a, c), (b, d) = p_h1.get_weights()[0][0], p_h1.get_weights()[1]
    kernel, bias = (v.numpy() for v in model.decoder.output_net.head.weights)

    h = np.linspace(-9.0, 9.0, 3001)
    step = h[1] - h[0]
    h2, h1 = h[:, None], h[None, :]
    logits = h[:, None] * kernel[0][None, :] + bias[None, :]
    xs = x.numpy()[0]
    log_px_h1 = (xs * -np.logaddexp(0, -logits) + (1 - xs) * -np.logaddexp(0, logits)).sum(-1)
    log_joint = (
        stats.norm.logpdf(h2)
        + stats.norm.logpdf(h1, a * h2 + b, np.exp(c * h2 + d))
        + log_px_h1[None, :]
    )
    log_px = special.logsumexp(log_joint) + 2 * np.log(step)

    replicates = 4000
    xs_tf = tf.tile(x, [replicates, 1])
    l1 = bounds.iwae_bound(model.log_weights(xs_tf, 1, rng.from_int(1))).numpy()
    l10 = bounds.iwae_bound(model.log_weights(xs_tf, 10, rng.from_int(10))).numpy()
    assert l10.mean() - l1.mean() > 6 * (l1.std() + l10.std()) / np.sqrt(replicates)
    estimates = evaluation.estimate_log_likelihood(
        model, tf.data.Dataset.from_tensor_slices(tf.tile(x, [10, 1])).batch(10), 20_000
    )
    assert abs(estimates.log_px.mean() - log_px) < 0.02, (estimates.log_px.mean(), log_px)
    assert l10.mean() < log_px


@pytest.mark.parametrize("variant", ["vae", "iwae", "iwaeu", "iwaeu_rec"])
def test_two_stochastic_layer_variants_train(variant):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    prototypes = rng.random((2, 64)) < 0.3
    data = (prototypes[rng.integers(0, 2, 400)] ^ (rng.random((400, 64)) < 0.05)).astype(np.float32)
    model = build_model(
        variant, 3, latent_sizes=(6, 3), hidden_sizes=((32,), (16,)), data_shape=(64,)
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3, epsilon=1e-4))
    before = model.evaluate(data, batch_size=100, verbose=0, return_dict=True)
    model.fit(data, batch_size=20, epochs=6, verbose=0)
    after = model.evaluate(data, batch_size=100, verbose=0, return_dict=True)
    assert after["iwae_bound"] > before["iwae_bound"] + 5.0, (before, after)


def _evaluate_bound(model, data: np.ndarray, jit_compile: bool) -> float:
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    return model.evaluate(data, batch_size=50, verbose=0, return_dict=True)["iwae_bound"]


def test_validation_under_xla_draws_what_it_draws_without(monkeypatch):
    """Under XLA, test_step draws in rng's per-element layout: the same noise, so the same
    validation bounds (to float32 rounding) as the default layout without XLA."""
    keras.utils.set_random_seed(0)
    data = (np.random.default_rng(0).random((200, 64)) < 0.3).astype(np.float32)
    model = build_model("iwaeu", 5, latent_sizes=(4,), hidden_sizes=((32,),), data_shape=(64,))
    model(data[:2])
    plain = _evaluate_bound(model, data, jit_compile=False)
    compiled = _evaluate_bound(model, data, jit_compile=True)
    assert compiled == pytest.approx(plain, rel=2e-5)

    # Negative control: a per-element layout with the wrong counters moves the bound.
    original = rng._words

    def wrong_counter_words(shape, seed):
        if not rng._PER_ELEMENT.get():
            return original(shape, seed)
        element = tf.bitcast(tf.reshape(tf.range(tf.reduce_prod(shape)), shape), tf.uint32)
        zeros = tf.zeros_like(element)
        low, _ = rng._low_high(seed)
        return rng.philox4x32((element, zeros, zeros, zeros), tf.unstack(low))[0]

    monkeypatch.setattr(rng, "_words", wrong_counter_words)
    wrong = _evaluate_bound(model, data, jit_compile=True)
    assert wrong != pytest.approx(plain, rel=2e-5), (wrong, plain)
