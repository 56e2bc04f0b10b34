"""Tests of IWAE with uncertain weights (IWAEU) against exact answers.

The tractable case: a 1-D latent z ~ N(0, 1) and a decoder without hidden layers whose kernel
has a factorized Gaussian q(theta). Output j depends on z only through a_j = z w_j + b_j, and
with w_j ~ N(mu_j, s_j^2) independent across j,

    p(x | z) = prod_j int N(a; z mu_j + b_j, z^2 s_j^2) Bernoulli(x_j; sigmoid(a)) da,

a product of 1-D integrals (Gauss-Hermite), and p(x) = int N(z) p(x|z) dz (a fine grid).
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from scipy import special, stats

from iwae_tf import bounds, evaluation
from iwae_tf import layers as L
from iwae_tf import rng as iwae_rng
from iwae_tf.model import build_model

PIXELS = 30


def log_sigmoid(a):
    return -np.logaddexp(0.0, -a)


def mixture_log_px(x, mu, s, bias):
    """log p(x) of the weight-mixture model above, by quadrature."""
    z = np.linspace(-10.0, 10.0, 8001)
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)  # for N(0, 1) expectations
    weights = weights / weights.sum()
    # a[z, j, node] = z mu_j + b_j + |z| s_j * node
    a = (z[:, None] * mu + bias)[..., None] + (np.abs(z)[:, None] * s)[..., None] * nodes
    log_bern = np.where(x[None, :, None] == 1, log_sigmoid(a), log_sigmoid(-a))
    log_pxz = special.logsumexp(log_bern + np.log(weights), axis=-1).sum(-1)
    return special.logsumexp(stats.norm.logpdf(z) + log_pxz) + np.log(z[1] - z[0])


def point_log_px(x, w, bias):
    """log p(x) of the deterministic decoder with kernel w, by quadrature."""
    return mixture_log_px(x, w, np.zeros_like(w), bias)


@pytest.fixture(scope="module")
def tractable():
    keras.utils.set_random_seed(3)
    model = build_model(
        "iwaeu", latent_sizes=(1,), hidden_sizes=((),), data_shape=(PIXELS,), init_scale=0.02
    )
    rng = np.random.default_rng(1)
    x = tf.constant(rng.integers(0, 2, size=(1, PIXELS)), tf.float32)
    model(x)
    # q(z|x) ~ N(0, e^0.7) plus weight noise: wider than the posterior, so that importance
    # weights are light-tailed and many-sample estimates converge fast enough to test.
    encoder_head = model.encoder.blocks[0].head
    encoder_loc, _ = L.kernel_posterior_variables(encoder_head)
    encoder_loc.assign(tf.zeros_like(encoder_loc))
    encoder_head.weights[-1].assign([0.0, 0.7])
    head = model.decoder.output_net.head
    loc, _ = L.kernel_posterior_variables(head)
    loc.assign(rng.normal(scale=1.0, size=loc.shape).astype(np.float32))
    L.set_posterior_scale(head, 0.8)
    mu = loc.numpy()[0]
    s = L.posterior_scales(head).numpy()[0] + 1.1920929e-07  # TFP adds float eps to softplus
    bias = head.weights[-1].numpy()  # [loc, untransformed scale, bias]
    x_np = x.numpy()[0]
    return dict(
        model=model,
        x=x,
        log_px=mixture_log_px(x_np, mu, s, bias),
        point_log_px=point_log_px(x_np, mu, bias),
    )


def test_weight_uncertainty_changes_the_model(tractable):
    # Otherwise the tests below could not tell a mixture from the mean network.
    assert abs(tractable["log_px"] - tractable["point_log_px"]) > 0.06


def test_iwaeu_bounds_increase_with_k_below_mixture_log_px(tractable):
    model, x, log_px = tractable["model"], tractable["x"], tractable["log_px"]
    replicates = 20_000
    xs = tf.tile(x, [replicates, 1])
    means, stderrs = {}, {}
    for k in (1, 5, 50):
        estimates = bounds.iwae_bound(model.log_weights(xs, k, iwae_rng.from_int(k))).numpy()
        means[k], stderrs[k] = estimates.mean(), estimates.std() / np.sqrt(replicates)
    assert means[5] - means[1] > 6 * (stderrs[1] + stderrs[5]), means
    assert means[50] - means[5] > 6 * (stderrs[5] + stderrs[50]), means
    assert log_px - means[50] > 6 * stderrs[50], (means, log_px)


def test_iwaeu_estimate_converges_to_mixture_log_px(tractable):
    model, x, log_px = tractable["model"], tractable["x"], tractable["log_px"]
    ds = tf.data.Dataset.from_tensor_slices(tf.tile(x, [10, 1])).batch(10)
    estimates = evaluation.estimate_log_likelihood(model, ds, 20_000, max_rows=50_000)
    assert abs(estimates.log_px.mean() - log_px) < 0.015, (estimates.log_px.mean(), log_px)
    assert abs(estimates.log_px.mean() - tractable["point_log_px"]) > 0.045


def test_a_decoder_sharing_one_weight_draw_per_example_misses_the_mixture_log_px(tractable):
    """Negative control for the test above: k samples sharing one decoder draw are caught.

    A "reparameterization" decoder draws one theta per call; with one example per call, all K
    samples of the example see the same theta, so the estimate tends to E_theta log p(x;
    theta), which is below the mixture's log p(x) = log E_theta p(x; theta) by a Jensen gap.
    For this model quadrature puts the gap at 0.18 nats, and log p(x; theta) spreads with sd
    0.49 over theta; 400 examples (sd of the mean ~0.025) resolve it. The real, per-sample
    decoder lands within 0.015 of log p(x) in the test above; the shared one is more than 0.1
    (about 7 times that tolerance) below it.
    """
    from iwae_tf.model import ImportanceWeightedAutoencoder
    from iwae_tf.networks import Decoder, Encoder, NetworkConfig

    model, x, log_px = tractable["model"], tractable["x"], tractable["log_px"]
    arch = dict(latent_sizes=(1,), hidden_sizes=((),))
    shared = ImportanceWeightedAutoencoder(
        Encoder(**arch, config=NetworkConfig("local_reparameterization")),
        Decoder(PIXELS, **arch, config=NetworkConfig("reparameterization")),
        num_importance_samples=1,
    )
    shared(x)
    shared.set_weights(model.get_weights())
    ds = tf.data.Dataset.from_tensor_slices(tf.tile(x, [400, 1])).batch(1)  # one call each
    estimates = evaluation.estimate_log_likelihood(shared, ds, 2000, max_rows=50_000)
    assert log_px - estimates.log_px.mean() > 0.1, (estimates.log_px.mean(), log_px)


def test_importance_weight_uses_the_encoder_draw_that_made_the_sample(tractable):
    """E[w] = p(x) exactly (k = 1) only if q(z|x; phi) uses the draw phi that produced z."""
    model, x, log_px = tractable["model"], tractable["x"], tractable["log_px"]
    encoder_head = model.encoder.blocks[0].head
    L.set_posterior_scale(encoder_head, 0.15)  # draws of phi that differ noticeably
    try:
        n = 400_000
        xs = tf.tile(x, [n, 1])
        ratios = np.exp(model.log_weights(xs, 1, iwae_rng.from_int(0)).numpy()[0] - log_px)
        assert abs(ratios.mean() - 1.0) < 4 * ratios.std() / np.sqrt(n), ratios.mean()

        # The same estimator with log q from an independent encoder draw is biased: this is
        # the mistake the test guards against, and it must be detectable at this n.
        ((sample, _),) = model.encoder(xs, 1, iwae_rng.from_int(1))
        ((_, other_q),) = model.encoder(xs, 1, iwae_rng.from_int(2))
        wrong_log_q = stats.norm.logpdf(sample.numpy(), other_q.mean.numpy(), other_q.std.numpy())
        log_joint = model.decoder.log_prob(xs, [sample], iwae_rng.from_int(3)).numpy()
        wrong_log_ratios = log_joint[0] - wrong_log_q[0, :, 0] - log_px
        wrong_log_mean = special.logsumexp(wrong_log_ratios) - np.log(n)
        assert abs(wrong_log_mean) > 0.5, wrong_log_mean
    finally:
        L.set_posterior_scale(encoder_head, 0.02)


def test_sigma_to_zero_limit_equals_iwae_of_the_mean_network():
    keras.utils.set_random_seed(5)
    x = tf.constant(np.random.default_rng(0).integers(0, 2, (6, 30)), tf.float32)
    arch = dict(latent_sizes=(3,), hidden_sizes=((16,),), data_shape=(30,))
    iwaeu = build_model("iwaeu", init_scale=1e-9, **arch)
    iwae = build_model("iwae", **arch)
    iwaeu(x)
    iwae(x)
    uncertain = [v for v in iwaeu.trainable_variables if "untransformed_scale" not in v.name]
    assert len(uncertain) == len(iwae.trainable_variables)
    for target, source in zip(iwae.trainable_variables, uncertain, strict=True):
        target.assign(source)  # kernels <- posterior means, biases <- biases
    seed = tf.constant([4, 2], tf.int32)
    got = iwaeu.log_weights(x, 7, seed=seed).numpy()
    expected = iwae.log_weights(x, 7, seed=seed).numpy()
    # Remaining weight noise: sigma = softplus(rho) + eps ~ 1.2e-7.
    np.testing.assert_allclose(got, expected, rtol=2e-5)
    assert np.all(np.abs(got) > 1.0)
    # And with real weight noise they differ: the seed does not switch the noise off.
    for layer in _uncertain_layers(iwaeu):
        L.set_posterior_scale(layer, 0.3)
    assert np.max(np.abs(iwaeu.log_weights(x, 7, seed=seed).numpy() - expected)) > 0.1


def _uncertain_layers(model):
    found = []
    for network in (model.encoder, model.decoder):
        for layer in network.submodules:
            if getattr(layer, "kernel_posterior", None) is not None:
                found.append(layer)
    return found


CONV_ARCH = dict(
    latent_sizes=(3,), hidden_sizes=((16,),), data_shape=(8, 6, 2), conv_filters=(4, 5)
)


def _conv_pair(kind):
    """A conv IWAEU of `kind` and a conv IWAE holding its posterior-mean weights."""
    keras.utils.set_random_seed(6)
    x = tf.constant(np.random.default_rng(1).integers(0, 2, (5, 8, 6, 2)), tf.float32)
    iwaeu = build_model("iwaeu", init_scale=1e-9, uncertain_layer_kind=kind, **CONV_ARCH)
    iwae = build_model("iwae", **CONV_ARCH)
    iwaeu(x)
    iwae(x)
    means = [v for v in iwaeu.trainable_variables if "untransformed_scale" not in v.name]
    assert [v.shape for v in means] == [v.shape for v in iwae.trainable_variables]
    for target, source in zip(iwae.trainable_variables, means, strict=True):
        target.assign(source)
    return iwaeu, iwae, x


@pytest.mark.parametrize("kind", ["flipout", "reparameterization"])
def test_conv_sigma_to_zero_limit_equals_iwae_of_the_mean_network(kind):
    iwaeu, iwae, x = _conv_pair(kind)
    seed = tf.constant([4, 2], tf.int64)
    expected = iwae.log_weights(x, 7, seed=seed).numpy()
    np.testing.assert_allclose(iwaeu.log_weights(x, 7, seed=seed).numpy(), expected, rtol=2e-5)
    assert any("conv" in layer.name for layer in _uncertain_layers(iwaeu))
    for layer in _uncertain_layers(iwaeu):
        L.set_posterior_scale(layer, 0.3)
    assert np.max(np.abs(iwaeu.log_weights(x, 7, seed=seed).numpy() - expected)) > 0.1


def test_conv_flipout_gives_each_importance_sample_its_own_encoder_weights():
    # x is tiled k times before the conv stack, so the k samples of one image see k weight
    # draws: q(h|x) differs across samples. One draw per call (reparameterization) cannot.
    seed = tf.constant([1, 9], tf.int64)
    spreads = {}
    for kind in ("flipout", "reparameterization"):
        iwaeu, _, x = _conv_pair(kind)
        for layer in _uncertain_layers(iwaeu):
            L.set_posterior_scale(layer, 0.3)
        ((_, q),) = iwaeu.encoder(x, num_samples=6, seed=seed)
        spreads[kind] = float(tf.reduce_max(tf.math.reduce_std(q.mean, axis=0)))
    assert spreads["flipout"] > 0.05, spreads
    assert spreads["reparameterization"] < 1e-6, spreads


@pytest.mark.parametrize(
    "variant, encoder_uncertain, decoder_uncertain",
    [
        ("iwaeu", True, True),
        ("iwaeu_rec", True, False),
        ("iwaeu_gen", False, True),
    ],
)
def test_posterior_variables_are_trained(variant, encoder_uncertain, decoder_uncertain):
    keras.utils.set_random_seed(0)
    model = build_model(variant, 3, latent_sizes=(2,), hidden_sizes=((8,),), data_shape=(20,))
    x = tf.constant(np.random.default_rng(0).integers(0, 2, (10, 20)), tf.float32)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model(x))
    names = [v.name for v in model.trainable_variables]
    grads = tape.gradient(loss, model.trainable_variables)
    for network, uncertain in (
        (model.encoder, encoder_uncertain),
        (model.decoder, decoder_uncertain),
    ):
        layers = [
            layer
            for layer in _uncertain_layers(model)
            if any(layer is s for s in network.submodules)
        ]
        assert len(layers) == (2 if uncertain else 0)  # one hidden layer + one head
        for layer in layers:
            loc, scale = L.kernel_posterior_variables(layer)
            for variable in (loc, scale):
                assert variable.name in names
                grad = grads[names.index(variable.name)]
                assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_no_kl_enters_the_loss_by_default():
    keras.utils.set_random_seed(0)
    model = build_model("iwaeu", 2, latent_sizes=(2,), hidden_sizes=((8,),), data_shape=(20,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-4))
    x = np.random.default_rng(0).integers(0, 2, (10, 20)).astype(np.float32)
    result = model.evaluate(x, batch_size=10, verbose=0, return_dict=True)
    assert model.losses == []
    assert result["loss"] == pytest.approx(-result["iwae_bound"], rel=1e-6)


def test_kl_weight_adds_the_scaled_weight_kl():
    keras.utils.set_random_seed(0)
    n_train, kl_weight, prior_scale = 200, 0.5, 0.7
    model = build_model(
        "iwaeu",
        2,
        latent_sizes=(2,),
        hidden_sizes=((8,),),
        data_shape=(20,),
        init_scale=0.05,
        kl_weight=kl_weight,
        prior_scale=prior_scale,
        num_train_examples=n_train,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-4))
    x = np.random.default_rng(0).integers(0, 2, (10, 20)).astype(np.float32)
    result = model.evaluate(x, batch_size=10, verbose=0, return_dict=True)
    kl = 0.0
    for layer in _uncertain_layers(model):
        loc, _ = L.kernel_posterior_variables(layer)
        mu = loc.numpy().astype(np.float64)
        sigma = L.posterior_scales(layer).numpy().astype(np.float64) + 1.1920929e-07
        kl += np.sum(np.log(prior_scale / sigma) + (sigma**2 + mu**2) / (2 * prior_scale**2) - 0.5)
    assert len(model.losses) == 4
    assert result["loss"] == pytest.approx(
        -result["iwae_bound"] + kl_weight * kl / n_train, rel=1e-5
    )
    assert kl_weight * kl / n_train > 1.0  # large enough that a missing term would show
