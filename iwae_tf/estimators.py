r"""Gradient estimators for the encoder: surrogate objectives whose gradients are the estimators.

For k samples z_i = z(eps_i; phi) ~ q(z | x; phi), log w_i = log p(x, z_i) - log q(z_i | x; phi)
and normalized weights w~_i = w_i / sum_j w_j, the gradient of the IWAE bound L_k with
respect to the encoder's parameters phi splits into a path term and a score term,

    d L_k / d phi = sum_i w~_i [ d log w_i/d z_i * dz_i/d phi  -  d log q(z_i | x; phi)/d phi ],

the second taken at fixed z_i. Everything here keeps the decoder's gradient as it is and
changes only the encoder's:

* `reparam`: the plain reparameterization gradient of the objective (both terms).
* `stl`, "sticking the landing" (Roeder, Wu & Duvenaud, NeurIPS 2017): the objective of the
  log-weights with q's parameters held fixed inside log q, which drops the score term. For
  the ELBO (k = 1 or objective vae) that term has mean zero and STL is unbiased, with zero
  variance when q is the exact posterior; for k > 1 the IWAE score term does not have mean
  zero and STL is biased (Tucker et al. 2019, Section 3).
* `dreg`, doubly reparameterized (Tucker, Lawson, Gu & Maddison, ICLR 2019): the score term's
  expectation is rewritten by reparameterizing it once more, which gives

      d L_k / d phi = E[ sum_i w~_i^2 * d log w_i / d z_i * dz_i / d phi ],

  unbiased for L_k, with an encoder gradient signal-to-noise ratio that grows with k. The
  surrogate is sum_i stop(w~_i^2) * log w_i, q's parameters held fixed inside log q.

What "q's parameters held fixed" means here: the outputs (mean, std) of the encoder's Gaussian
head, `tf.stop_gradient` applied to them inside log q only, while z_i = mean + std * eps keeps
its gradient. With uncertain encoder weights, sample i has its own weights phi_i = mu + sigma *
eps'_i (or their local reparameterization), and the proposal over (phi_i, z_i) is
q(phi; lambda) q(z | x, phi); its weight w_i = p(x, z_i) / q(z_i | x, phi_i) does not depend
on lambda except through the samples. The identity behind DReG, E_z[f(z) d log q(z|m, s)/d(m,
s)] = E_eps[df/dz dz/d(m, s)], holds conditionally on phi_i (and on every other sample, which
is independent of z_i given phi_i) with (m, s) the head's outputs at phi_i; chained through
d(m, s)/d lambda (the noisy path of the sampled pre-activations), it keeps DReG unbiased. The
same argument gives STL's k = 1 unbiasedness.

With two stochastic layers, log q(h_2 | h_1) depends on h_1 through the network of the second
layer; holding that layer's head outputs fixed would also cut the path derivative through h_1,
which the identity needs, and bias the estimator. `stl` and `dreg` are therefore refused for
more than one stochastic layer (they would need the upper networks recomputed with their
weights, not their inputs, held fixed).

`dreg` is defined for the iwae objective (and reduces to `stl` for vae, where it is refused in
favour of `stl`); other objectives refuse it.

Two objectives give the encoder a target of its own, whatever the decoder maximizes (L_k):

* `piwae(M)` (Rainforth et al., ICML 2018): the encoder maximizes miwae(M), by
  reparameterization.
* `rws`, reweighted wake-sleep's wake update for q (Bornschein & Bengio, ICLR 2015): the
  encoder follows sum_i w~_i d log q(z_i | x) / d phi with the samples z_i held fixed, a
  self-normalized estimate of -d KL(p(z|x) || q(z|x)) / d phi. Its surrogate is
  sum_i stop(w~_i) log q(stop(z_i) | x). It takes no other estimator.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from iwae_tf import bounds

ESTIMATORS: tuple[str, ...] = ("reparam", "stl", "dreg")


class LogWeightParts(NamedTuple):
    """The pieces of the [k, batch] log-weights that the estimators need.

    Attributes:
      log_joint: log p(x, z_i).
      log_q: log q(z_i | x), with gradients through q's parameters and through z_i.
      log_q_fixed: the same values with q's parameters held fixed (gradients through z_i only).
      log_q_fixed_sample: the same values with z_i held fixed (gradients through q's
        parameters only).
    """

    log_joint: tf.Tensor
    log_q: tf.Tensor
    log_q_fixed: tf.Tensor
    log_q_fixed_sample: tf.Tensor

    @property
    def log_weights(self) -> tf.Tensor:
        """log w_i = log p(x, z_i) - log q(z_i | x)."""
        return self.log_joint - self.log_q


class Surrogates(NamedTuple):
    """Per-example surrogate objectives [batch], to be maximized.

    Attributes:
      encoder: Its gradient with respect to the encoder's variables is the estimator's.
      decoder: Its gradient with respect to the decoder's variables is the objective's.
    """

    encoder: tf.Tensor
    decoder: tf.Tensor


def check(estimator: str, objective: bounds.Objective, num_stochastic_layers: int) -> None:
    """Raises ValueError, saying why, for a combination that is not an unbiased estimator here."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {estimator!r}; expected one of {ESTIMATORS}.")
    if objective.name == "rws" and estimator != "reparam":
        raise ValueError(
            f"objective 'rws' has its own encoder update (the wake phase); estimator "
            f"{estimator!r} does not apply: use estimator 'reparam'."
        )
    if estimator == "reparam":
        return
    if num_stochastic_layers > 1:
        raise ValueError(
            f"estimator {estimator!r} is implemented for one stochastic layer: with more, "
            "holding q's parameters fixed would also cut the path through the lower latents "
            "(see iwae_tf.estimators); use estimator 'reparam'."
        )
    if estimator == "dreg" and objective.name != "iwae":
        hint = " (for vae, dreg is stl: use estimator 'stl')" if objective.name == "vae" else ""
        raise ValueError(
            f"estimator 'dreg' is derived for the iwae objective, not {objective.name!r}{hint}."
        )


