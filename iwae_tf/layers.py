r"""Dense and 2-D convolution layer factories: where the (uncertain) network weights live.

Every dense layer of the encoder and decoder is built by :func:`make_dense`, every convolution by
:func:`make_conv2d`. A layer is either deterministic (a point estimate ``W``, as in the VAE / IWAE
of Burda et al. 2016) or *uncertain*: its kernel ``W`` (shape ``[d_in, d_out]``) has a
factorized Gaussian variational posterior

.. math::

    q(W) = \prod_{i,j} \mathcal{N}(W_{ij};\ \mu_{ij},\ \sigma_{ij}^2),
    \qquad \sigma_{ij} = \operatorname{softplus}(\rho_{ij}),

with trainable ``loc`` :math:`\mu` and *untransformed* scale :math:`\rho` (TFP adds a float
epsilon, ~1.2e-7 for float32, to the softplus). This is the IWAE with uncertain weights
("IWAEU") of Hernández-Lobato, Bui, Li, Hernández-Lobato & Turner, where each importance sample
carries its own draw of the network weights.

How a forward pass ``a = x W`` is sampled differs between the uncertain kinds:

* ``"local_reparameterization"`` (Kingma, Salimans & Welling 2015). For ``W ~ q`` the
  pre-activation :math:`a_j = \sum_i x_i W_{ij}` is exactly Gaussian with mean
  :math:`\sum_i x_i \mu_{ij}` and variance :math:`\sum_i x_i^2 \sigma_{ij}^2`, so the layer samples
  it directly::

      a = x @ mu + sqrt(x**2 @ sigma**2) * eps,      eps ~ N(0, I), one eps per row and unit.

  Each row of a batch therefore gets its own independent weight draw: since the columns of ``W``
  are independent, this is exact in distribution, for every row, as if that row had sampled its
  own ``W`` (through a whole stack of such layers too), at the cost of one extra matmul and
  with lower gradient variance than sampling ``W``. Rows that should be distinct importance
  samples must thus be distinct rows. Because the mean and variance of ``a`` depend on ``x``
  only, the layer's ``repeats`` argument computes them once per input row and repeats them
  before adding each output row's noise: the encoder's first layer costs two matmuls per
  example, not per importance sample, with the same distribution as tiling ``x``.
* ``"flipout"`` (Wen, Vicol, Ba, Tran & Grosse 2018). One perturbation ``dW ~ N(0, sigma^2)``
  per call, decorrelated across rows by random sign flips::

      a = x @ mu + ((x * s_in) @ dW) * s_out,        s_in, s_out ~ Rademacher per row.

  Every row gets a pseudo-independent weight draw (each row's marginal is exactly ``q``;
  different rows are uncorrelated but not independent).
* ``"reparameterization"`` (Kingma & Welling 2014; Blundell et al. 2015). One draw
  ``W = mu + sigma * eps`` per call, shared by *every* row of the batch. When rows are importance
  samples that should each have their own weights this is a DIFFERENT estimator: all ``K``
  samples of a call see the same network. The model must then not rely on tiling for
  per-sample weights (see :func:`draws_per_row`).

Convolutions (:func:`make_conv2d`, kernel ``[kh, kw, C_in, filters]``, padding ``"same"``,
channels last) come in the kinds ``"deterministic"``, ``"flipout"`` and ``"reparameterization"``
(:data:`CONV2D_KINDS`), with the same posterior, prior, KL, bias and seed conventions as the dense
layers. Flipout draws its Rademacher signs per row and channel, broadcast over the spatial
positions (as TFP's ``Convolution2DFlipout``)::

    a = conv(x, mu) + conv(x * s_in, dW) * s_out,   dW ~ N(0, sigma^2) one per call,
    s_in [rows, 1, 1, C_in], s_out [rows, 1, 1, filters] ~ Rademacher,

so each row sees one weight draw ``mu + s_in s_out dW``, distributed exactly as ``q``, at all of
its positions. There is no ``"local_reparameterization"`` convolution: the output positions of a
row share one kernel, so their pre-activations are correlated, and sampling each position
independently is a different model (a per-position local reparameterization would only
approximate the weight posterior's predictive).

Bias: for every uncertain kind the bias is a point estimate (a ``tfd.Deterministic`` posterior,
``is_singular=True``, TFP's default), initialized by ``bias_initializer`` (the decoder's output
layer passes ``logit(mean pixel)``). This is a deliberate choice: the uncertainty, and the KL,
live in the kernel only; the bias is an ordinary trained parameter with no prior.

Initialization: the posterior loc is initialized like the deterministic layer's kernel
(``glorot_uniform``), and the untransformed scale is the constant ``inverse_softplus(init_scale)``
(default ``init_scale = softplus(-4) ~= 0.018``), so an uncertain network starts close to the
deterministic one.

KL: by default **no** KL term exists (``layer.losses`` stays empty), so nothing is added to a
model's loss behind its back. With ``kl_divergence=True`` the analytic
``KL(q(W) || N(0, prior_scale^2 I))`` of the kernel is added to ``layer.losses`` on every call,
*unscaled*; the model multiplies it by ``kl_weight / N_train``. (tf_keras resets a layer's
call-time losses at every top-level call, so they do not accumulate across calls.)

Randomness: every uncertain layer is called as ``layer(x, seed=seed)`` with a ``[2]`` stateless
seed (see `iwae_tf.rng`), and all its draws are functions of that seed: the same inputs and seed
give the same outputs in any process, with and without XLA (to float32 rounding). The
local-reparameterization and flipout layers (dense and convolutional) write their forward passes
out, and the reparameterization layers draw their kernel ``loc + scale * eps``; all noise comes
from `iwae_tf.rng`.

References:
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    https://arxiv.org/abs/1509.00519

    J. M. Hernández-Lobato, T. D. Bui, Y. Li, D. Hernández-Lobato, R. E. Turner. Importance
    Weighted Autoencoders with Uncertain Neural Network Parameters.

    D. P. Kingma, T. Salimans, M. Welling. Variational Dropout and the Local Reparameterization
    Trick. NeurIPS 2015. https://arxiv.org/abs/1506.02557

    Y. Wen, P. Vicol, J. Ba, D. Tran, R. Grosse. Flipout: Efficient Pseudo-Independent Weight
    Perturbations on Mini-Batches. ICLR 2018. https://arxiv.org/abs/1803.04386

    D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
    https://arxiv.org/abs/1312.6114

    C. Blundell, J. Cornebise, K. Kavukcuoglu, D. Wierstra. Weight Uncertainty in Neural
    Networks. ICML 2015. https://arxiv.org/abs/1505.05424
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from iwae_tf import rng

__all__ = [
    "CONV2D_KINDS",
    "check_conv_kind",
    "DEFAULT_INIT_SCALE",
    "LAYER_KINDS",
    "draws_per_row",
    "is_uncertain",
    "call_at_posterior_mean",
    "kernel_posterior_variables",
    "make_conv2d",
    "make_dense",
    "posterior_scales",
    "set_posterior_scale",
]

LAYER_KINDS: tuple[str, ...] = (
    "deterministic",
    "local_reparameterization",
    "flipout",
    "reparameterization",
)
"""Valid values of ``kind`` for :func:`make_dense`."""


class _SeedableSampling:
    """Mixin for TFP variational layers (dense and convolutional): ``call(inputs, seed)``.

    TFP samples the posterior with ``kernel_posterior_tensor_fn(distribution)``; routing it
    through `_sample_posterior` draws ``W = loc + scale * eps`` with ``eps`` from the call's
    seed by `iwae_tf.rng` (Philox in plain ops), so the draw is the same with and without XLA.
    (TFP's own ``d.sample(seed=...)`` uses TensorFlow's stateless sampler, whose algorithm XLA
    may change.)
    """

    _call_seed: tf.Tensor | None = None

    def call(self, inputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        if seed is None:
            raise ValueError(f"Layer {self.name!r} needs a seed for its weight draw.")
        self._call_seed = seed
        try:
            return super().call(inputs)
        finally:
            self._call_seed = None

    def _sample_posterior(self, distribution: Any) -> tf.Tensor:
        normal = distribution.distribution
        return normal.loc + normal.scale * rng.normal(tf.shape(normal.loc), self._call_seed)


def _bias_activation_divergence(layer: keras.layers.Layer, outputs: tf.Tensor) -> tf.Tensor:
    """The end of TFP's variational forward pass: point bias, activation, optional KL.

    ``tf.nn.bias_add`` adds along the last axis, so this serves dense ``[rows, units]`` and
    channels-last convolution ``[rows, height, width, filters]`` outputs alike.
    """
    outputs = tf.nn.bias_add(outputs, layer.bias_posterior.distribution.loc)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    layer.kernel_posterior_tensor = None  # As TFP's local reparameterization: no kernel sample.
    layer.bias_posterior_tensor = layer.bias_posterior.distribution.loc
    layer._apply_divergence(
        layer.kernel_divergence_fn,
        layer.kernel_posterior,
        layer.kernel_prior,
        layer.kernel_posterior_tensor,
        name="divergence_kernel",
    )
    return outputs


class DenseLocalReparameterization(tfp.layers.DenseLocalReparameterization):
    """``tfp.layers.DenseLocalReparameterization`` with a stateless seed, forward pass written out.

    ``x @ mu + sqrt(x**2 @ sigma**2) * eps`` costs the two matmuls and one draw of ``eps``
    (Philox in plain ops, see `iwae_tf.rng`, fast under XLA) without building TFP distributions
    on every call.
    """

    def call(
        self,
        inputs: tf.Tensor,
        seed: tf.Tensor,
        repeats: int | tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Samples the layer's output for every row.

        Args:
          inputs: [rows, d_in].
          seed: [2] stateless seed of the draw.
          repeats: Optional output rows per input row (an int or int32 scalar tensor): the
            output is then [repeats * rows, units], sample major, each row with its own weight
            draw, as if `inputs` had been tiled `repeats` times; the mean and variance matmuls
            run once per input row.

        Returns:
          The activations.
        """
        inputs = tf.convert_to_tensor(inputs, dtype=self.dtype)
        posterior = self.kernel_posterior.distribution
        mean = tf.matmul(inputs, posterior.loc)
        stddev = tf.sqrt(tf.matmul(tf.square(inputs), tf.square(posterior.scale)))
        if repeats is not None:
            mean = tf.reshape(tf.tile(mean[tf.newaxis], [repeats, 1, 1]), [-1, self.units])
            stddev = tf.reshape(tf.tile(stddev[tf.newaxis], [repeats, 1, 1]), [-1, self.units])
        outputs = mean + stddev * rng.normal(tf.shape(mean), seed)
        return _bias_activation_divergence(self, outputs)


