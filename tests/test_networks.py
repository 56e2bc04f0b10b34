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
    model = build_model(
        variant, 2, latent_sizes=(4, 3), hidden_sizes=((16,), (8,)), data_shape=(30,)
    )
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
    assert h1.shape == (n, 4) and h2.shape == (n, 3) and draw.outputs.shape == (n, 30)
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
    np.testing.assert_allclose(draw.outputs.numpy()[:50], expected, rtol=1e-4, atol=1e-4)


def test_decoder_sample_is_a_function_of_the_seed():
    decoder = two_layer_model("iwaeu").decoder
    first = decoder.sample(7, SEED)
    again = decoder.sample(7, SEED)
    other = decoder.sample(7, rng.from_int(4))
    np.testing.assert_array_equal(first.outputs, again.outputs)  # The same ops on the same inputs.
    assert not np.allclose(first.outputs, other.outputs)


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


def numpy_conv_same(x, kernel, bias, strides):
    """float64 "same" convolution, TensorFlow's padding: extra padding goes bottom/right."""
    batch, height, width, _ = x.shape
    kh, kw, _, filters = kernel.shape
    out_h, out_w = -(-height // strides), -(-width // strides)
    pad_h = max((out_h - 1) * strides + kh - height, 0)
    pad_w = max((out_w - 1) * strides + kw - width, 0)
    padded = np.pad(
        x, [(0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)]
    )
    out = np.zeros((batch, out_h, out_w, filters))
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[:, i * strides : i * strides + kh, j * strides : j * strides + kw]
            out[:, i, j] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out + bias


def conv_model(variant="iwae", likelihood="bernoulli", shape=(13, 10, 2)):
    model = build_model(
        variant,
        2,
        latent_sizes=(3,),
        hidden_sizes=((8,),),
        data_shape=shape,
        conv_filters=(4, 5),
        likelihood=likelihood,
        uncertain_layer_kind="flipout",
    )
    model(tf.zeros([1, *shape]))
    return model


def test_conv_networks_match_a_float64_forward_pass_on_an_odd_image_shape():
    # 13 x 10 is not a multiple of 4: the encoder's "same" convolutions round up (7 x 5, then
    # 4 x 3) and the decoder's grid (ceil(13 / 4) x ceil(10 / 4) = 4 x 3) upsamples to 16 x 12,
    # cropped back to 13 x 10.
    model = conv_model()
    x = np.random.default_rng(0).random((3, 13, 10, 2))
    encoder = model.encoder.blocks[0]
    h = x
    for layer in encoder.convs:
        kernel, bias = layer.get_weights()
        h = np.maximum(numpy_conv_same(h, kernel, bias, 2), 0.0)
    assert h.shape == (3, 4, 3, 5)
    out = numpy_mean_mlp([*encoder.hidden, encoder.head], h.reshape(3, -1))
    (gaussian,) = model.encoder.posterior_mean(tf.constant(x, tf.float32))
    np.testing.assert_allclose(gaussian.mean, out[:, :3], rtol=1e-4, atol=1e-5)

    net = model.decoder.output_net
    z = np.random.default_rng(1).normal(size=(3, 3))
    h = np.tanh(z @ net.hidden[0].get_weights()[0] + net.hidden[0].get_weights()[1])
    kernel, bias = net.head.get_weights()
    h = np.maximum(h @ kernel + bias, 0.0).reshape(3, 4, 3, 5)
    for i, layer in enumerate(net.convs):
        h = h.repeat(2, axis=1).repeat(2, axis=2)
        kernel, bias = layer.get_weights()
        h = numpy_conv_same(h, kernel, bias, 1)
        if i < len(net.convs) - 1:
            h = np.maximum(h, 0.0)
    logits = h[:, :13, :10] + net.pixel_bias.numpy()
    np.testing.assert_allclose(
        model.decoder.decode(tf.constant(z, tf.float32)), special.expit(logits), rtol=1e-4
    )
    # Negative control: cropping the centre instead of the top-left gives other images.
    assert not np.allclose(
        special.expit(h[:, 1:14, 1:11] + net.pixel_bias.numpy()), special.expit(logits)
    )


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_decoder_log_prob_is_the_likelihood_plus_the_prior(likelihood):
    model = conv_model("iwaeu", likelihood)
    x = tf.constant(np.random.default_rng(2).random((4, 13, 10, 2)) < 0.5, tf.float32)
    latent = tf.constant(np.random.default_rng(3).normal(size=(2, 4, 3)), tf.float32)
    got = model.decoder.log_prob(x, [latent], SEED).numpy()
    outputs, _ = model.decoder([tf.reshape(latent, [8, 3])], SEED)
    outputs = outputs.numpy().reshape(2, 4, 13, 10, -1).astype(np.float64)
    xs = x.numpy()[np.newaxis].astype(np.float64)
    if likelihood == "bernoulli":
        pixels = xs * outputs - np.logaddexp(0.0, outputs)
    else:
        mean, scale = special.expit(outputs[..., :2]), outputs[..., 2:]
        std = 0.01 * np.exp(np.logaddexp(0.0, scale - np.log(0.01)))
        pixels = -0.5 * ((xs - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    prior = -0.5 * np.sum(latent.numpy() ** 2, axis=-1) - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(got, pixels.sum(axis=(2, 3, 4)) + prior, rtol=1e-4)


def test_conv_architecture_needs_images():
    with pytest.raises(ValueError, match="needs images \\[H, W, C\\]"):
        build_model("iwae", data_shape=(784,), conv_filters=(8,))