def separate_surrogates(objective: bounds.Objective, estimator: str) -> bool:
    """Whether the encoder steps along another surrogate than the decoder's objective."""
    return estimator != "reparam" or objective.name in ("piwae", "rws")


def dreg_weights(log_weights: tf.Tensor) -> tf.Tensor:
    """stop_gradient(w~_i^2): the squared normalized weights, [k, batch], as constants."""
    return tf.stop_gradient(tf.square(tf.nn.softmax(log_weights, axis=0)))


def surrogates(parts: LogWeightParts, objective: bounds.Objective, estimator: str) -> Surrogates:
    """The encoder's and the decoder's surrogate objectives of `estimator` (see the module).

    Args:
      parts: The log-weight pieces of one batch.
      objective: The training objective.
      estimator: One of `ESTIMATORS`.

    Returns:
      The per-example surrogates.
    """
    log_weights = parts.log_weights
    decoder = objective(log_weights)
    if objective.name == "rws":
        weights = tf.stop_gradient(tf.nn.softmax(log_weights, axis=0))
        return Surrogates(tf.reduce_sum(weights * parts.log_q_fixed_sample, axis=0), decoder)
    if objective.name == "piwae":
        encoder_objective = bounds.Objective("miwae", num_groups=objective.num_groups)
        return Surrogates(encoder_objective(log_weights), decoder)
    if estimator == "reparam":
        return Surrogates(decoder, decoder)
    fixed = parts.log_joint - parts.log_q_fixed  # Equal values; gradients through z only.
    if estimator == "stl":
        return Surrogates(objective(fixed), decoder)
    if estimator == "dreg":
        return Surrogates(tf.reduce_sum(dreg_weights(log_weights) * fixed, axis=0), decoder)
    raise ValueError(f"Unknown estimator {estimator!r}; expected one of {ESTIMATORS}.")
