r"""Gradient estimators for the encoder: surrogate objectives whose gradients are the estimators.

For k samples h_i = h(eps_i; phi) ~ q(h | x; phi) and log-weights l_i = log p(x, h_i) -
log q(h_i | x; phi), an objective F(l_1, ..., l_k) (`iwae_tf.bounds`) has the encoder gradient

    dF/dphi = sum_i c_i [ dl_i/dh_i * dh_i/dphi  -  d log q(h_i | x; phi)/dphi ],   c_i = dF/dl_i,

a path term and a score term, the second taken at fixed h_i. For the IWAE bound c_i = w~_i,
the normalized weight w_i / sum_j w_j. Everything here keeps the decoder's gradient as it is and
changes only the encoder's:

* `reparam`: the plain reparameterization gradient of the objective (both terms).
* `stl`, "sticking the landing" (Roeder, Wu & Duvenaud, NeurIPS 2017): the score term dropped.
  For the ELBO (k = 1, or the vae objective) that term has mean zero and STL is unbiased, with
  zero variance when q is the exact posterior; for k > 1 the score term of the IWAE bound does
  not have mean zero, and STL is biased (Tucker et al. 2019, Section 3).
* `dreg`, doubly reparameterized (Tucker, Lawson, Gu & Maddison, ICLR 2019). The identity
  E_q[f(h) d log q(h; phi)/dphi] = E_eps[df/dh * dh/dphi], applied to f = c_i as a function of
  h_i (the other samples are independent of h_i), turns the score term's expectation into a
  path term, so that

      dF/dphi = E[ sum_i (c_i - dc_i/dl_i) * dl_i/dh_i * dh_i/dphi ],

  unbiased for dF/dphi, with no score term left. The coefficients, `dreg_coefficients`:

      iwae          w~_i^2                                   (Tucker et al., eq. 5)
      vae           1/k                                      (= stl, unbiased for the ELBO)
      vr(alpha)     alpha v_i + (1 - alpha) v_i^2,  v = softmax((1 - alpha) l)
      miwae(M)      w~_i^2 / M, w~ normalized within sample i's group
      ciwae(beta)   beta / k + (1 - beta) w~_i^2
      piwae(M)      miwae(M)'s (the encoder's target)
      rws           w~_i - w~_i^2                            (RWS-DReG, Tucker et al., Section 4)

  For vr, c_i = v_i and dv_i/dl_i = (1 - alpha) v_i (1 - v_i); alpha = 0 gives iwae's, alpha = 1
  vae's. VR-max (alpha = -inf) is refused: its one-hot weights are not differentiable in h, and
  the identity does not hold. For rws the wake update sum_i w~_i d log q(h_i)/dphi at fixed h_i
  is all score term: it is -(score term) of the iwae bound, whose rewriting gives
  sum_i (w~_i - w~_i^2) times the path derivative of l_i. The surrogate is
  sum_i stop(c_i - dc_i/dl_i) * l_i with the path gradient only.

The path gradient of log q. `LogWeightParts.path_log_weights` holds l_i with q's parameters held
fixed inside log q: log q(h) - log q(stop(h)) + stop(log q(stop(h))), the total derivative
along h(eps; phi) minus the partial derivative at fixed h. With two stochastic layers,
log q(h_2 | h_1) depends on phi directly and through h_1; at fixed samples it is q(h_2 | h_1)
recomputed at stop(h_1) (`Encoder.gaussians_at_fixed_samples`), so that only the direct
dependence is subtracted and the path through h_1, which the identity needs, stays. (Stopping
the gradient of the second layer's Gaussian outputs instead would cut that path and bias the
estimator; a test shows it.)

Uncertain encoder weights. Sample i has its own weight draw phi_i = g(eps'_i; lambda) (with local
reparameterization, its own pre-activation noise eps'_i), and the proposal over (eps'_i, h_i) is
p(eps') q(h | x, eps'; lambda); the weight w_i = p(x, h_i) / q(h_i | x, eps'_i; lambda) has no
q(eps') term (the bound is on the mixture over weights, see `iwae_tf.model`). Conditionally on
eps'_i, q(h | x, eps'; lambda) is a reparameterizable family in lambda, and the identity above
holds for it, sample by sample. Recomputing q(h_2 | h_1) at fixed h_1 with the same seed reuses
eps'_i, so the conditional density is the one differentiated, and every estimator here keeps
its (un)biasedness with uncertain weights, in one or two stochastic layers.

Two objectives give the encoder a target of its own, whatever the decoder maximizes (L_k):

* `piwae(M)` (Rainforth et al., ICML 2018): the encoder follows miwae(M), with any estimator.
* `rws`, reweighted wake-sleep's wake update for q (Bornschein & Bengio, ICLR 2015): the
  encoder follows sum_i w~_i d log q(h_i | x) / dphi with the samples held fixed, a
  self-normalized estimate of -d KL(p(h|x) || q(h|x)) / dphi; its surrogate is
  sum_i stop(w~_i) log q(stop(h_i) | x). With `dreg`, RWS-DReG as above; `stl` is refused.

References:
    G. Roeder, Y. Wu, D. Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference. NeurIPS 2017.
    G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly Reparameterized Gradient Estimators
    for Monte Carlo Objectives. ICLR 2019.
    T. Rainforth et al. Tighter Variational Bounds are Not Necessarily Better. ICML 2018.
    J. Bornschein, Y. Bengio. Reweighted Wake-Sleep. ICLR 2015.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from iwae_tf import bounds

ESTIMATORS: tuple[str, ...] = ("reparam", "stl", "dreg")


class LogWeightParts(NamedTuple):
    """The pieces of the [k, batch] log-weights that the estimators need.

    Attributes:
      log_joint: log p(x, h_i).
      log_q: log q(h_i | x), with gradients through q's parameters and through the samples.
      log_q_score: The same values with every sample held fixed, each q(h_l | h_{l-1})
        recomputed at the fixed h_{l-1} (`Encoder.gaussians_at_fixed_samples`): its gradient
        is the score term. None where not computed.
    """

    log_joint: tf.Tensor
    log_q: tf.Tensor
    log_q_score: tf.Tensor | None = None

    @property
    def log_weights(self) -> tf.Tensor:
        """log w_i = log p(x, h_i) - log q(h_i | x)."""
        return self.log_joint - self.log_q

    @property
    def path_log_weights(self) -> tf.Tensor:
        """log w_i again, with the gradient of its path term only: q's parameters held fixed.

        log p(x, h) - [log q(h) - log q(stop(h)) + stop(log q(stop(h)))]: the total derivative
        of log q along h(eps; phi) minus its partial derivative at fixed h.
        """
        if self.log_q_score is None:
            raise ValueError("These parts have no log_q_score: pass with_score=True.")
        path_log_q = self.log_q - self.log_q_score + tf.stop_gradient(self.log_q_score)
        return self.log_joint - path_log_q


class Surrogates(NamedTuple):
    """Per-example surrogate objectives [batch], to be maximized.

    Attributes:
      encoder: Its gradient with respect to the encoder's variables is the estimator's.
      decoder: Its gradient with respect to the decoder's variables is the objective's.
    """

    encoder: tf.Tensor
    decoder: tf.Tensor


def check(estimator: str, objective: bounds.Objective) -> None:
    """Raises ValueError, saying why, for a combination that is not defined here.

    Every estimator works with any number of stochastic layers and any model variant (see the
    module docstring); what is refused depends on the objective alone.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {estimator!r}; expected one of {ESTIMATORS}.")
    if objective.name == "rws" and estimator == "stl":
        raise ValueError(
            "objective 'rws' trains the encoder by the wake update, which is all score term: "
            "'stl' would drop all of it; use estimator 'reparam' (the wake update) or 'dreg' "
            "(its doubly reparameterized form)."
        )
    if estimator == "dreg" and objective.name == "vr" and objective.alpha == -math.inf:
        raise ValueError(
            "estimator 'dreg' needs normalized weights differentiable in the samples, and "
            "VR-max (alpha = -inf) selects one sample: use a finite alpha, or estimator "
            "'reparam' or 'stl'."
        )


