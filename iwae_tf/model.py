"""The importance-weighted autoencoder: log-weights, and Keras train and test steps.

For a batch x and k importance samples, `log_weights` returns the [k, batch] matrix

    log w_i = log p(x, h^(i)) - log q(h^(i) | x),   h^(i) ~ q(h | x),

drawn by reparameterization, so gradients flow through the samples (Kingma & Welling 2014).
`train_step` maximizes the objective chosen at construction: `iwae` (the k-sample bound of
Burda et al. 2016), `vae` (the mean single-sample ELBO), or a relative (VR-alpha, MIWAE,
CIWAE), see `iwae_tf.bounds`.

Every draw is stateless (`iwae_tf.rng`): train step s draws with
`rng.step_seed(model.seed, rng.TRAIN_STREAM, s)`, s the optimizer's step counter, so that a run
is a function of its seed under XLA too, and a run resumed from a checkpoint draws the noise the
uninterrupted run would have drawn. Under tf.distribute each replica folds in its replica id.

With uncertain network weights (Hernandez-Lobato et al.), every importance sample i also
carries its own weight draws theta^(i), phi^(i): the layers draw per row, and the encoder sees
x tiled k times. The importance weight of sample i then uses q(h^(i) | x; phi^(i)) from the same
encoder pass that produced h^(i), which makes L_k a lower bound on the log-likelihood of the
mixture model p(x) = E_{q(theta)}[p(x; theta)] (no weight-prior KL enters unless asked for).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from iwae_tf import bounds, estimators, likelihoods, rng, serving
from iwae_tf import layers as dense_layers
from iwae_tf.networks import Decoder, Encoder, NetworkConfig, gaussian_log_prob


class ImageSample(NamedTuple):
    """Images drawn from the generative model (see `sample_images`).

    Attributes:
      images: [n, *data_shape] draws x ~ p(x | h_1): binary pixels for the Bernoulli.
      mean: [n, *data_shape] E[x | h_1], the Bernoulli's probabilities or the Gaussian's mean.
      parameters: p(x | h_1)'s parameters by name, each [n, *data_shape] (see
        `iwae_tf.likelihoods.Likelihood.parameters`): {"probs"} or {"mean", "std"}.
      latents: [n, d_L] the top stochastic layer's draws.
    """

    images: tf.Tensor
    mean: tf.Tensor
    parameters: dict[str, tf.Tensor]
    latents: tf.Tensor


class ImportanceWeightedAutoencoder(keras.Model):
    """A VAE or IWAE, trained with `model.fit` on batches of data [batch, *data_shape].

    Metrics, all per example in nats: `loss` = -objective (+ the scaled weight KL if any),
    `iwae_bound` = L_k and `elbo` = the mean single-sample ELBO, both at the training k.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        num_importance_samples: int = 5,
        objective: str | bounds.Objective = "iwae",
        kl_weight: float = 0.0,
        num_train_examples: int | None = None,
        seed: int = 0,
        estimator: str = "reparam",
        **kwargs,
    ) -> None:
        """Builds the model.

        Args:
          encoder: The recognition model q(h | x).
          decoder: The generative model p(x, h).
          num_importance_samples: k, the importance samples per example in training.
          objective: What train_step maximizes: a name of `iwae_tf.bounds.OBJECTIVES`, or a
            `bounds.Objective` with its parameter (alpha, num_groups, beta).
          kl_weight: Weight of sum KL(q(W) || p(W)) / num_train_examples in the loss, for
            networks whose uncertain layers were built with a KL; 0 trains the plain bound.
          num_train_examples: N in the KL scaling; required when kl_weight > 0.
          seed: Integer seed of every draw the train and test steps make (see `iwae_tf.rng`).
          estimator: The encoder's gradient estimator, one of `iwae_tf.estimators.ESTIMATORS`.
          **kwargs: Passed to `keras.Model`.
        """
        super().__init__(**kwargs)
        num_importance_samples = serving.check_count(
            "num_importance_samples", num_importance_samples
        )
        if isinstance(objective, str):
            objective = bounds.Objective(objective)
        objective.check(num_importance_samples)
        estimators.check(estimator, objective)
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight}.")
        if kl_weight > 0 and not num_train_examples:
            raise ValueError("kl_weight > 0 needs num_train_examples to scale the KL per example.")
        self.encoder = encoder
        self.decoder = decoder
        self.num_importance_samples = int(num_importance_samples)
        self.objective = objective
        self.kl_weight = float(kl_weight)
        self.num_train_examples = num_train_examples
        self.seed = int(seed)
        self.estimator = estimator
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.iwae_bound_tracker = keras.metrics.Mean(name="iwae_bound")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.iwae_bound_tracker, self.elbo_tracker]

    def log_weight_parts(
        self, x: tf.Tensor, num_samples: int, seed: tf.Tensor, with_score: bool = False
    ) -> estimators.LogWeightParts:
        """log p(x, h^(i)), log q(h^(i) | x) and, if asked, log q at the samples held fixed.

        Args:
          x, num_samples, seed: As for `log_weights`.
          with_score: Whether to also compute `log_q_score`, which the estimators of
            `iwae_tf.estimators` other than the plain reparameterization gradient need.

        Returns:
          The parts, each [num_samples, batch].
        """
        encoder_seed, decoder_seed = rng.split(seed, 2)
        posterior = self.encoder(x, num_samples=num_samples, seed=encoder_seed)
        latents = [sample for sample, _ in posterior]
        log_q = tf.add_n([gaussian_log_prob(sample, q) for sample, q in posterior])
        log_joint = self.decoder.log_prob(x, latents, seed=decoder_seed)
        if not with_score:
            return estimators.LogWeightParts(log_joint, log_q)
        gaussians = self.encoder.gaussians_at_fixed_samples(posterior, encoder_seed)
        log_q_score = tf.add_n(
            [
                gaussian_log_prob(tf.stop_gradient(sample), q)
                for sample, q in zip(latents, gaussians, strict=True)
            ]
        )
        return estimators.LogWeightParts(log_joint, log_q, log_q_score)

    def log_weights(self, x: tf.Tensor, num_samples: int, seed: tf.Tensor) -> tf.Tensor:
        """log p(x, h^(i)) - log q(h^(i) | x) for i = 1..num_samples.

        Args:
          x: [batch, *data_shape] data.
          num_samples: k, a Python int.
          seed: [2] stateless seed (see `iwae_tf.rng`) of every draw, latents and uncertain
            weights: the same x and seed give the same log-weights in any process. The
            encoder draws with rng.split(seed, 2)[0], the decoder with [1].

        Returns:
          [num_samples, batch] log importance weights.
        """
        return self.log_weight_parts(x, num_samples, seed).log_weights

    def call(self, x: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        """The k-sample bound L_k per example at the training k; `seed` defaults to the
        model's evaluation seed, rng.from_int(model.seed)."""
        if seed is None:
            seed = rng.from_int(self.seed)
        return bounds.iwae_bound(self.log_weights(x, self.num_importance_samples, seed))

    def reconstruct(self, x: tf.Tensor) -> tf.Tensor:
        """Means of p(x | h_1 = E_q[h_1 | x]), both networks at posterior-mean weights.

        No draw (`Encoder.posterior_mean`, `Decoder.decode`): a picture of what the model
        keeps of x, for figures and TensorBoard.

        Args:
          x: [batch, *data_shape] data.

        Returns:
          [batch, *data_shape] means of p(x | h_1).
        """
        posterior = self.encoder.posterior_mean(tf.convert_to_tensor(x, tf.float32))
        return self.decoder.decode(posterior[0].mean, layer=1)

    def sample_images(self, num_samples: int | tf.Tensor, seed: int | tf.Tensor) -> ImageSample:
        """Draws images from the generative model, all of it a function of an integer seed.

        `Decoder.sample` draws the latents and p(x | h_1)'s parameters with
        rng.split(rng.from_int(seed), 2)[0], and the pixels use [1]: the SavedModel's
        `sample`, the plots and the TensorBoard grids draw the same images for one seed.

        Args:
          num_samples: Images n to draw.
          seed: An integer seed (a Python int or an int64 scalar tensor).

        Returns:
          The images, their means and parameters, all [n, *data_shape], and the top latents.
        """
        model_seed, pixel_seed = rng.split(rng.from_int(seed), 2)
        draw = self.decoder.sample(num_samples, model_seed)
        likelihood = self.decoder.likelihood
        return ImageSample(
            likelihood.sample(draw.outputs, pixel_seed),
            likelihood.mean(draw.outputs),
            likelihood.parameters(draw.outputs),
            draw.latents[-1],
        )

    def weight_kl(self) -> tf.Tensor:
        """kl_weight * sum KL(q(W) || p(W)) / N: the per-example weight-prior penalty, or 0.

        The KL terms are the ones the uncertain layers added to `self.losses` in the last
        forward pass; with kl_weight = 0 none enters the loss.
        """
        if self.kl_weight == 0.0 or not self.losses:
            return tf.constant(0.0)
        return self.kl_weight * tf.add_n(self.losses) / float(self.num_train_examples)

    def step_seed(self, stream: int, step: tf.Tensor) -> tf.Tensor:
        """The seed of step `step` of `stream`, with the replica id folded in under a strategy."""
        seed = rng.step_seed(self.seed, stream, step)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            seed = rng.fold_in(seed, context.replica_id_in_sync_group)
        return seed

    def _forward(self, x: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The encoder's and the decoder's losses (the same tensor for `reparam`)."""
        separate = estimators.separate_surrogates(self.objective, self.estimator)
        parts = self.log_weight_parts(x, self.num_importance_samples, seed, with_score=separate)
        log_weights = parts.log_weights
        weight_kl = self.weight_kl()
        # Sum over the replica's batch / global batch: correct under tf.distribute, whose
        # gradients are summed across replicas; the KL is a model-level term, scaled once.
        kl_loss = tf.nn.scale_regularization_loss(weight_kl)
        if not separate:
            per_example = self.objective(log_weights)
            loss = _average_over_global_batch(-per_example) + kl_loss
            losses = (loss, loss)
        else:
            surrogate = estimators.surrogates(parts, self.objective, self.estimator)
            per_example = surrogate.decoder  # The objective's value.
            losses = tuple(
                _average_over_global_batch(-part) + kl_loss
                for part in (surrogate.encoder, surrogate.decoder)
            )
        self.loss_tracker.update_state(-per_example + weight_kl)
        self.iwae_bound_tracker.update_state(bounds.iwae_bound(log_weights))
        self.elbo_tracker.update_state(bounds.elbo(log_weights))
        return losses

    def train_step(self, data: tf.Tensor) -> dict[str, tf.Tensor]:
        x = _features(data)
        seed = self.step_seed(rng.TRAIN_STREAM, self.optimizer.iterations)
        separate = estimators.separate_surrogates(self.objective, self.estimator)
        with tf.GradientTape(persistent=separate) as tape:
            encoder_loss, decoder_loss = self._forward(x, seed)
        if not separate:
            variables = self.trainable_variables
            gradients = tape.gradient(encoder_loss, variables)
        else:
            # Each network's gradient from its own surrogate (see iwae_tf.estimators).
            encoder_vars = self.encoder.trainable_variables
            decoder_vars = self.decoder.trainable_variables
            variables = encoder_vars + decoder_vars
            gradients = tape.gradient(encoder_loss, encoder_vars) + tape.gradient(
                decoder_loss, decoder_vars
            )
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: tf.Tensor) -> dict[str, tf.Tensor]:
        # Keras resets its test counter at every evaluation pass, so each pass in `fit` draws
        # the same noise for the same batch: validation curves compare epochs, not draws.
        seed = self.step_seed(rng.VALIDATION_STREAM, self._test_counter)
        # Under XLA the per-element layout draws the same noise faster (rng's docstring).
        layout = rng.per_element_draws() if self.jit_compile else contextlib.nullcontext()
        with layout:
            self._forward(_features(data), seed)
        return {m.name: m.result() for m in self.metrics}


def _average_over_global_batch(per_example: tf.Tensor) -> tf.Tensor:
    """sum(per_example) / (replica batch * replicas): `tf.nn.compute_average_loss`'s arithmetic.

    Written out because that function asserts its batch size is non-negative, an Assert op
    that XLA cannot compile and warns about ("Ignoring Assert operator") on every trace.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    global_batch = tf.cast(tf.shape(per_example)[0] * replicas, per_example.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_example), global_batch)


def _features(data: tf.Tensor | tuple) -> tf.Tensor:
    # Accept x alone or Keras' (x,) / (x, y) tuples: an autoencoder has no targets.
    if isinstance(data, tuple | list):
        data = data[0]
    return data


class Variant(NamedTuple):
    """A named model family: its training objective and which networks have uncertain weights.

    Attributes:
      objective: "iwae" or "vae".
      uncertain_encoder: Whether q(z|x) has a factorized Gaussian over its weights.
      uncertain_decoder: Whether p(x|z) has one.
    """

    objective: str
    uncertain_encoder: bool
    uncertain_decoder: bool


VARIANTS: dict[str, Variant] = {
    "vae": Variant("vae", False, False),
    "iwae": Variant("iwae", False, False),
    "iwaeu": Variant("iwae", True, True),
    "iwaeu_rec": Variant("iwae", True, False),
    "iwaeu_gen": Variant("iwae", False, True),
}


def build_model(
    variant: str = "iwae",
    num_importance_samples: int = 5,
    latent_sizes: Sequence[int] = (50,),
    hidden_sizes: Sequence[Sequence[int]] = ((200, 200),),
    data_shape: Sequence[int] | int = (784,),
    output_bias: np.ndarray | float = 0.0,
    likelihood: str | likelihoods.Likelihood = "bernoulli",
    min_std: float = likelihoods.DEFAULT_MIN_STD,
    conv_filters: Sequence[int] = (),
    uncertain_layer_kind: str = "local_reparameterization",
    init_scale: float = dense_layers.DEFAULT_INIT_SCALE,
    kl_weight: float = 0.0,
    prior_scale: float = 1.0,
    num_train_examples: int | None = None,
    seed: int = 0,
    objective: str | bounds.Objective | None = None,
    estimator: str = "reparam",
) -> ImportanceWeightedAutoencoder:
    """Builds a named variant (see `VARIANTS`): Burda et al.'s MLPs, or a convnet.

    Args:
      variant: One of `VARIANTS`.
      num_importance_samples: k used in training.
      latent_sizes: Sizes of the stochastic layers, bottom first.
      hidden_sizes: Hidden layer sizes for each stochastic layer, bottom first.
      data_shape: Shape of one example, [D] (flat rows) or [H, W, C] (images).
      output_bias: Initial bias of the decoder's raw outputs, e.g.
        `likelihoods.get(likelihood).output_bias(mean image)`.
      likelihood: The observation model, one of `iwae_tf.likelihoods.LIKELIHOODS`.
      min_std: The Gaussian likelihood's scale floor.
      conv_filters: Filter counts of the stride-2 conv stack of the conv architecture (empty:
        MLP); images only.
      uncertain_layer_kind: The `iwae_tf.layers` kind used by uncertain networks.
      init_scale: Initial posterior std of uncertain weights.
      kl_weight: Weight of the weight-prior KL per example (0: none).
      prior_scale: Std of the N(0, prior_scale^2) weight prior.
      num_train_examples: Training set size, to scale the KL.
      seed: Integer seed of the train and test steps' draws.
      objective: What training maximizes (see `ImportanceWeightedAutoencoder`); None: the
        variant's own ("vae" for vae, "iwae" for the others).
      estimator: The encoder's gradient estimator (see `iwae_tf.estimators`).

    Returns:
      An uncompiled model.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown model variant {variant!r}; expected one of {sorted(VARIANTS)}.")
    if len(latent_sizes) != len(hidden_sizes):
        raise ValueError(
            f"latent_sizes and hidden_sizes need one entry per stochastic layer; got "
            f"{len(latent_sizes)} and {len(hidden_sizes)}"
        )
    sizes = [*latent_sizes, *(size for layer in hidden_sizes for size in layer), *conv_filters]
    if not latent_sizes or min(sizes) < 1:
        raise ValueError(f"layer sizes must be >= 1; got {latent_sizes} and {hidden_sizes}")
    for name, value in [("init_scale", init_scale), ("prior_scale", prior_scale)]:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0; got {value}")
    spec = VARIANTS[variant]
    if spec.uncertain_encoder or spec.uncertain_decoder:
        if not dense_layers.is_uncertain(uncertain_layer_kind):
            raise ValueError(
                f"Variant {variant!r} needs an uncertain layer kind, got {uncertain_layer_kind!r}."
            )
    elif kl_weight > 0:
        raise ValueError(
            f"kl_weight > 0 needs uncertain weights, but variant {variant!r} has none."
        )

    def config(uncertain: bool) -> NetworkConfig:
        if not uncertain:
            return NetworkConfig()
        return NetworkConfig(uncertain_layer_kind, init_scale, kl_weight > 0, prior_scale)

    encoder = Encoder(
        latent_sizes,
        hidden_sizes,
        config(spec.uncertain_encoder),
        conv_filters=conv_filters,
        name="encoder",
    )
    decoder = Decoder(
        data_shape,
        latent_sizes,
        hidden_sizes,
        config(spec.uncertain_decoder),
        output_bias=output_bias,
        likelihood=likelihoods.get(likelihood, min_std),
        conv_filters=conv_filters,
        name="decoder",
    )
    return ImportanceWeightedAutoencoder(
        encoder,
        decoder,
        num_importance_samples=num_importance_samples,
        objective=spec.objective if objective is None else objective,
        kl_weight=kl_weight,
        num_train_examples=num_train_examples,
        seed=seed,
        estimator=estimator,
        name=variant,
    )
