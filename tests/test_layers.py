"""Tests for iwae_tf.layers: the dense layer factory with (un)certain weights."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from iwae_tf import layers as L

UNCERTAIN = ("local_reparameterization", "flipout", "reparameterization")

# Inputs mixing |x| > 1 and |x| < 1, so x^2 sigma^2, x^2 sigma, |x| sigma^2 and (x sigma)^2 differ.
X = np.array([[2.0, -0.5, 1.5], [0.3, -1.8, 0.7], [-1.2, 0.4, -2.5]], dtype=np.float32)
MU = np.array([[0.5, -0.3], [0.2, 0.8], [-0.7, 0.1]], dtype=np.float32)
# Chosen so every wrong variance formula below is >= 28% off the right one, in every entry.
SIGMA = np.array([[0.6, 0.5], [0.7, 0.5], [0.6, 0.4]], dtype=np.float32)
BIAS = np.array([0.25, -0.4], dtype=np.float32)


@pytest.fixture(autouse=True)
def _global_seed():
    keras.utils.set_random_seed(1234)  # python, numpy and TF global seeds
    yield


def _softplus(u):
    return np.log1p(np.exp(u))


def _built(kind, units=2, d_in=3, **kwargs):
    layer = L.make_dense(units, kind=kind, **kwargs)
    layer.build((None, d_in))
    return layer


def _seed(i, j=0):
    return tf.constant([i, j], tf.int32)


def _call(layer, x, i=0):
    """The layer on x; uncertain layers draw with seed (i, 0)."""
    return layer(x, seed=_seed(i)) if L.is_uncertain(_kind(layer)) else layer(x)


def _kind(layer):
    if isinstance(layer, tfp.layers.DenseLocalReparameterization):
        return "local_reparameterization"
    if isinstance(layer, tfp.layers.DenseFlipout):
        return "flipout"
    if isinstance(layer, tfp.layers.DenseReparameterization):
        return "reparameterization"
    return "deterministic"


def _set_posterior(layer, loc, sigma, bias):
    loc_var, _ = L.kernel_posterior_variables(layer)
    loc_var.assign(loc)
    L.set_posterior_scale(layer, sigma)
    layer.bias_posterior.distribution.loc.assign(bias)


# ------------------------------------------------------------------------------ API, mapping


def test_kind_predicates():
    assert L.LAYER_KINDS == (
        "deterministic",
        "local_reparameterization",
        "flipout",
        "reparameterization",
    )
    assert [L.is_uncertain(k) for k in L.LAYER_KINDS] == [False, True, True, True]
    assert [L.draws_per_row(k) for k in L.LAYER_KINDS] == [False, True, True, False]
    for fn in (L.is_uncertain, L.draws_per_row):
        with pytest.raises(ValueError, match="kind"):
            fn("bayesian")


@pytest.mark.parametrize(
    "kind, cls",
    [
        ("deterministic", keras.layers.Dense),
        ("local_reparameterization", tfp.layers.DenseLocalReparameterization),
        ("flipout", tfp.layers.DenseFlipout),
        ("reparameterization", tfp.layers.DenseReparameterization),
    ],
)
def test_kind_maps_to_layer_class(kind, cls):
    layer = L.make_dense(5, kind=kind, activation="tanh", name=f"my_{kind}")
    assert isinstance(layer, cls)
    assert isinstance(layer, keras.layers.Layer)  # a tf_keras (Keras 2) layer
    assert layer.name == f"my_{kind}"
    assert layer.units == 5
    assert layer.activation is keras.activations.tanh


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        L.make_dense(3, kind="bayes")
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="init_scale"):
            L.make_dense(3, kind="local_reparameterization", init_scale=bad)
        with pytest.raises(ValueError, match="init_scale"):
            L.make_dense(3, init_scale=bad)  # validated for every kind
    with pytest.raises(ValueError, match="prior_scale"):
        L.make_dense(3, kind="flipout", prior_scale=0.0)
    with pytest.raises(ValueError, match="units"):
        L.make_dense(0, kind="flipout")
    with pytest.raises(ValueError, match="kl_divergence"):
        L.make_dense(3, kind="deterministic", kl_divergence=True)


def test_posterior_helpers_reject_deterministic_and_unbuilt():
    with pytest.raises(ValueError, match="kernel posterior"):
        L.posterior_scales(_built("deterministic"))
    with pytest.raises(ValueError, match="kernel posterior"):
        L.posterior_scales(L.make_dense(2, kind="flipout"))  # not built yet
    with pytest.raises(ValueError, match="scale"):
        L.set_posterior_scale(_built("flipout"), 0.0)


# ------------------------------------------------------------------------------ moments


def test_local_reparameterization_moments():
    """a = x mu + b + sqrt(x^2 sigma^2) eps: per-row mean x mu + b, variance x^2 sigma^2."""
    layer = _built("local_reparameterization")
    _set_posterior(layer, MU, SIGMA, BIAS)
    n = 20_000
    xt = np.repeat(X, n, axis=0)  # rows [x0]*n, [x1]*n, [x2]*n
    a = _call(layer, xt).numpy().astype(np.float64).reshape(3, n, 2)

    x64, mu64, s64 = X.astype(np.float64), MU.astype(np.float64), SIGMA.astype(np.float64)
    mean_true = x64 @ mu64 + BIAS
    var_true = (x64**2) @ (s64**2)
    mean_hat, var_hat = a.mean(axis=1), a.var(axis=1, ddof=1)

    se_mean = np.sqrt(var_true / n)
    se_var = var_true * np.sqrt(2.0 / (n - 1))  # Gaussian sample variance
    assert np.all(np.abs(mean_hat - mean_true) < 4 * se_mean), (mean_hat, mean_true)
    assert np.all(np.abs(var_hat - var_true) < 4 * se_var), (var_hat, var_true)

    wrong = {
        "x^2 sigma": (x64**2) @ s64,
        "|x| sigma^2": np.abs(x64) @ (s64**2),
        "(x sigma)^2": (x64 @ s64) ** 2,
        "(|x| sigma)^2": (np.abs(x64) @ s64) ** 2,
    }
    for name, var_wrong in wrong.items():
        assert np.all(np.abs(var_wrong - var_true) > 0.25 * var_true), name  # design check
        assert np.all(np.abs(var_hat - var_wrong) > 10 * se_var), name  # rejected by the data


# ------------------------------------------------------------------------------ independence


def _pair_correlation(kind, calls=40, rows=500):
    """Correlation between the outputs of equal rows 2k and 2k+1, pooled over calls."""
    layer = _built(kind)
    _set_posterior(layer, MU, SIGMA, BIAS)
    xb = np.repeat(X[:1], rows, axis=0)
    outs = np.stack([_call(layer, xb, i).numpy() for i in range(calls)])  # [calls, rows, units]
    noise = outs - (X[:1] @ MU + BIAS)
    first = noise[:, 0::2, :].reshape(-1, 2)
    second = noise[:, 1::2, :].reshape(-1, 2)
    corr = [np.corrcoef(first[:, j], second[:, j])[0, 1] for j in range(2)]
    return layer, outs, np.array(corr)


@pytest.mark.parametrize("kind", ["local_reparameterization", "flipout"])
def test_per_row_kinds_give_each_row_its_own_draw(kind):
    layer, outs, corr = _pair_correlation(kind)
    # Within one call equal rows get different outputs ...
    assert np.all(np.std(outs, axis=1) > 0.1)
    n_pairs = outs.shape[0] * outs.shape[1] // 2
    # ... that are uncorrelated: |r| < 5 / sqrt(n_pairs) ~= 0.045 (shared weights give r = 1).
    assert np.all(np.abs(corr) < 5 / np.sqrt(n_pairs)), corr
    # And calls differ from each other.
    assert not np.allclose(outs[0], outs[1])


def test_reparameterization_shares_one_draw_per_call():
    layer, outs, corr = _pair_correlation("reparameterization", calls=30, rows=8)
    # All equal rows of one call see the same weights, hence the same output (up to the
    # matmul kernel's rounding, which CPU kernels do not promise to be equal across rows;
    # distinct weight draws would differ by ~0.5 here) ...
    np.testing.assert_allclose(
        outs, np.broadcast_to(outs[:, :1, :], outs.shape), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(corr, 1.0, atol=1e-6)
    # ... but each call draws new weights.
    per_call = outs[:, 0, :]
    assert len({tuple(np.round(r, 6)) for r in per_call}) == per_call.shape[0]
    assert np.all(per_call.std(axis=0) > 0.1)


def test_different_inputs_in_a_batch_with_reparameterization_share_weights():
    """One W per call: the output is exactly x W + b for one W, solvable from 3 rows."""
    layer = _built("reparameterization")
    _set_posterior(layer, MU, SIGMA, BIAS)
    x = np.concatenate([X, X[::-1] * 0.5], axis=0)
    a = _call(layer, x).numpy().astype(np.float64)
    w = np.linalg.solve(X.astype(np.float64), a[:3] - BIAS)  # the call's single weight draw
    np.testing.assert_allclose(a[3:], (X[::-1] * 0.5) @ w + BIAS, rtol=1e-4, atol=1e-4)
    assert np.abs(w - MU).max() > 0.05  # it really is a random draw, not the mean


# ------------------------------------------------------------------------------ variables


@pytest.mark.parametrize("kind", UNCERTAIN)
def test_variables_are_trainable_in_a_tf_keras_model(kind):
    inp = keras.Input((4,))
    hidden = L.make_dense(8, kind=kind, activation="tanh", name="hidden")
    out = L.make_dense(3, kind=kind, name="out")
    model = keras.Model(inp, out(hidden(inp, seed=_seed(1)), seed=_seed(2)))

    names = sorted(v.name for v in model.trainable_variables)
    assert names == sorted(
        f"{layer}/{var}:0"
        for layer in ("hidden", "out")
        for var in (
            "kernel_posterior_loc",
            "kernel_posterior_untransformed_scale",
            "bias_posterior_loc",
        )
    )
    trainable_ids = {id(v) for v in model.trainable_variables}
    for layer in (hidden, out):
        loc, untransformed = L.kernel_posterior_variables(layer)
        assert id(loc) in trainable_ids and id(untransformed) in trainable_ids
        assert loc.shape == untransformed.shape == (layer.input_spec.axes[-1], layer.units)

    x = tf.constant(np.random.default_rng(0).normal(size=(16, 4)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    for var, grad in zip(model.trainable_variables, grads, strict=True):
        assert grad is not None, var.name
        assert float(tf.norm(grad)) > 0.0, var.name


def test_deterministic_is_plain_dense():
    layer = _built("deterministic", bias_initializer=keras.initializers.Constant(0.7))
    assert sorted(v.name.split("/")[-1] for v in layer.trainable_variables) == [
        "bias:0",
        "kernel:0",
    ]
    out = _call(layer, X).numpy()
    np.testing.assert_allclose(out, X @ layer.kernel.numpy() + 0.7, rtol=1e-6, atol=1e-6)
    assert layer.losses == []


# ------------------------------------------------------------------------------ KL


@pytest.mark.parametrize("kind", UNCERTAIN)
def test_no_kl_loss_by_default(kind):
    layer = _built(kind)
    _call(layer, X)
    assert layer.losses == []
    assert layer.kernel_divergence_fn is None and layer.bias_divergence_fn is None
    inp = keras.Input((3,))
    model = keras.Model(inp, _call(layer, inp))
    model(X)
    assert model.losses == []


def _numpy_kl(mu, sigma, prior_scale):
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    return np.sum(np.log(prior_scale / sigma) + (sigma**2 + mu**2) / (2 * prior_scale**2) - 0.5)


@pytest.mark.parametrize("kind", UNCERTAIN)
@pytest.mark.parametrize("prior_scale", [1.0, 0.7])
def test_kl_loss_is_analytic_and_unscaled(kind, prior_scale):
    rng = np.random.default_rng(3)
    layer = _built(kind, units=4, d_in=5, kl_divergence=True, prior_scale=prior_scale)
    mu = rng.normal(scale=0.5, size=(5, 4)).astype(np.float32)
    sigma = rng.uniform(0.05, 1.5, size=(5, 4)).astype(np.float32)
    _set_posterior(layer, mu, sigma, np.full(4, 3.0, np.float32))  # bias gets no KL
    expected = _numpy_kl(mu, sigma, prior_scale)
    # A prior stuck at TFP's default N(0, 1) would be caught here for prior_scale = 0.7.
    assert abs(expected - _numpy_kl(mu, sigma, 1.0)) > 1.0 or prior_scale == 1.0

    for batch in (1, 7):  # unscaled: independent of the batch size; no accumulation
        _call(layer, np.ones((batch, 5), np.float32))
        assert len(layer.losses) == 1
        kl = layer.losses[0]
        assert kl.shape == ()
        np.testing.assert_allclose(float(kl), expected, rtol=1e-5)


# ------------------------------------------------------------------------------ init


@pytest.mark.parametrize("kind", UNCERTAIN)
def test_init_scale(kind):
    layer = _built(kind, units=30, d_in=20)
    _, untransformed = L.kernel_posterior_variables(layer)
    np.testing.assert_allclose(_softplus(untransformed.numpy()), np.log1p(np.exp(-4.0)), rtol=1e-6)
    np.testing.assert_allclose(L.posterior_scales(layer).numpy(), 0.01814993, rtol=1e-6)
    assert abs(L.DEFAULT_INIT_SCALE - 0.0181499279) < 1e-9

    layer = _built(kind, units=30, d_in=20, init_scale=0.05)
    np.testing.assert_allclose(L.posterior_scales(layer).numpy(), 0.05, rtol=1e-6)
    # The distribution TFP samples from uses exactly this sigma (plus float32 eps).
    np.testing.assert_allclose(
        tf.convert_to_tensor(layer.kernel_posterior.distribution.scale).numpy(), 0.05, rtol=1e-5
    )


@pytest.mark.parametrize("kind", L.LAYER_KINDS)
def test_loc_is_glorot_uniform_and_bias_initializer_is_used(kind):
    d_in, units = 200, 100
    layer = _built(kind, units=units, d_in=d_in, bias_initializer=keras.initializers.Constant(-1.3))
    if L.is_uncertain(kind):
        loc, _ = L.kernel_posterior_variables(layer)
        bias = layer.bias_posterior.distribution.loc
        assert layer.bias_posterior.distribution.__class__.__name__ == "Deterministic"
    else:
        loc, bias = layer.kernel, layer.bias
    limit = np.sqrt(6.0 / (d_in + units))
    loc = loc.numpy()
    assert np.abs(loc).max() <= limit
    np.testing.assert_allclose(loc.std(), limit / np.sqrt(3.0), rtol=0.03)
    np.testing.assert_allclose(bias.numpy(), -1.3)
    assert np.all(_built(kind, units=4).weights[-1].numpy() == 0.0)  # default "zeros" bias


@pytest.mark.parametrize("kind", UNCERTAIN)
def test_vanishing_scale_gives_the_deterministic_layer(kind):
    layer = _built(kind, activation="tanh")
    _set_posterior(layer, MU, np.float32(1e-8), BIAS)
    np.testing.assert_allclose(L.posterior_scales(layer).numpy(), 1e-8, rtol=1e-3)
    expected = np.tanh(X.astype(np.float64) @ MU + BIAS)
    for i in range(2):
        np.testing.assert_allclose(_call(layer, X, i).numpy(), expected, rtol=0, atol=2e-6)
    # Sanity: at a visible scale the same layer is clearly stochastic.
    L.set_posterior_scale(layer, 0.5)
    assert np.abs(_call(layer, X).numpy() - expected).max() > 1e-2


@pytest.mark.parametrize("kind", UNCERTAIN)
def test_seed_makes_draws_stateless_and_reproducible(kind):
    layer = L.make_dense(4, kind=kind, init_scale=0.5)
    x = tf.ones([3, 6])
    seed = tf.constant([7, 11], tf.int32)
    first, again = layer(x, seed=seed).numpy(), layer(x, seed=seed).numpy()
    np.testing.assert_array_equal(first, again)  # The same ops on the same inputs.
    other = layer(x, seed=tf.constant([7, 12], tf.int32)).numpy()
    assert np.all(np.abs(first - other) > 1e-6)
    with pytest.raises(ValueError, match="seed"):
        layer(x, seed=None)

    @tf.function
    def traced(seed):
        return layer(x, seed=seed)

    graph = traced.get_concrete_function(tf.TensorSpec([2], tf.int32)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert not op_types & {"RandomStandardNormal", "RandomUniform"}, op_types
    np.testing.assert_array_equal(traced(seed).numpy(), first)


def test_repeats_equals_tiling_the_inputs():
    """`repeats=k` computes the moments once per row; the draw equals that on x tiled k times."""
    layer = _built("local_reparameterization", units=5, d_in=3, init_scale=0.5)
    x = tf.constant(X)
    seed = tf.constant([3, 9], tf.int32)
    repeated = layer(x, seed=seed, repeats=4).numpy()
    tiled = layer(tf.tile(x, [4, 1]), seed=seed).numpy()  # sample major, as repeats
    assert repeated.shape == (4 * len(X), 5)
    np.testing.assert_allclose(repeated, tiled, rtol=1e-6, atol=1e-6)
    # Every copy of a row still gets its own weight draw.
    copies = repeated.reshape(4, len(X), 5)
    assert np.all(np.abs(copies[0] - copies[1]) > 1e-6)
