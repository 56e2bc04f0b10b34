"""Tests of what the networks own: ancestral sampling and the posterior-mean passes."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from iwae_tf import layers as L
from iwae_tf import rng
from iwae_tf.model import build_model

SEED = rng.from_int(3)


def two_layer_model(variant="iwae"):
    model = build_model(variant, 2, latent_sizes=(4, 3), hidden_sizes=((16,), (8,)), data_size=30)
    model(tf.zeros([1, 30]))
    return model


def numpy_mean_mlp(mlp_layers, h):
    """act(h @ W + b) layer by layer in float64, W the kernel (or its posterior mean)."""
    h = np.asarray(h, np.float64)
    for i, layer in enumerate(mlp_layers):
        weights = layer.get_weights()
        kernel, bias = weights[0], weights[-1]  # Uncertain layers: [loc, rho, bias].
        h = h @ kernel + bias
        if i < len(mlp_layers) - 1:
            h = np.tanh(h)
    return h


def test_decoder_sample_draws_each_layer_from_its_conditional():
    model = two_layer_model()
    decoder = model.decoder
    n = 20_000
    draw = decoder.sample(n, SEED)
    h1, h2 = (h.numpy().astype(np.float64) for h in draw.latents)
    assert h1.shape == (n, 4) and h2.shape == (n, 3) and draw.logits.shape == (n, 30)
    # h2 ~ N(0, I): mean within 5 standard errors of 0, variance within 5% of 1.
    assert np.all(np.abs(h2.mean(axis=0)) < 5 / np.sqrt(n))
    assert np.all(np.abs(h2.var(axis=0) - 1) < 0.05)
    # h1 ~ p(h1 | h2): the residual standardized by that Gaussian is N(0, I) (a sampler that
    # stopped at the mean would give variance 0).
    conditional = decoder.blocks[0].at_posterior_mean(draw.latents[1])  # Deterministic weights.
    residual = (h1 - conditional.mean.numpy()) / conditional.std.numpy()
    assert np.all(np.abs(residual.mean(axis=0)) < 5 / np.sqrt(n))
    assert np.all(np.abs(residual.var(axis=0) - 1) < 0.05)
    # The logits are those of p(x | h1) at the drawn h1.
    expected = numpy_mean_mlp([*decoder.output_net.hidden, decoder.output_net.head], h1[:50])
    np.testing.assert_allclose(draw.logits.numpy()[:50], expected, rtol=1e-4, atol=1e-4)


def test_decoder_sample_is_a_function_of_the_seed():
    decoder = two_layer_model("iwaeu").decoder
    first = decoder.sample(7, SEED)
    again = decoder.sample(7, SEED)
    other = decoder.sample(7, rng.from_int(4))
    np.testing.assert_array_equal(first.logits, again.logits)  # The same ops on the same inputs.
    assert not np.allclose(first.logits, other.logits)


@pytest.mark.parametrize("variant", ["iwae", "iwaeu"])
def test_posterior_mean_and_decode_follow_the_mean_path(variant):
    model = two_layer_model(variant)
    x = (np.random.default_rng(0).random((5, 30)) < 0.4).astype(np.float32)
    q1, q2 = model.encoder.blocks
    out1 = numpy_mean_mlp([*q1.hidden, q1.head], x)
    out2 = numpy_mean_mlp([*q2.hidden, q2.head], out1[:, :4])
    g1, g2 = model.encoder.posterior_mean(tf.constant(x))
    np.testing.assert_allclose(g1.mean, out1[:, :4], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g1.std, np.exp(out1[:, 4:]), rtol=1e-4)
    np.testing.assert_allclose(g2.mean, out2[:, :3], rtol=1e-4, atol=1e-5)

    p1, out = model.decoder.blocks[0], model.decoder.output_net
    z = np.random.default_rng(1).normal(size=(5, 3))
    h1 = numpy_mean_mlp([*p1.hidden, p1.head], z)[:, :4]
    top = model.decoder.decode(tf.constant(z, tf.float32))
    np.testing.assert_allclose(
        top, special.expit(numpy_mean_mlp([*out.hidden, out.head], h1)), rtol=1e-4, atol=1e-6
    )
    # From the bottom layer, decode skips p(h1 | h2); reconstruct decodes E_q[h1 | x] so.
    bottom = special.expit(numpy_mean_mlp([*out.hidden, out.head], out1[:, :4]))
    np.testing.assert_allclose(model.reconstruct(x), bottom, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["local_reparameterization", "flipout", "reparameterization"])
def test_call_at_posterior_mean_is_the_zero_noise_limit_of_a_draw(kind):
    layer = L.make_dense(6, kind=kind, activation="tanh")
    x = tf.constant(np.random.default_rng(2).normal(size=(4, 5)), tf.float32)
    layer(x, seed=SEED)
    loc, _, bias = layer.get_weights()
    np.testing.assert_allclose(
        L.call_at_posterior_mean(layer, x), np.tanh(x.numpy() @ loc + bias), rtol=1e-5, atol=1e-6
    )
    L.set_posterior_scale(layer, 1e-6)  # A draw with almost no noise is the mean pass.
    np.testing.assert_allclose(layer(x, seed=SEED), L.call_at_posterior_mean(layer, x), atol=1e-4)
    L.set_posterior_scale(layer, 0.5)  # Negative control: with noise the two differ.
    assert not np.allclose(layer(x, seed=SEED), L.call_at_posterior_mean(layer, x), atol=1e-2)


@pytest.mark.parametrize("variant", ["iwae", "iwaeu_rec"])
def test_gaussians_at_fixed_samples_keep_the_values_and_cut_the_path_below(variant):
    # The score term's densities: the encoder's Gaussians with the same weight draws, but
    # q(h_2 | h_1) no longer reaches the first layer's variables through h_1.
    model = two_layer_model(variant)
    x = tf.constant(np.random.default_rng(0).random((5, 30)) < 0.4, tf.float32)
    first_layer = model.encoder.blocks[0].trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        posterior = model.encoder(x, num_samples=3, seed=SEED)
        fixed = model.encoder.gaussians_at_fixed_samples(posterior, SEED)
        live_top, fixed_top = tf.reduce_sum(posterior[1][1].mean), tf.reduce_sum(fixed[1].mean)
    for (_, gaussian), again in zip(posterior, fixed, strict=True):
        np.testing.assert_allclose(again.mean, gaussian.mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(again.std, gaussian.std, rtol=1e-6, atol=1e-6)
    assert all(g is not None for g in tape.gradient(live_top, first_layer))
    assert all(g is None for g in tape.gradient(fixed_top, first_layer))
    upper = model.encoder.blocks[1].trainable_variables
    assert all(g is not None for g in tape.gradient(fixed_top, upper))
