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


# ------------------------------------------------------------------------------ convolutions

CONV_UNCERTAIN = ("flipout", "reparameterization")
CONV_SHAPE = (8, 8, 2)  # height, width, C_in
FILTERS = 3


def _built_conv(kind, filters=FILTERS, kernel_size=3, channels=2, **kwargs):
    layer = L.make_conv2d(filters, kernel_size=kernel_size, kind=kind, **kwargs)
    layer.build((None, 8, 8, channels))
    return layer


def _conv_posterior(seed=0, kernel_size=3, channels=2, filters=FILTERS):
    """A kernel loc, sigma in [0.3, 0.7] (so sigma and sigma^2 differ >= 1.4x) and a bias."""
    gen = np.random.default_rng(seed)
    shape = (kernel_size, kernel_size, channels, filters)
    mu = gen.normal(scale=0.5, size=shape).astype(np.float32)
    sigma = gen.uniform(0.3, 0.7, size=shape).astype(np.float32)
    bias = gen.normal(scale=0.5, size=filters).astype(np.float32)
    return mu, sigma, bias


def _images(rows, seed=0, channels=2):
    """Pixels mixing |x| > 1 and |x| < 1, so that x^2, |x| and x give different variances."""
    gen = np.random.default_rng(seed)
    return gen.normal(scale=1.5, size=(rows, 8, 8, channels)).astype(np.float32)