class DenseFlipout(tfp.layers.DenseFlipout):
    """``tfp.layers.DenseFlipout`` with a stateless seed, forward pass written out.

    ``x @ mu + ((x * s_in) @ (sigma * eps)) * s_out``: one ``eps ~ N(0, I)`` of the kernel's
    shape per call, and Rademacher signs ``s_in`` [rows, d_in], ``s_out`` [rows, units] per row
    (Wen et al. 2018, eq. 3), all three drawn from the call's seed with `iwae_tf.rng`.
    """

    def call(self, inputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Samples the layer's output for every row, from the [2] stateless `seed`."""
        inputs = tf.convert_to_tensor(inputs, dtype=self.dtype)
        posterior = self.kernel_posterior.distribution
        kernel_seed, input_seed, output_seed = rng.split(seed, 3)
        perturbation = posterior.scale * rng.normal(tf.shape(posterior.loc), kernel_seed)
        input_signs = rng.signs(tf.shape(inputs), input_seed)
        output_signs = rng.signs([tf.shape(inputs)[0], self.units], output_seed)
        outputs = tf.matmul(inputs, posterior.loc)
        outputs += tf.matmul(inputs * input_signs, perturbation) * output_signs
        return _bias_activation_divergence(self, outputs)


class DenseReparameterization(_SeedableSampling, tfp.layers.DenseReparameterization):
    """``tfp.layers.DenseReparameterization`` whose one kernel draw per call is seeded."""


def _conv2d(layer: keras.layers.Layer, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """The layer's convolution (its strides, padding and dilation, NHWC) with a given kernel."""
    return tf.nn.conv2d(
        inputs,
        kernel,
        strides=layer.strides,
        padding=layer.padding.upper(),
        dilations=layer.dilation_rate,
    )


class Conv2DFlipout(tfp.layers.Convolution2DFlipout):
    """``tfp.layers.Convolution2DFlipout`` with a stateless seed, forward pass written out.

    ``conv(x, mu) + conv(x * s_in, sigma * eps) * s_out``: one ``eps ~ N(0, I)`` of the kernel's
    shape per call, and Rademacher signs ``s_in`` [rows, 1, 1, C_in], ``s_out``
    [rows, 1, 1, filters] per row and channel (Wen et al. 2018), all three drawn from the call's
    seed with `iwae_tf.rng`. The signs are shared by all positions of a row, so that the row's
    whole output is that of the one kernel ``mu + s_in s_out sigma eps ~ q``.
    """

    def call(self, inputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Samples the layer's output for every row.

        Args:
          inputs: [rows, height, width, C_in].
          seed: [2] stateless seed of the draw.

        Returns:
          The activations, [rows, height', width', filters].

        Raises:
          ValueError: If `seed` is None.
        """
        if seed is None:
            raise ValueError(f"Layer {self.name!r} needs a seed for its weight draw.")
        inputs = tf.convert_to_tensor(inputs, dtype=self.dtype)
        posterior = self.kernel_posterior.distribution
        kernel_seed, input_seed, output_seed = rng.split(seed, 3)
        perturbation = posterior.scale * rng.normal(tf.shape(posterior.loc), kernel_seed)
        rows = tf.shape(inputs)[0]
        channels = tf.shape(posterior.loc)[2]
        input_signs = rng.signs(tf.stack([rows, 1, 1, channels]), input_seed)
        output_signs = rng.signs(tf.stack([rows, 1, 1, self.filters]), output_seed)
        outputs = _conv2d(self, inputs, posterior.loc)
        outputs += _conv2d(self, inputs * input_signs, perturbation) * output_signs
        return _bias_activation_divergence(self, outputs)


class Conv2DReparameterization(_SeedableSampling, tfp.layers.Convolution2DReparameterization):
    """``tfp.layers.Convolution2DReparameterization`` whose one kernel draw per call is seeded."""


_UNCERTAIN_CLASSES: dict[str, type[keras.layers.Layer]] = {
    "local_reparameterization": DenseLocalReparameterization,
    "flipout": DenseFlipout,
    "reparameterization": DenseReparameterization,
}

_PER_ROW_KINDS = frozenset({"local_reparameterization", "flipout"})

CONV2D_KINDS: tuple[str, ...] = ("deterministic", "flipout", "reparameterization")
"""Valid values of ``kind`` for :func:`make_conv2d` (no ``"local_reparameterization"``)."""

_UNCERTAIN_CONV2D_CLASSES: dict[str, type[keras.layers.Layer]] = {
    "flipout": Conv2DFlipout,
    "reparameterization": Conv2DReparameterization,
}
_TFP_CONV2D_CLASSES = (tfp.layers.Convolution2DFlipout, tfp.layers.Convolution2DReparameterization)

DEFAULT_INIT_SCALE: float = math.log1p(math.exp(-4.0))
"""``softplus(-4) ~= 0.01815``: default initial posterior standard deviation of the weights."""


def _inverse_softplus(y: float) -> float:
    """Numerically stable ``log(exp(y) - 1)`` for ``y > 0``."""
    return y + math.log(-math.expm1(-y))


def _check_kind(kind: str) -> None:
    if kind not in LAYER_KINDS:
        raise ValueError(f"Unknown layer kind {kind!r}; expected one of {LAYER_KINDS}.")


def _check_positive(value: float, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}.") from err
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}.")
    return value


def _check_positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def check_conv_kind(kind: str) -> None:
    """Raises ValueError unless `kind` is one of :data:`CONV2D_KINDS`, saying why if not."""
    _check_kind(kind)
    if kind == "local_reparameterization":
        raise ValueError(
            "kind 'local_reparameterization' is not offered for convolutions: the output "
            "positions of a row share one kernel, so sampling each position's pre-activation "
            "independently is not the model (per-position local reparameterization would be an "
            "approximation); use --uncertain_layer_kind=flipout for convolutional networks."
        )


def is_uncertain(kind: str) -> bool:
    """Whether layers of this kind have a distribution over their kernel.

    Args:
        kind: One of :data:`LAYER_KINDS`.

    Returns:
        ``False`` for ``"deterministic"``, ``True`` for the three variational kinds.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    _check_kind(kind)
    return kind != "deterministic"


def draws_per_row(kind: str) -> bool:
    """Whether every row of a batch gets its own (pseudo-)independent weight draw.

    The model uses this to decide whether it must tile ``x`` once per importance sample so that
    each sample sees its own weights: ``True`` for ``"local_reparameterization"`` and
    ``"flipout"``. ``"reparameterization"`` draws one ``W`` per call shared by all rows, and
    ``"deterministic"`` has no draw at all, so both return ``False``.

    Args:
        kind: One of :data:`LAYER_KINDS`.

    Returns:
        Whether rows get distinct weight draws within one call.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    _check_kind(kind)
    return kind in _PER_ROW_KINDS


def _normal_prior_fn(prior_scale: float) -> Any:
    """TFP ``kernel_prior_fn``: factorized ``N(0, prior_scale^2)`` over the kernel."""

    def _prior_fn(
        dtype: tf.DType, shape: Any, name: str, trainable: bool, add_variable_fn: Any
    ) -> Any:
        # Imports inside: TFP's get_config/from_config rebuilds this function from its bytecode
        # without the module's globals.
        import tensorflow as tf
        import tensorflow_probability as tfp

        del name, trainable, add_variable_fn  # A fixed prior has no variables.
        dist = tfp.distributions.Normal(
            loc=tf.zeros(shape, dtype), scale=tf.constant(prior_scale, dtype=dtype)
        )
        return tfp.distributions.Independent(dist, reinterpreted_batch_ndims=len(shape))

    return _prior_fn


def _analytic_kl(q: Any, p: Any, _sample: Any) -> Any:
    """TFP ``kernel_divergence_fn``: closed-form ``KL(q || p)`` (a scalar), sample unused."""
    import tensorflow_probability as tfp  # See _normal_prior_fn.

    return tfp.distributions.kl_divergence(q, p)


def make_dense(
    units: int,
    *,
    kind: str = "deterministic",
    activation: str | None = None,
    init_scale: float = DEFAULT_INIT_SCALE,
    kl_divergence: bool = False,
    prior_scale: float = 1.0,
    bias_initializer: keras.initializers.Initializer | str = "zeros",
    name: str | None = None,
) -> keras.layers.Layer:
    """Builds one dense layer, deterministic or with a factorized Gaussian weight posterior.

    Args:
        units: Output dimension.
        kind: One of :data:`LAYER_KINDS`. ``"deterministic"`` gives ``keras.layers.Dense``
            (glorot_uniform kernel); ``"local_reparameterization"``, ``"flipout"`` and
            ``"reparameterization"`` give ``tfp.layers.DenseLocalReparameterization``,
            ``DenseFlipout`` and ``DenseReparameterization`` (see the module docstring for how
            they differ).
        activation: Keras activation name (e.g. ``"tanh"``) or ``None`` for linear.
        init_scale: Initial posterior standard deviation of every kernel weight:
            ``softplus(untransformed_scale) == init_scale`` at build time. Must be ``> 0``;
            validated for every kind, used only by the uncertain ones.
        kl_divergence: If ``False`` (default) the layer adds no loss at all. If ``True`` (only
            for uncertain kinds) every call adds the analytic, *unscaled*
            ``KL(q(W) || N(0, prior_scale^2 I))`` of the kernel to ``layer.losses``.
        prior_scale: Standard deviation of the zero-mean Gaussian prior over the kernel
            weights (TFP's own default is 1). Must be ``> 0``. The prior is built (as
            ``layer.kernel_prior``) even when ``kl_divergence`` is ``False``.
        bias_initializer: Keras initializer (or its name) of the bias. For uncertain kinds the
            bias is a point estimate (``tfd.Deterministic`` posterior, no KL).
        name: Layer name.

    Returns:
        An unbuilt ``tf_keras`` layer. Uncertain layers create, on build, the trainable
        variables ``kernel_posterior_loc``, ``kernel_posterior_untransformed_scale`` and
        ``bias_posterior_loc``.

    Raises:
        ValueError: If ``kind`` is unknown, ``units`` is not a positive integer,
            ``init_scale`` or ``prior_scale`` is not a positive finite number, or
            ``kl_divergence=True`` is requested for a deterministic layer.
    """
    _check_kind(kind)
    _check_positive_int(units, "units")
    init_scale = _check_positive(init_scale, "init_scale")
    prior_scale = _check_positive(prior_scale, "prior_scale")
    # Fresh initializer instances per layer (a name gives a new one): tf_keras's unseeded
    # initializers repeat their values when one instance is called more than once.
    bias_init = keras.initializers.get(bias_initializer)

    if kind == "deterministic":
        _reject_deterministic_kl(kl_divergence)
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(),
            bias_initializer=bias_init,
            name=name,
        )

    layer = _UNCERTAIN_CLASSES[kind](
        units,
        activation=activation,
        name=name,
        **_variational_kwargs(init_scale, prior_scale, kl_divergence, bias_init),
    )
    return _route_seed(layer)


def _reject_deterministic_kl(kl_divergence: bool) -> None:
    if kl_divergence:
        raise ValueError(
            "kl_divergence=True needs an uncertain layer kind; a deterministic layer has "
            "no weight posterior."
        )


def _variational_kwargs(
    init_scale: float,
    prior_scale: float,
    kl_divergence: bool,
    bias_init: keras.initializers.Initializer,
) -> dict[str, Any]:
    """The posterior, prior and divergence arguments shared by every uncertain layer class."""
    return {
        "kernel_posterior_fn": tfp.layers.default_mean_field_normal_fn(
            is_singular=False,
            loc_initializer=keras.initializers.GlorotUniform(),
            untransformed_scale_initializer=keras.initializers.Constant(
                _inverse_softplus(init_scale)
            ),
        ),
        "kernel_prior_fn": _normal_prior_fn(prior_scale),
        "kernel_divergence_fn": _analytic_kl if kl_divergence else None,
        "bias_posterior_fn": tfp.layers.default_mean_field_normal_fn(
            is_singular=True, loc_initializer=bias_init
        ),
        "bias_prior_fn": None,
        "bias_divergence_fn": None,
    }


def _route_seed(layer: keras.layers.Layer) -> keras.layers.Layer:
    # Set after construction: the bound method needs the instance, and TFP's constructor
    # default (an unseeded ``d.sample()``) would otherwise draw statefully.
    if isinstance(layer, _SeedableSampling):
        layer.kernel_posterior_tensor_fn = layer._sample_posterior
    return layer


def make_conv2d(
    filters: int,
    *,
    kernel_size: int,
    strides: int = 1,
    kind: str = "deterministic",
    activation: str | None = None,
    init_scale: float = DEFAULT_INIT_SCALE,
    kl_divergence: bool = False,
    prior_scale: float = 1.0,
    bias_initializer: keras.initializers.Initializer | str = "zeros",
    name: str | None = None,
) -> keras.layers.Layer:
    """Builds one 2-D convolution, deterministic or with a factorized Gaussian kernel posterior.

    Padding is ``"same"`` and the data format channels last: inputs ``[rows, height, width,
    C_in]``, outputs ``[rows, ceil(height / strides), ceil(width / strides), filters]``, kernel
    ``[kernel_size, kernel_size, C_in, filters]``. Posterior, prior, KL, bias and seed follow
    :func:`make_dense`.

    Args:
        filters: Number of output channels.
        kernel_size: Height and width of the (square) kernel.
        strides: Stride along height and width.
        kind: One of :data:`CONV2D_KINDS`. ``"deterministic"`` gives ``keras.layers.Conv2D``
            (glorot_uniform kernel); ``"flipout"`` and ``"reparameterization"`` give subclasses
            of ``tfp.layers.Convolution2DFlipout`` and ``Convolution2DReparameterization``,
            called as ``layer(x, seed=seed)`` (see the module docstring).
        activation: Keras activation name (e.g. ``"relu"``) or ``None`` for linear.
        init_scale: Initial posterior standard deviation of every kernel weight. Must be
            ``> 0``; validated for every kind, used only by the uncertain ones.
        kl_divergence: If ``True`` (only for uncertain kinds) every call adds the analytic,
            *unscaled* ``KL(q(W) || N(0, prior_scale^2 I))`` of the kernel to
            ``layer.losses``; if ``False`` (default) the layer adds no loss.
        prior_scale: Standard deviation of the zero-mean Gaussian prior over the kernel
            weights. Must be ``> 0``.
        bias_initializer: Keras initializer (or its name) of the bias, a point estimate for
            every kind.
        name: Layer name.

    Returns:
        An unbuilt ``tf_keras`` layer. Uncertain layers create, on build, the trainable
        variables ``kernel_posterior_loc``, ``kernel_posterior_untransformed_scale`` and
        ``bias_posterior_loc``.

    Raises:
        ValueError: If ``kind`` is unknown or ``"local_reparameterization"``, ``filters``,
            ``kernel_size`` or ``strides`` is not a positive integer, ``init_scale`` or
            ``prior_scale`` is not a positive finite number, or ``kl_divergence=True`` is
            requested for a deterministic layer.
    """
    check_conv_kind(kind)
    _check_positive_int(filters, "filters")
    _check_positive_int(kernel_size, "kernel_size")
    _check_positive_int(strides, "strides")
    init_scale = _check_positive(init_scale, "init_scale")
    prior_scale = _check_positive(prior_scale, "prior_scale")
    bias_init = keras.initializers.get(bias_initializer)  # A fresh instance, as in make_dense.

    if kind == "deterministic":
        _reject_deterministic_kl(kl_divergence)
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            data_format="channels_last",
            activation=activation,
            kernel_initializer=keras.initializers.GlorotUniform(),
            bias_initializer=bias_init,
            name=name,
        )

    layer = _UNCERTAIN_CONV2D_CLASSES[kind](
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        data_format="channels_last",
        activation=activation,
        name=name,
        **_variational_kwargs(init_scale, prior_scale, kl_divergence, bias_init),
    )
    return _route_seed(layer)


def call_at_posterior_mean(layer: keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """The layer's output with its kernel at the posterior mean: ``act(x @ mu + b)``.

    For a convolution, ``act(conv(x, mu) + b)``. No draw, so no seed. A deterministic layer is
    simply called.

    Args:
        layer: A layer from :func:`make_dense` or :func:`make_conv2d`.
        inputs: ``[rows, d_in]``, or ``[rows, height, width, C_in]`` for a convolution.

    Returns:
        The activations, ``[rows, units]`` or ``[rows, height', width', filters]``.
    """
    posterior = getattr(layer, "kernel_posterior", None)
    if posterior is None:
        return layer(inputs)
    inputs = tf.convert_to_tensor(inputs, layer.dtype)
    if isinstance(layer, _TFP_CONV2D_CLASSES):
        outputs = _conv2d(layer, inputs, posterior.distribution.loc)
    else:
        outputs = tf.matmul(inputs, posterior.distribution.loc)
    outputs = tf.nn.bias_add(outputs, layer.bias_posterior.distribution.loc)
    return layer.activation(outputs) if layer.activation is not None else outputs


def kernel_posterior_variables(layer: keras.layers.Layer) -> tuple[tf.Variable, tf.Variable]:
    """The trainable variables of an uncertain layer's kernel posterior.

    Args:
        layer: A built layer from :func:`make_dense` or :func:`make_conv2d` with an uncertain
            kind.

    Returns:
        ``(loc, untransformed_scale)``, both of the kernel's shape (``[d_in, units]``, or
        ``[kh, kw, C_in, filters]`` for a convolution); the posterior standard
        deviation is ``softplus(untransformed_scale)`` (plus TFP's float epsilon).

    Raises:
        ValueError: If the layer is deterministic or not built yet.
    """
    posterior = getattr(layer, "kernel_posterior", None)
    if posterior is None:
        raise ValueError(
            f"Layer {layer.name!r} has no kernel posterior: it is deterministic or not built "
            "yet (call it once, or layer.build(input_shape))."
        )
    normal = posterior.distribution
    return normal.loc, normal.scale.pretransformed_input


def posterior_scales(layer: keras.layers.Layer) -> tf.Tensor:
    """The posterior standard deviations ``sigma`` of an uncertain layer's kernel.

    Args:
        layer: A built layer from :func:`make_dense` or :func:`make_conv2d` with an uncertain
            kind.

    Returns:
        ``softplus(untransformed_scale)``, of the kernel's shape. (The distribution TFP samples
        from uses this plus the dtype's epsilon, ~1.2e-7 for float32.)

    Raises:
        ValueError: If the layer is deterministic or not built yet.
    """
    _, untransformed = kernel_posterior_variables(layer)
    return tf.nn.softplus(untransformed)


def set_posterior_scale(layer: keras.layers.Layer, scale: float | np.ndarray | tf.Tensor) -> None:
    """Assigns the kernel posterior standard deviation, e.g. for the ``sigma -> 0`` limit in tests.

    Args:
        layer: A built layer from :func:`make_dense` or :func:`make_conv2d` with an uncertain
            kind.
        scale: New ``sigma`` (> 0), a scalar or anything broadcastable to the kernel's shape.

    Raises:
        ValueError: If the layer has no kernel posterior or ``scale`` is not positive.
    """
    _, untransformed = kernel_posterior_variables(layer)
    scale = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError("scale must be positive and finite.")
    value = scale + np.log(-np.expm1(-scale))  # inverse softplus, stable for small and large
    value = np.broadcast_to(value, untransformed.shape)
    untransformed.assign(tf.constant(value, dtype=untransformed.dtype))