def separate_surrogates(objective: bounds.Objective, estimator: str) -> bool:
    """Whether the encoder steps along another surrogate than the decoder's objective."""
    return estimator != "reparam" or objective.name in ("piwae", "rws")


def encoder_objective(objective: bounds.Objective) -> bounds.Objective:
    """What the encoder's estimator estimates the gradient of: miwae(M) for piwae, else the
    objective itself (for rws, the wake update stands in for a gradient)."""
    if objective.name == "piwae":
        return bounds.Objective("miwae", num_groups=objective.num_groups)
    return objective


def normalized_weights(log_weights: tf.Tensor) -> tf.Tensor:
    """w~_i = w_i / sum_j w_j over the k samples (axis 0), [k, batch]."""
    return tf.nn.softmax(log_weights, axis=0)


def dreg_coefficients(objective: bounds.Objective, log_weights: tf.Tensor) -> tf.Tensor:
    """c_i - dc_i/dl_i, the doubly reparameterized coefficients of `objective`, as constants.

    c_i = dF/dl_i is the objective's coefficient on d l_i / d phi (l = log w); see the module
    docstring for the closed forms.

    Args:
      objective: Any objective but VR-max (see `check`); piwae gives miwae(M)'s, rws the
        wake update's.
      log_weights: [k, batch].

    Returns:
      [k, batch] coefficients, gradient stopped.
    """
    name = objective.name
    if name == "piwae":
        return dreg_coefficients(encoder_objective(objective), log_weights)
    k = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    if name == "vae":
        coefficients = tf.ones_like(log_weights) / k
    elif name == "iwae":
        coefficients = tf.square(normalized_weights(log_weights))
    elif name == "vr":
        alpha = objective.alpha
        weights = normalized_weights((1.0 - alpha) * log_weights)
        coefficients = alpha * weights + (1.0 - alpha) * tf.square(weights)
    elif name == "miwae":
        m = objective.num_groups
        groups = tf.reshape(log_weights, tf.concat([[m, -1], tf.shape(log_weights)[1:]], 0))
        within = tf.nn.softmax(groups, axis=1)  # Normalized within each group of k/M.
        coefficients = tf.reshape(tf.square(within) / m, tf.shape(log_weights))
    elif name == "ciwae":
        beta = objective.beta
        coefficients = beta / k + (1.0 - beta) * tf.square(normalized_weights(log_weights))
    elif name == "rws":
        weights = normalized_weights(log_weights)
        coefficients = weights - tf.square(weights)
    else:
        raise ValueError(f"Unknown objective {name!r}; expected one of {bounds.OBJECTIVES}.")
    return tf.stop_gradient(coefficients)


def surrogates(parts: LogWeightParts, objective: bounds.Objective, estimator: str) -> Surrogates:
    """The encoder's and the decoder's surrogate objectives of `estimator` (see the module).

    Args:
      parts: The log-weight pieces of one batch; every estimator but plain `reparam` on an
        objective without an encoder target of its own needs `log_q_score`.
      objective: The training objective.
      estimator: One of `ESTIMATORS`.

    Returns:
      The per-example surrogates.
    """
    check(estimator, objective)
    log_weights = parts.log_weights
    decoder = objective(log_weights)
    if estimator == "dreg":
        coefficients = dreg_coefficients(objective, log_weights)
        return Surrogates(tf.reduce_sum(coefficients * parts.path_log_weights, axis=0), decoder)
    if objective.name == "rws":
        weights = tf.stop_gradient(normalized_weights(log_weights))
        return Surrogates(tf.reduce_sum(weights * parts.log_q_score, axis=0), decoder)
    target = encoder_objective(objective)
    if estimator == "stl":
        return Surrogates(target(parts.path_log_weights), decoder)
    return Surrogates(target(log_weights), decoder)
