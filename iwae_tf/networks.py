"""Encoder q(h|x) and decoder p(x, h) networks: MLPs or convnets with Gaussian latents.

The architectures are those of Burda, Grosse & Salakhutdinov (2016), Section 5: with L
stochastic layers h_1, ..., h_L,

    q(h_1, ..., h_L | x) = q(h_1 | x) prod_{l=2..L} q(h_l | h_{l-1}),
    p(x, h_1, ..., h_L)  = p(h_L) prod_{l=1..L-1} p(h_l | h_{l+1}) p(x | h_1),

where every conditional is an MLP of tanh hidden layers ending in a diagonal Gaussian
N(mean, diag(std^2)) with std = exp(linear), except p(x | h_1), whose density is the decoder's
`likelihood` (`iwae_tf.likelihoods`: Bernoulli for binary data, Gaussian for intensities), and
p(h_L) = N(0, I). With one stochastic layer and hidden sizes (200, 200) this is the paper's
784-200-200-50 model.

With `conv_filters`, q(h_1 | x) starts with a stack of stride-2 convolutions over the image
[H, W, C] and p(x | h_1) ends with its mirror image, resize-convolutions back up to the image
(`GaussianMLP`, `OutputNet`); the layers between latents stay MLPs.

The dense and conv layers come from `iwae_tf.layers`, so each network can be deterministic or
carry a factorized Gaussian over its weights (the uncertain-weights model of Hernandez-Lobato et
al.). Networks work on rows: (importance sample, example) pairs flattened into one leading axis
so every matmul is a single large GEMM; examples keep their shape, [rows, *data_shape].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from iwae_tf import layers as dense_layers
from iwae_tf import likelihoods, rng

tfd = tfp.distributions


class Gaussian(NamedTuple):
    """A diagonal Gaussian given by its mean and standard deviation, both [..., dims]."""

    mean: tf.Tensor
    std: tf.Tensor


def gaussian_log_prob(value: tf.Tensor, gaussian: Gaussian) -> tf.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last axis.

    log N(z; mu, diag(sigma^2)) = sum_j [-(z_j - mu_j)^2 / (2 sigma_j^2) - log sigma_j
                                         - log(2 pi) / 2].

    Args:
      value: [..., dims] points z.
      gaussian: The distribution, broadcastable against `value`.

    Returns:
      [...] log-densities.
    """
    return tf.reduce_sum(tfd.Normal(gaussian.mean, gaussian.std).log_prob(value), axis=-1)


def standard_normal_log_prob(value: tf.Tensor) -> tf.Tensor:
    """log N(z; 0, I) = sum_j [-z_j^2 / 2 - log(2 pi) / 2], summed over the last axis."""
    return tf.reduce_sum(-0.5 * tf.square(value) - 0.5 * np.log(2.0 * np.pi), axis=-1)


class AncestralSample(NamedTuple):
    """A draw from the generative model (see `Decoder.sample`).

    Attributes:
      latents: h_1, ..., h_L, bottom first, each [rows, dims].
      outputs: [rows, *data_shape[:-1], C * P] raw outputs of p(x | h_1) (see
        `iwae_tf.likelihoods`): the Bernoulli's logits, or the Gaussian's mean and scale
        logits.
    """

    latents: list[tf.Tensor]
    outputs: tf.Tensor


class NetworkConfig(NamedTuple):
    """How the dense layers of one network are built (see `iwae_tf.layers.make_dense`).

    Attributes:
      layer_kind: One of `iwae_tf.layers.LAYER_KINDS`.
      init_scale: Initial posterior standard deviation of uncertain weights.
      kl_divergence: Whether uncertain layers add KL(q(W) || p(W)) to the model's losses.
      prior_scale: Standard deviation of the N(0, prior_scale^2) weight prior of that KL.
    """

    layer_kind: str = "deterministic"
    init_scale: float = dense_layers.DEFAULT_INIT_SCALE
    kl_divergence: bool = False
    prior_scale: float = 1.0