def _np_conv_same(x, w, stride=1):
    """float64 reference of TF's padding="SAME" NHWC convolution, by shifted matmuls."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    rows, height, width, _ = x.shape
    k = w.shape[0]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    xp = np.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    out = np.zeros((rows, out_h, out_w, w.shape[-1]))
    for i in range(k):
        for j in range(k):
            rows_ij = slice(i, i + (out_h - 1) * stride + 1, stride)
            cols_ij = slice(j, j + (out_w - 1) * stride + 1, stride)
            out += xp[:, rows_ij, cols_ij] @ w[i, j]
    return out


def test_conv_kinds():
    assert L.CONV2D_KINDS == ("deterministic", "flipout", "reparameterization")
    assert {"make_conv2d", "CONV2D_KINDS"} <= set(L.__all__)


@pytest.mark.parametrize(
    "kind, cls",
    [
        ("deterministic", keras.layers.Conv2D),
        ("flipout", tfp.layers.Convolution2DFlipout),
        ("reparameterization", tfp.layers.Convolution2DReparameterization),
    ],
)
def test_conv_kind_maps_to_layer_class(kind, cls):
    layer = L.make_conv2d(5, kernel_size=3, strides=2, kind=kind, activation="relu", name="c")
    assert isinstance(layer, cls) and isinstance(layer, keras.layers.Layer)
    assert layer.name == "c"
    assert layer.filters == 5
    assert tuple(layer.kernel_size) == (3, 3) and tuple(layer.strides) == (2, 2)
    assert layer.padding == "same" and layer.data_format == "channels_last"
    assert layer.activation is keras.activations.relu


def test_conv_local_reparameterization_is_refused():
    with pytest.raises(ValueError, match="flipout") as err:
        L.make_conv2d(3, kernel_size=3, kind="local_reparameterization")
    assert "local_reparameterization" in str(err.value) and "\n" not in str(err.value)


def test_conv_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        L.make_conv2d(3, kernel_size=3, kind="bayes")
    for what in ("filters", "kernel_size", "strides"):
        for bad in (0, -1, 2.0, True):
            kwargs = {"filters": 3, "kernel_size": 3, "strides": 1, what: bad}
            filters = kwargs.pop("filters")
            with pytest.raises(ValueError, match=what):
                L.make_conv2d(filters, kind="flipout", **kwargs)
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="init_scale"):
            L.make_conv2d(3, kernel_size=3, init_scale=bad)  # validated for every kind
        with pytest.raises(ValueError, match="prior_scale"):
            L.make_conv2d(3, kernel_size=3, kind="flipout", prior_scale=bad)
    with pytest.raises(ValueError, match="kl_divergence"):
        L.make_conv2d(3, kernel_size=3, kl_divergence=True)


@pytest.mark.parametrize("strides", [1, 2])
def test_deterministic_conv_is_plain_conv2d(strides):
    layer = _built_conv("deterministic", strides=strides, bias_initializer="ones")
    x = _images(2)
    out = layer(x).numpy()
    expected = _np_conv_same(x, layer.kernel.numpy(), strides) + 1.0
    assert out.shape == (2, 8 // strides, 8 // strides, FILTERS)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(L.call_at_posterior_mean(layer, x).numpy(), out)
    assert layer.losses == []
    with pytest.raises(ValueError, match="kernel posterior"):
        L.posterior_scales(layer)


@pytest.mark.parametrize("kind", CONV_UNCERTAIN)
def test_conv_posterior_variables_and_init(kind):
    layer = _built_conv(kind, init_scale=0.05)
    loc, untransformed = L.kernel_posterior_variables(layer)
    assert loc.shape == untransformed.shape == (3, 3, 2, FILTERS)
    assert sorted(v.name.split("/")[-1] for v in layer.trainable_variables) == [
        "bias_posterior_loc:0",
        "kernel_posterior_loc:0",
        "kernel_posterior_untransformed_scale:0",
    ]
    np.testing.assert_allclose(L.posterior_scales(layer).numpy(), 0.05, rtol=1e-6)
    _, sigma, _ = _conv_posterior()
    L.set_posterior_scale(layer, sigma)  # a full kernel-shaped array
    np.testing.assert_allclose(L.posterior_scales(layer).numpy(), sigma, rtol=1e-5)
    L.set_posterior_scale(layer, np.float32(0.2))  # broadcast
    np.testing.assert_allclose(L.posterior_scales(layer).numpy(), 0.2, rtol=1e-6)
    assert layer.bias_posterior.distribution.__class__.__name__ == "Deterministic"
    assert L.posterior_scales(_built_conv(kind)).numpy().max() == pytest.approx(0.01814993)


@pytest.mark.parametrize("kind", L.CONV2D_KINDS)
def test_conv_loc_is_glorot_uniform(kind):
    k, c_in, filters = 3, 16, 32
    layer = L.make_conv2d(filters, kernel_size=k, kind=kind, bias_initializer="ones")
    layer.build((None, 8, 8, c_in))
    if L.is_uncertain(kind):
        loc = L.kernel_posterior_variables(layer)[0].numpy()
        bias = layer.bias_posterior.distribution.loc.numpy()
    else:
        loc, bias = layer.kernel.numpy(), layer.bias.numpy()
    limit = np.sqrt(6.0 / (k * k * c_in + k * k * filters))  # receptive-field fans
    assert np.abs(loc).max() <= limit
    np.testing.assert_allclose(loc.std(), limit / np.sqrt(3.0), rtol=0.05)
    np.testing.assert_allclose(bias, 1.0)


@pytest.mark.parametrize("kind", CONV_UNCERTAIN)
@pytest.mark.parametrize("strides", [1, 2])
def test_conv_vanishing_scale_gives_the_deterministic_conv(kind, strides):
    layer = _built_conv(kind, strides=strides, activation="tanh")
    mu, _, bias = _conv_posterior()
    _set_posterior(layer, mu, np.float32(1e-8), bias)
    x = _images(3)
    expected = np.tanh(_np_conv_same(x, mu, strides) + bias)
    # The reference itself is TF's convolution with the loc and bias.
    tf_conv = tf.nn.conv2d(x, mu, strides=strides, padding="SAME") + bias
    np.testing.assert_allclose(np.tanh(tf_conv.numpy()), expected, rtol=0, atol=1e-5)
    for i in range(2):
        np.testing.assert_allclose(layer(x, seed=_seed(i)).numpy(), expected, rtol=0, atol=1e-5)
    # At a visible scale the draw is stochastic, but the posterior-mean output is not.
    L.set_posterior_scale(layer, 0.5)
    assert np.abs(layer(x, seed=_seed(0)).numpy() - expected).max() > 1e-2
    at_mean = L.call_at_posterior_mean(layer, x).numpy()
    np.testing.assert_allclose(at_mean, expected, rtol=0, atol=1e-5)


def test_conv_flipout_signs_are_per_row_and_shared_over_positions():
    """1x1 kernel, one channel in and out: row r's noise is s_r * x * dW, one dW per call.

    Per-position signs or noise (e.g. a local reparameterization per position) would break
    the shared sign; an eps per row would break the shared magnitude.
    """
    layer = _built_conv("flipout", filters=1, kernel_size=1, channels=1)
    _set_posterior(layer, np.full((1, 1, 1, 1), 0.3, np.float32), np.float32(0.5), [0.1])
    x = np.repeat(_images(1, channels=1), 32, axis=0)
    for i in range(3):
        noise = layer(x, seed=_seed(i)).numpy().astype(np.float64) - (0.3 * x + 0.1)
        ratio = noise / x  # = s_r * dW at every position of row r
        d_w = np.abs(ratio[0, 0, 0, 0])
        assert d_w > 1e-3
        np.testing.assert_allclose(np.abs(ratio), d_w, rtol=1e-4)
        signs = np.sign(ratio[:, :1, :1, :])
        np.testing.assert_allclose(ratio, np.broadcast_to(signs * d_w, ratio.shape), rtol=1e-4)
        assert {-1.0, 1.0} == set(signs.ravel())  # both signs among 32 rows


def _draws(layer, x, seeds):
    call = tf.function(lambda x, seed: layer(x, seed=seed))
    xt = tf.constant(x)
    return np.stack([call(xt, _seed(i)).numpy() for i in range(seeds)]).astype(np.float64)


def test_conv_flipout_gives_each_row_its_own_draw_with_the_right_moments():
    layer = _built_conv("flipout")
    mu, sigma, bias = _conv_posterior()
    _set_posterior(layer, mu, sigma, bias)
    x = np.repeat(_images(1), 4, axis=0)  # four identical rows
    n = 400
    outs = _draws(layer, x, n)  # [n, rows, 8, 8, filters]

    # Identical rows get different outputs within a call, unless their sign patterns
    # s_in s_out^T coincide: probability 2 / 2^(C_in + filters) = 1/16 here (the same eps).
    same = np.abs(outs[:, 0] - outs[:, 1]).max(axis=(1, 2, 3)) < 1e-4
    p_same = 2.0 / 2 ** (CONV_SHAPE[-1] + FILTERS)
    assert abs(same.mean() - p_same) < 5 * np.sqrt(p_same * (1 - p_same) / n), same.mean()
    assert np.all(np.abs(outs[~same, 0] - outs[~same, 1]).max(axis=(1, 2, 3)) > 1e-2)
    mean_true = _np_conv_same(x[:1], mu)[0] + bias
    var_true = _np_conv_same(x[:1] ** 2, sigma**2)[0]
    noise = outs - mean_true
    corr = np.corrcoef(noise[:, 0].ravel(), noise[:, 1].ravel())[0, 1]
    assert abs(corr) < 0.1, corr  # shared weights would give 1

    # Row 0 over the seeds: mean conv(x, mu) + b, variance conv(x^2, sigma^2) per position.
    row = outs[:, 0]
    mean_hat, var_hat = row.mean(axis=0), row.var(axis=0, ddof=1)
    assert np.all(np.abs(mean_hat - mean_true) < 5 * np.sqrt(var_true / n))
    rel_sd = np.sqrt(2.0 / (n - 1))  # the output is Gaussian: sd of var_hat / var

    def rel_err(var):
        return np.mean(np.abs(var_hat / var - 1.0))

    assert rel_err(var_true) < 3 * rel_sd, rel_err(var_true)  # ~0.21; expect ~0.8 * rel_sd

    x64, s64 = x[:1].astype(np.float64), sigma.astype(np.float64)
    wrong = {
        "conv(x^2, sigma)": _np_conv_same(x64**2, s64)[0],
        "conv(|x|, sigma^2)": _np_conv_same(np.abs(x64), s64**2)[0],
        "conv(x, sigma)^2": _np_conv_same(x64, s64)[0] ** 2,
        "conv(|x|, sigma)^2": _np_conv_same(np.abs(x64), s64)[0] ** 2,
    }
    for name, var_wrong in wrong.items():
        assert np.mean(np.abs(var_wrong / var_true - 1.0)) > 0.3, name  # design check
        assert rel_err(var_wrong) > 3 * rel_sd, name  # rejected by the same criterion


def test_conv_reparameterization_shares_one_draw_per_call():
    """Negative control: one kernel per call, so identical rows give identical outputs."""
    layer = _built_conv("reparameterization")
    mu, sigma, bias = _conv_posterior()
    _set_posterior(layer, mu, sigma, bias)
    x = np.repeat(_images(1), 4, axis=0)
    outs = _draws(layer, x, 5)
    np.testing.assert_allclose(outs, np.broadcast_to(outs[:, :1], outs.shape), atol=1e-5)
    assert np.abs(outs[0, 0] - outs[1, 0]).max() > 0.1  # but each call draws anew


@pytest.mark.parametrize("kind", CONV_UNCERTAIN)
def test_conv_seed_makes_draws_stateless_and_reproducible(kind):
    layer = L.make_conv2d(FILTERS, kernel_size=3, kind=kind, init_scale=0.5)
    x = tf.ones([2, *CONV_SHAPE])
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


@pytest.mark.parametrize("kind", ["flipout", "reparameterization"])
def test_conv_draws_under_xla_match_eager(kind):
    layer = _built_conv(kind, strides=2, activation="tanh", init_scale=0.3)
    x = tf.constant(_images(5))
    compiled = tf.function(lambda x, seed: layer(x, seed=seed), jit_compile=True)
    for i in range(2):
        eager = layer(x, seed=_seed(i)).numpy()
        np.testing.assert_allclose(compiled(x, _seed(i)).numpy(), eager, rtol=0, atol=1e-5)
    assert np.abs(compiled(x, _seed(0)).numpy() - compiled(x, _seed(1)).numpy()).max() > 1e-2


@pytest.mark.parametrize("kind", CONV_UNCERTAIN)
@pytest.mark.parametrize("prior_scale", [1.0, 0.7])
def test_conv_kl_loss_is_analytic_and_unscaled(kind, prior_scale):
    layer = _built_conv(kind, kl_divergence=True, prior_scale=prior_scale)
    mu, sigma, _ = _conv_posterior(seed=5)
    _set_posterior(layer, mu, sigma, np.full(FILTERS, 3.0, np.float32))  # bias gets no KL
    expected = _numpy_kl(mu, sigma, prior_scale)
    assert abs(expected - _numpy_kl(mu, sigma, 1.0)) > 1.0 or prior_scale == 1.0
    for rows in (1, 4):  # unscaled: independent of the batch size; no accumulation
        layer(_images(rows), seed=_seed(rows))
        assert len(layer.losses) == 1
        assert layer.losses[0].shape == ()
        np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", CONV_UNCERTAIN)
def test_conv_no_kl_loss_by_default(kind):
    layer = _built_conv(kind)
    layer(_images(2), seed=_seed(0))
    assert layer.losses == []
    assert layer.kernel_divergence_fn is None and layer.bias_divergence_fn is None


@pytest.mark.parametrize("kind", CONV_UNCERTAIN)
def test_conv_variables_get_gradients(kind):
    layer = _built_conv(kind, activation="tanh", kl_divergence=True)
    x = tf.constant(_images(3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, seed=_seed(1)) ** 2) + tf.add_n(layer.losses)
    grads = tape.gradient(loss, layer.trainable_variables)
    for var, grad in zip(layer.trainable_variables, grads, strict=True):
        assert grad is not None and float(tf.norm(grad)) > 0.0, var.name


@pytest.mark.parametrize("kind", ["local_reparameterization", "flipout", "reparameterization"])
def test_dense_draws_under_xla_match_eager(kind):
    # Every weight draw comes from iwae_tf.rng's Philox, the same with and without XLA. (TFP's
    # own d.sample(seed=...) did not promise that, and differed by O(1) under XLA.)
    layer = L.make_dense(6, kind=kind, activation="tanh", init_scale=0.3)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 5)), tf.float32)
    compiled = tf.function(lambda x, seed: layer(x, seed=seed), jit_compile=True)
    for i in range(2):
        seed = tf.constant([i, 7], tf.int64)
        eager = layer(x, seed=seed).numpy()
        np.testing.assert_allclose(compiled(x, seed).numpy(), eager, rtol=0, atol=1e-5)
    first, second = (compiled(x, tf.constant([i, 7], tf.int64)).numpy() for i in range(2))
    assert np.abs(first - second).max() > 1e-2
