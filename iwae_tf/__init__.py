"""iwae_tf: importance-weighted autoencoders (VAE, IWAE, IWAE with uncertain weights) on tf_keras.

The bound lives in `iwae_tf.bounds`, the (uncertain) dense layers in `iwae_tf.layers`, the
encoder and decoder in `iwae_tf.networks`, the trainable model in `iwae_tf.model`, the data in
`iwae_tf.data`, and the whole training job in `iwae_tf.train`.
"""

from iwae_tf.bounds import elbo, iwae_bound, log_mean_exp
from iwae_tf.evaluation import estimate_log_likelihood
from iwae_tf.export import load_exported
from iwae_tf.model import VARIANTS, ImportanceWeightedAutoencoder, build_model

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "ImportanceWeightedAutoencoder",
    "build_model",
    "elbo",
    "estimate_log_likelihood",
    "iwae_bound",
    "load_exported",
    "log_mean_exp",
]