class GaussianMLP(keras.layers.Layer):
    """[A stride-2 conv stack, flattened,] then a tanh MLP ending in a diagonal Gaussian.

    N(mean, diag(exp(log_std))^2). With `conv_filters`, the inputs are images [rows, H, W, C]
    and each filter count is one stride-2 "same" convolution with ReLU (`_conv_stack`);
    without, the inputs are flattened to [rows, features].
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        output_size: int,
        config: NetworkConfig,
        conv_filters: Sequence[int] = (),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.output_size = output_size
        self.seedable = dense_layers.is_uncertain(config.layer_kind)
        self.convs = _conv_stack(conv_filters, config, "conv")
        self.hidden = [
            _dense(size, config, "tanh", f"hidden_{i}") for i, size in enumerate(hidden_sizes)
        ]
        # One layer of 2 * output_size units computes mean and log-std in a single matmul.
        self.head = _dense(2 * output_size, config, None, "gaussian_head")

    def call(
        self,
        inputs: tf.Tensor,
        seed: tf.Tensor,
        repeats: int | tf.Tensor | None = None,
    ) -> Gaussian:
        """The Gaussian at `inputs`; `seed` keys the draws of uncertain weights.

        With `repeats`, the first layer (local reparameterization) draws `repeats` output rows
        per input row, sample major (see `iwae_tf.layers.DenseLocalReparameterization`).
        """
        layers = self.convs + self.hidden + [self.head]
        seeds = rng.split(seed, len(layers)) if self.seedable else [None] * len(layers)
        h = _run_convs(inputs, self.convs, seeds[: len(self.convs)])
        h = _mlp(_flatten(h), self.hidden + [self.head], seeds[len(self.convs) :], repeats)
        return _gaussian(h)

    def at_posterior_mean(self, inputs: tf.Tensor) -> Gaussian:
        """The Gaussian at `inputs` with every weight at its posterior mean: no draw."""
        h = _mlp_at_posterior_mean(inputs, self.convs)
        return _gaussian(_mlp_at_posterior_mean(_flatten(h), self.hidden + [self.head]))


def _gaussian(head_outputs: tf.Tensor) -> Gaussian:
    mean, log_std = tf.split(head_outputs, 2, axis=-1)
    return Gaussian(mean, tf.exp(log_std))


class OutputNet(keras.layers.Layer):
    """From h_1 to the likelihood's raw outputs [rows, *data_shape[:-1], C * P].

    A tanh MLP, then either one dense head of prod(data_shape) * P units reshaped to the data
    (MLP), or, with `conv_filters`, a dense layer onto a grid of ceil(H / 2^n) x ceil(W / 2^n)
    with the last filter count's channels, n = len(conv_filters) nearest-neighbour 2x
    upsamplings each followed by a "same" convolution (resize-convolution, which avoids the
    checkerboard artefacts of transposed convolutions; Odena et al. 2016), cropped to H x W.
    The conv path ends in a per-pixel bias, so that it too can start at the mean image.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        data_shape: Sequence[int],
        params_per_pixel: int,
        config: NetworkConfig,
        output_bias: np.ndarray | float = 0.0,
        conv_filters: Sequence[int] = (),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.data_shape = tuple(int(d) for d in data_shape)
        self.output_shape_ = (*self.data_shape[:-1], self.data_shape[-1] * params_per_pixel)
        self.seedable = dense_layers.is_uncertain(config.layer_kind)
        self.conv_filters = tuple(conv_filters)
        bias = np.broadcast_to(np.asarray(output_bias, np.float32), self.output_shape_)
        self.hidden = [
            _dense(size, config, "tanh", f"hidden_{i}") for i, size in enumerate(hidden_sizes)
        ]
        if not self.conv_filters:
            self.head = _dense(
                int(np.prod(self.output_shape_)),
                config,
                None,
                "output_head",
                bias_initializer=keras.initializers.Constant(bias.reshape(-1)),
            )
            self.convs = []
            return
        height, width, _ = self.data_shape
        scale = 2 ** len(self.conv_filters)
        self.grid = (-(-height // scale), -(-width // scale), self.conv_filters[-1])
        self.head = _dense(int(np.prod(self.grid)), config, "relu", "grid")
        channels = [*reversed(self.conv_filters[:-1]), self.output_shape_[-1]]
        activations = ["relu"] * (len(channels) - 1) + [None]
        self.convs = [
            dense_layers.make_conv2d(
                filters,
                kernel_size=CONV_KERNEL_SIZE,
                kind=config.layer_kind,
                activation=activation,
                init_scale=config.init_scale,
                kl_divergence=config.kl_divergence,
                prior_scale=config.prior_scale,
                name=f"upconv_{i}",
            )
            for i, (filters, activation) in enumerate(zip(channels, activations, strict=True))
        ]
        self.pixel_bias = self.add_weight(
            name="pixel_bias",
            shape=self.output_shape_,
            initializer=keras.initializers.Constant(bias),
        )

    def call(self, inputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """The raw outputs at `inputs` [rows, d_1]; `seed` keys the draws of uncertain weights."""
        layers = self.hidden + [self.head] + self.convs
        seeds = rng.split(seed, len(layers)) if self.seedable else [None] * len(layers)
        dense_count = len(self.hidden) + 1
        h = _mlp(inputs, self.hidden + [self.head], seeds[:dense_count])
        return self._to_data(h, seeds[dense_count:], at_mean=False)

    def at_posterior_mean(self, inputs: tf.Tensor) -> tf.Tensor:
        """The raw outputs at `inputs` with every weight at its posterior mean: no draw."""
        h = _mlp_at_posterior_mean(inputs, self.hidden + [self.head])
        return self._to_data(h, [None] * len(self.convs), at_mean=True)

    def _to_data(self, h: tf.Tensor, seeds: list, at_mean: bool) -> tf.Tensor:
        if not self.convs:
            return tf.reshape(h, [-1, *self.output_shape_])
        h = tf.reshape(h, [-1, *self.grid])
        for layer, layer_seed in zip(self.convs, seeds, strict=True):
            h = tf.repeat(tf.repeat(h, 2, axis=1), 2, axis=2)
            if at_mean:
                h = dense_layers.call_at_posterior_mean(layer, h)
            else:
                h = _call(layer, h, layer_seed)
        height, width, _ = self.output_shape_
        return h[:, :height, :width, :] + self.pixel_bias


CONV_KERNEL_SIZE = 3
"""Kernel size of every convolution of the conv architecture."""


def _conv_stack(
    filters: Sequence[int], config: NetworkConfig, prefix: str
) -> list[keras.layers.Layer]:
    return [
        dense_layers.make_conv2d(
            count,
            kernel_size=CONV_KERNEL_SIZE,
            strides=2,
            kind=config.layer_kind,
            activation="relu",
            init_scale=config.init_scale,
            kl_divergence=config.kl_divergence,
            prior_scale=config.prior_scale,
            name=f"{prefix}_{i}",
        )
        for i, count in enumerate(filters)
    ]


def _call(layer: keras.layers.Layer, h: tf.Tensor, seed: tf.Tensor | None) -> tf.Tensor:
    return layer(h) if seed is None else layer(h, seed=seed)


def _run_convs(h: tf.Tensor, convs: list[keras.layers.Layer], seeds: list) -> tf.Tensor:
    for layer, layer_seed in zip(convs, seeds, strict=True):
        h = _call(layer, h, layer_seed)
    return h


def _flatten(h: tf.Tensor) -> tf.Tensor:
    """[rows, ...] -> [rows, features]; rows of rank 1 pass unchanged."""
    if h.shape.rank == 2:
        return h
    return tf.reshape(h, [-1, int(np.prod(h.shape[1:]))])


def _mlp(
    h: tf.Tensor,
    layers: list[keras.layers.Layer],
    seeds: list,
    repeats: int | tf.Tensor | None = None,
) -> tf.Tensor:
    for i, (layer, layer_seed) in enumerate(zip(layers, seeds, strict=True)):
        kwargs = {} if layer_seed is None else {"seed": layer_seed}
        if i == 0 and repeats is not None:
            kwargs["repeats"] = repeats
        h = layer(h, **kwargs)
    return h


def _mlp_at_posterior_mean(h: tf.Tensor, layers: list[keras.layers.Layer]) -> tf.Tensor:
    for layer in layers:
        h = dense_layers.call_at_posterior_mean(layer, h)
    return h


def _dense(
    units: int,
    config: NetworkConfig,
    activation: str | None,
    name: str,
    bias_initializer: keras.initializers.Initializer | str = "zeros",
) -> keras.layers.Layer:
    return dense_layers.make_dense(
        units,
        kind=config.layer_kind,
        activation=activation,
        init_scale=config.init_scale,
        kl_divergence=config.kl_divergence,
        prior_scale=config.prior_scale,
        bias_initializer=bias_initializer,
        name=name,
    )


class Encoder(keras.Model):
    """The recognition model q(h_1, ..., h_L | x) with reparameterized sampling.

    Each stochastic layer l is a `GaussianMLP` on the sample of the layer below (h_0 = x).
    Calling the encoder draws `num_samples` samples per example and returns, for every layer,
    the samples and the Gaussian they were drawn from, all shaped [num_samples, batch, dims].

    When the encoder's weights are uncertain with a draw per row, each importance sample must
    see its own weight draw phi^(m), so x is tiled num_samples times before the first layer;
    a deterministic encoder computes q(h_1 | x) once per example and broadcasts it.
    """

    def __init__(
        self,
        latent_sizes: Sequence[int] = (50,),
        hidden_sizes: Sequence[Sequence[int]] = ((200, 200),),
        config: NetworkConfig | None = None,
        conv_filters: Sequence[int] = (),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_layer_sizes("Encoder", latent_sizes, hidden_sizes)
        self.conv_filters = tuple(conv_filters)
        self.latent_sizes = tuple(latent_sizes)
        self.hidden_sizes = tuple(tuple(sizes) for sizes in hidden_sizes)
        self.config = config = config or NetworkConfig()
        self.tile_inputs = dense_layers.draws_per_row(config.layer_kind)
        self.shares_first_moments = config.layer_kind == "local_reparameterization"
        # Only q(h_1 | x) sees images; the layers above work on latent vectors.
        self.blocks = [
            GaussianMLP(hidden, latent, config, conv_filters if i == 0 else (), name=f"q_h{i + 1}")
            for i, (hidden, latent) in enumerate(zip(hidden_sizes, latent_sizes, strict=True))
        ]

    def call(
        self, x: tf.Tensor, num_samples: int, seed: tf.Tensor
    ) -> list[tuple[tf.Tensor, Gaussian]]:
        """Draws h_l ~ q(h_l | h_{l-1}) for every stochastic layer l.

        Args:
          x: [batch, *data_shape] inputs.
          num_samples: Importance samples k per example.
          seed: [2] stateless seed (see `iwae_tf.rng`) of every draw, latents and weights:
            equal inputs and seeds give equal outputs.

        Returns:
          One (sample, Gaussian) pair per stochastic layer, bottom first. Samples are
          [num_samples, batch, dims]; the Gaussians broadcast against them (the first layer's
          is [1, batch, dims] when computed once per example).
        """
        batch = tf.shape(x)[0]
        # Local reparameterization repeats its first layer's rows itself, computing x @ mu and
        # x^2 @ sigma^2 once per example; other per-row kinds need x tiled.
        share = self.shares_first_moments
        rows = _tile_rows(x, num_samples) if self.tile_inputs and not share else x
        layers_out = []
        seeds = rng.split(seed, 2 * len(self.blocks))
        for i, block in enumerate(self.blocks):
            shape = [num_samples, batch, block.output_size]
            repeats = num_samples if share and i == 0 else None
            gaussian = block(rows, seed=seeds[2 * i], repeats=repeats)
            if i == 0 and not self.tile_inputs:
                # One q(h_1|x) per example, shared by its k samples: broadcast, don't recompute.
                mean, std = gaussian.mean[tf.newaxis], gaussian.std[tf.newaxis]
            else:
                mean, std = tf.reshape(gaussian.mean, shape), tf.reshape(gaussian.std, shape)
            sample = mean + std * rng.normal(shape, seeds[2 * i + 1])
            layers_out.append((sample, Gaussian(mean, std)))
            rows = tf.reshape(sample, [-1, block.output_size])
        return layers_out

    def gaussians_at_fixed_samples(
        self, posterior: list[tuple[tf.Tensor, Gaussian]], seed: tf.Tensor
    ) -> list[Gaussian]:
        """The Gaussians of `posterior`, each q(h_l | h_{l-1}) re-evaluated at h_{l-1} held fixed.

        The same values as `posterior`'s, with the same weight draws, but a gradient that
        reaches the encoder's variables only directly, not through the samples below: so
        d log q(stop(h) | x) / d phi is the score term of `iwae_tf.estimators`. q(h_1 | x)
        depends on x and the weights alone and is returned as it is.

        Args:
          posterior: What `call(x, num_samples, seed)` returned.
          seed: The `seed` of that call, so that uncertain weights draw the same noise.

        Returns:
          One Gaussian per stochastic layer, bottom first, shaped as in `posterior`.
        """
        seeds = rng.split(seed, 2 * len(self.blocks))
        gaussians = [posterior[0][1]]
        for i in range(1, len(self.blocks)):
            below, (sample, _) = posterior[i - 1][0], posterior[i]
            rows = tf.stop_gradient(tf.reshape(below, [-1, below.shape[-1]]))
            gaussian = self.blocks[i](rows, seed=seeds[2 * i])
            shape = tf.shape(sample)
            gaussians.append(
                Gaussian(tf.reshape(gaussian.mean, shape), tf.reshape(gaussian.std, shape))
            )
        return gaussians

    def posterior_mean(self, x: tf.Tensor) -> list[Gaussian]:
        """q(h_l | mean of h_{l-1}) for every layer l, weights at their posterior means.

        No draw: each layer is fed the mean of the one below (h_0 = x). For the first layer
        of a deterministic encoder these are exactly q(h_1 | x)'s parameters.

        Args:
          x: [batch, *data_shape] inputs.

        Returns:
          One Gaussian per stochastic layer, bottom first, each [batch, dims].
        """
        gaussians = []
        h = x
        for block in self.blocks:
            gaussians.append(block.at_posterior_mean(h))
            h = gaussians[-1].mean
        return gaussians


class Decoder(keras.Model):
    """The generative model p(x, h_1, ..., h_L) with a N(0, I) prior on the top layer.

    Calling the decoder on latent samples returns the raw outputs of p(x | h_1), which its
    `likelihood` turns into a density (`iwae_tf.likelihoods`), and the Gaussians
    p(h_l | h_{l+1}) of the intermediate layers; `log_prob` turns them into log p(x, h).
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (784,),
        latent_sizes: Sequence[int] = (50,),
        hidden_sizes: Sequence[Sequence[int]] = ((200, 200),),
        config: NetworkConfig | None = None,
        output_bias: np.ndarray | float = 0.0,
        likelihood: likelihoods.Likelihood | str = "bernoulli",
        conv_filters: Sequence[int] = (),
        **kwargs,
    ) -> None:
        """Builds the decoder.

        Args:
          data_shape: Shape of one example: [D] for flat rows, [H, W, C] for images (which
            the conv architecture needs).
          latent_sizes: Sizes of h_1, ..., h_L, bottom first (as for the encoder).
          hidden_sizes: Hidden sizes per stochastic layer, bottom first, as for the encoder;
            each generative conditional uses them in reverse, mirroring the encoder.
          config: How the dense and conv layers are built.
          output_bias: Initial bias of the raw outputs, `likelihood.output_bias(mean image)`.
          likelihood: The observation model p(x | h_1), a name of `likelihoods.LIKELIHOODS`.
          conv_filters: Filter counts of the encoder's conv stack, mirrored here (see
            `OutputNet`); empty for the MLP.
          **kwargs: Passed to `keras.Model`.
        """
        super().__init__(**kwargs)
        _check_layer_sizes("Decoder", latent_sizes, hidden_sizes)
        self.data_shape = _data_shape(data_shape)
        if conv_filters and len(self.data_shape) != 3:
            raise ValueError(
                f"the conv architecture needs images [H, W, C]; got data of shape "
                f"{list(self.data_shape)}"
            )
        self.latent_sizes = tuple(latent_sizes)
        self.config = config = config or NetworkConfig()
        self.likelihood = likelihoods.get(likelihood)
        self.output_net = OutputNet(
            tuple(reversed(hidden_sizes[0])),
            self.data_shape,
            self.likelihood.params_per_pixel,
            config,
            output_bias,
            conv_filters,
            name="p_x",
        )
        # p(h_l | h_{l+1}) for l = 1..L-1, bottom first.
        self.blocks = [
            GaussianMLP(
                tuple(reversed(hidden_sizes[i + 1])), latent_sizes[i], config, name=f"p_h{i + 1}"
            )
            for i in range(len(latent_sizes) - 1)
        ]

    @property
    def data_size(self) -> int:
        """D, the number of values in one example (pixels times channels)."""
        return int(np.prod(self.data_shape))

    def call(
        self, latents: Sequence[tf.Tensor], seed: tf.Tensor
    ) -> tuple[tf.Tensor, list[Gaussian]]:
        """Evaluates the generative conditionals at given latents.

        Args:
          latents: h_1, ..., h_L, bottom first, each [rows, dims].
          seed: [2] stateless seed of the draws of uncertain weights.

        Returns:
          (raw outputs of p(x | h_1) as [rows, *data_shape[:-1], C * P],
          [p(h_l | h_{l+1}) for l = 1..L-1]).
        """
        seeds = rng.split(seed, len(self.blocks) + 1)
        conditionals = [
            block(latents[i + 1], seed=seeds[i + 1]) for i, block in enumerate(self.blocks)
        ]
        return self.output_net(latents[0], seed=seeds[0]), conditionals

    def sample(self, num_samples: int | tf.Tensor, seed: tf.Tensor) -> AncestralSample:
        """Draws from the generative model, top down: h_L ~ N(0, I), h_l ~ p(h_l | h_{l+1}).

        With uncertain weights, each row draws its own weights (per-row layer kinds) or each
        call one set (reparameterization), so the rows are draws from the mixture model.

        Args:
          num_samples: Rows n to draw.
          seed: [2] stateless seed of every draw: split into the top layer's noise, then per
            layer below (weights, noise), then the weights of p(x | h_1).

        Returns:
          The latents h_1..h_L, bottom first, each [n, dims], and the raw outputs of
          p(x | h_1).
        """
        top_seed, output_seed, *block_seeds = rng.split(seed, 2 + 2 * len(self.blocks))
        latents = [rng.normal([num_samples, self.latent_sizes[-1]], top_seed)]
        for i in reversed(range(len(self.blocks))):
            weight_seed, noise_seed = block_seeds[2 * i], block_seeds[2 * i + 1]
            gaussian = self.blocks[i](latents[0], seed=weight_seed)
            noise = rng.normal(tf.shape(gaussian.mean), noise_seed)
            latents.insert(0, gaussian.mean + gaussian.std * noise)
        return AncestralSample(latents, self.output_net(latents[0], seed=output_seed))

    def decode(self, latent: tf.Tensor, layer: int | None = None) -> tf.Tensor:
        """The likelihood's mean of x given a latent, with no draw.

        From stochastic layer `layer` down, each p(h_l | h_{l+1}) is replaced by its mean, and
        every weight is at its posterior mean.

        Args:
          latent: [rows, d_layer] values of h_layer.
          layer: Which stochastic layer `latent` is, 1 = bottom (default: the top, L).

        Returns:
          [rows, *data_shape] means of p(x | h_1): Bernoulli probabilities or Gaussian means.
        """
        return self.likelihood.mean(self.decode_outputs(latent, layer))

    def decode_outputs(self, latent: tf.Tensor, layer: int | None = None) -> tf.Tensor:
        """The raw outputs of p(x | h_1) along `decode`'s mean path."""
        layer = len(self.latent_sizes) if layer is None else layer
        h = latent
        for block in reversed(self.blocks[: layer - 1]):
            h = block.at_posterior_mean(h).mean
        return self.output_net.at_posterior_mean(h)

    def log_prob(self, x: tf.Tensor, latents: Sequence[tf.Tensor], seed: tf.Tensor) -> tf.Tensor:
        """log p(x, h_1, ..., h_L) for every importance sample.

        Args:
          x: [batch, *data_shape] data.
          latents: h_1, ..., h_L, bottom first, each [num_samples, batch, dims].
          seed: [2] stateless seed of the draws of uncertain weights.

        Returns:
          [num_samples, batch] log joint densities.
        """
        sample_shape = tf.shape(latents[0])[:2]
        rows = [tf.reshape(h, [-1, h.shape[-1]]) for h in latents]
        outputs, conditionals = self(rows, seed=seed)
        outputs = tf.reshape(outputs, tf.concat([sample_shape, tf.shape(outputs)[1:]], axis=0))
        log_joint = self.likelihood.log_prob(
            x[tf.newaxis], outputs, len(self.data_shape)
        ) + standard_normal_log_prob(latents[-1])
        for latent, gaussian in zip(latents[:-1], conditionals, strict=True):
            gaussian = Gaussian(
                tf.reshape(gaussian.mean, tf.shape(latent)),
                tf.reshape(gaussian.std, tf.shape(latent)),
            )
            log_joint += gaussian_log_prob(latent, gaussian)
        return log_joint


def _data_shape(data_shape: Sequence[int] | int) -> tuple[int, ...]:
    shape = (data_shape,) if isinstance(data_shape, int | np.integer) else tuple(data_shape)
    if not shape or any(int(d) < 1 for d in shape):
        raise ValueError(f"data_shape must be positive sizes, got {data_shape!r}")
    return tuple(int(d) for d in shape)


def _check_layer_sizes(
    network: str, latent_sizes: Sequence[int], hidden_sizes: Sequence[Sequence[int]]
) -> None:
    if len(latent_sizes) != len(hidden_sizes):
        raise ValueError(
            f"{network} needs one hidden-size list per stochastic layer; got "
            f"{len(latent_sizes)} latent sizes and {len(hidden_sizes)} hidden-size lists."
        )


def _tile_rows(x: tf.Tensor, num_samples: int) -> tf.Tensor:
    """[batch, ...] -> [num_samples * batch, ...], sample-major."""
    multiples = [num_samples] + [1] * x.shape.rank
    return tf.reshape(tf.tile(x[tf.newaxis], multiples), [-1, *x.shape[1:]])
