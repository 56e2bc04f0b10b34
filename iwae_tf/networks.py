"""Encoder q(h|x) and decoder p(x, h) networks with diagonal Gaussian and Bernoulli heads.

The architectures are those of Burda, Grosse & Salakhutdinov (2016), Section 5: with L
stochastic layers h_1, ..., h_L,

    q(h_1, ..., h_L | x) = q(h_1 | x) prod_{l=2..L} q(h_l | h_{l-1}),
    p(x, h_1, ..., h_L)  = p(h_L) prod_{l=1..L-1} p(h_l | h_{l+1}) p(x | h_1),

where every conditional is an MLP of tanh hidden layers ending in a diagonal Gaussian
N(mean, diag(std^2)) with std = exp(linear), except p(x | h_1), which is a product of Bernoullis,
and p(h_L) = N(0, I). With one stochastic layer and hidden sizes (200, 200) this is the paper's
784-200-200-50 model.

The dense layers come from `iwae_tf.layers.make_dense`, so each network can be deterministic or
carry a factorized Gaussian over its weights (the uncertain-weights model of Hernandez-Lobato et
al.). Networks work on rows: a [rows, features] input, where rows are (importance sample,
example) pairs flattened into one axis so every matmul is a single large GEMM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras as keras

from iwae_tf import layers as dense_layers
from iwae_tf import rng

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


def bernoulli_log_prob(value: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """log prod_j Bernoulli(x_j; sigmoid(l_j)) = sum_j [x_j l_j - softplus(l_j)], last axis."""
    # One softplus per logit (TFP's Bernoulli.log_prob computes two).
    return tf.reduce_sum(value * logits - tf.nn.softplus(logits), axis=-1)


class AncestralSample(NamedTuple):
    """A draw from the generative model (see `Decoder.sample`).

    Attributes:
      latents: h_1, ..., h_L, bottom first, each [rows, dims].
      logits: [rows, data_size] logits of p(x | h_1).
    """

    latents: list[tf.Tensor]
    logits: tf.Tensor


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
    """tanh MLP ending in a diagonal Gaussian N(mean, diag(exp(log_std))^2)."""

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        output_size: int,
        config: NetworkConfig,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.output_size = output_size
        self.seedable = dense_layers.is_uncertain(config.layer_kind)
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
        h = _mlp(inputs, self.hidden + [self.head], self.seedable, seed, repeats)
        return _gaussian(h)

    def at_posterior_mean(self, inputs: tf.Tensor) -> Gaussian:
        """The Gaussian at `inputs` with every weight at its posterior mean: no draw."""
        return _gaussian(_mlp_at_posterior_mean(inputs, self.hidden + [self.head]))


def _gaussian(head_outputs: tf.Tensor) -> Gaussian:
    mean, log_std = tf.split(head_outputs, 2, axis=-1)
    return Gaussian(mean, tf.exp(log_std))


class BernoulliMLP(keras.layers.Layer):
    """tanh MLP ending in the logits of independent Bernoullis."""

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        output_size: int,
        config: NetworkConfig,
        output_bias: np.ndarray | float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.seedable = dense_layers.is_uncertain(config.layer_kind)
        self.hidden = [
            _dense(size, config, "tanh", f"hidden_{i}") for i, size in enumerate(hidden_sizes)
        ]
        self.head = _dense(
            output_size,
            config,
            None,
            "bernoulli_logits",
            bias_initializer=keras.initializers.Constant(output_bias),
        )

    def call(self, inputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """The logits at `inputs`; `seed` keys the draws of uncertain weights."""
        return _mlp(inputs, self.hidden + [self.head], self.seedable, seed)

    def at_posterior_mean(self, inputs: tf.Tensor) -> tf.Tensor:
        """The logits at `inputs` with every weight at its posterior mean: no draw."""
        return _mlp_at_posterior_mean(inputs, self.hidden + [self.head])


def _mlp(
    h: tf.Tensor,
    layers: list[keras.layers.Layer],
    seedable: bool,
    seed: tf.Tensor,
    repeats: int | tf.Tensor | None = None,
) -> tf.Tensor:
    seeds = rng.split(seed, len(layers)) if seedable else [None] * len(layers)
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


def output_bias_from_mean(mean_image: np.ndarray | float, clip: float = 1e-3) -> np.ndarray:
    """logit(clip(mean, clip, 1 - clip)): the decoder output bias of Burda et al.

    Starting the Bernoulli logits at the logit of the mean training pixel makes the initial
    decoder output the average image, which speeds up the first epochs.

    Args:
      mean_image: Mean training intensity per pixel (or one scalar).
      clip: Clipping of the mean away from 0 and 1, so that the logit stays finite.

    Returns:
      float32 array of logits, shaped like `mean_image`.
    """
    p = np.clip(np.asarray(mean_image, dtype=np.float64), clip, 1.0 - clip)
    return np.log(p / (1.0 - p)).astype(np.float32)


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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_layer_sizes("Encoder", latent_sizes, hidden_sizes)
        self.latent_sizes = tuple(latent_sizes)
        self.hidden_sizes = tuple(tuple(sizes) for sizes in hidden_sizes)
        self.config = config = config or NetworkConfig()
        self.tile_inputs = dense_layers.draws_per_row(config.layer_kind)
        self.shares_first_moments = config.layer_kind == "local_reparameterization"
        self.blocks = [
            GaussianMLP(hidden, latent, config, name=f"q_h{i + 1}")
            for i, (hidden, latent) in enumerate(zip(hidden_sizes, latent_sizes, strict=True))
        ]

    def call(
        self, x: tf.Tensor, num_samples: int, seed: tf.Tensor
    ) -> list[tuple[tf.Tensor, Gaussian]]:
        """Draws h_l ~ q(h_l | h_{l-1}) for every stochastic layer l.

        Args:
          x: [batch, features] inputs.
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
          x: [batch, features] inputs.

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

    Calling the decoder on latent samples returns the Bernoulli logits of x and the Gaussians
    p(h_l | h_{l+1}) of the intermediate layers; `log_prob` turns them into log p(x, h).
    """

    def __init__(
        self,
        data_size: int = 784,
        latent_sizes: Sequence[int] = (50,),
        hidden_sizes: Sequence[Sequence[int]] = ((200, 200),),
        config: NetworkConfig | None = None,
        output_bias: np.ndarray | float = 0.0,
        **kwargs,
    ) -> None:
        """Builds the decoder.

        Args:
          data_size: Number of Bernoulli outputs (pixels).
          latent_sizes: Sizes of h_1, ..., h_L, bottom first (as for the encoder).
          hidden_sizes: Hidden sizes per stochastic layer, bottom first, as for the encoder;
            each generative conditional uses them in reverse, mirroring the encoder.
          config: How the dense layers are built.
          output_bias: Initial bias of the Bernoulli logits, e.g. `output_bias_from_mean`.
          **kwargs: Passed to `keras.Model`.
        """
        super().__init__(**kwargs)
        _check_layer_sizes("Decoder", latent_sizes, hidden_sizes)
        self.data_size = int(data_size)
        self.latent_sizes = tuple(latent_sizes)
        self.config = config = config or NetworkConfig()
        self.output_net = BernoulliMLP(
            tuple(reversed(hidden_sizes[0])), data_size, config, output_bias, name="p_x"
        )
        # p(h_l | h_{l+1}) for l = 1..L-1, bottom first.
        self.blocks = [
            GaussianMLP(
                tuple(reversed(hidden_sizes[i + 1])), latent_sizes[i], config, name=f"p_h{i + 1}"
            )
            for i in range(len(latent_sizes) - 1)
        ]

    def call(
        self, latents: Sequence[tf.Tensor], seed: tf.Tensor
    ) -> tuple[tf.Tensor, list[Gaussian]]:
        """Evaluates the generative conditionals at given latents.

        Args:
          latents: h_1, ..., h_L, bottom first, each [rows, dims].
          seed: [2] stateless seed of the draws of uncertain weights.

        Returns:
          (logits of p(x | h_1) as [rows, data_size], [p(h_l | h_{l+1}) for l = 1..L-1]).
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
          The latents h_1..h_L, bottom first, each [n, dims], and the logits [n, data_size] of
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
        """Bernoulli means of x given a latent, with no draw.

        From stochastic layer `layer` down, each p(h_l | h_{l+1}) is replaced by its mean, and
        every weight is at its posterior mean.

        Args:
          latent: [rows, d_layer] values of h_layer.
          layer: Which stochastic layer `latent` is, 1 = bottom (default: the top, L).

        Returns:
          [rows, data_size] pixel probabilities sigmoid(logits of p(x | h_1)).
        """
        layer = len(self.latent_sizes) if layer is None else layer
        h = latent
        for block in reversed(self.blocks[: layer - 1]):
            h = block.at_posterior_mean(h).mean
        return tf.sigmoid(self.output_net.at_posterior_mean(h))

    def log_prob(self, x: tf.Tensor, latents: Sequence[tf.Tensor], seed: tf.Tensor) -> tf.Tensor:
        """log p(x, h_1, ..., h_L) for every importance sample.

        Args:
          x: [batch, data_size] binary data.
          latents: h_1, ..., h_L, bottom first, each [num_samples, batch, dims].
          seed: [2] stateless seed of the draws of uncertain weights.

        Returns:
          [num_samples, batch] log joint densities.
        """
        sample_shape = tf.shape(latents[0])[:2]
        rows = [tf.reshape(h, [-1, h.shape[-1]]) for h in latents]
        logits, conditionals = self(rows, seed=seed)
        logits = tf.reshape(logits, tf.concat([sample_shape, [-1]], axis=0))
        log_joint = bernoulli_log_prob(x[tf.newaxis], logits) + standard_normal_log_prob(
            latents[-1]
        )
        for latent, gaussian in zip(latents[:-1], conditionals, strict=True):
            gaussian = Gaussian(
                tf.reshape(gaussian.mean, tf.shape(latent)),
                tf.reshape(gaussian.std, tf.shape(latent)),
            )
            log_joint += gaussian_log_prob(latent, gaussian)
        return log_joint


def _check_layer_sizes(
    network: str, latent_sizes: Sequence[int], hidden_sizes: Sequence[Sequence[int]]
) -> None:
    if len(latent_sizes) != len(hidden_sizes):
        raise ValueError(
            f"{network} needs one hidden-size list per stochastic layer; got "
            f"{len(latent_sizes)} latent sizes and {len(hidden_sizes)} hidden-size lists."
        )


def _tile_rows(x: tf.Tensor, num_samples: int) -> tf.Tensor:
    """[batch, features] -> [num_samples * batch, features], sample-major."""
    return tf.reshape(tf.tile(x[tf.newaxis], [num_samples, 1, 1]), [-1, x.shape[-1]])
