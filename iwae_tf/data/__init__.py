"""Binarized-image datasets for IWAE training: TFDS builders and tf.data pipelines.

Three datasets, by name (`DATASETS`): `"mnist"` (offline MNIST grey levels, builder
`mnist_offline`, dynamically binarized), `"binarized_mnist"` (Larochelle's fixed binarization,
TFDS' own downloading builder `binarized_mnist`) and `"omniglot"` (Omniglot 28x28 from the IWAE
authors' `chardata.mat`, builder `omniglot_iwae`, dynamically binarized).

Importing this package registers the `mnist_offline` and `omniglot_iwae` TFDS builders.
"""

from iwae_tf.data.errors import DataUnavailableError
from iwae_tf.data.images import IMAGE_SHAPE, NUM_PIXELS
from iwae_tf.data.mnist import MnistOffline, mnist_pickle_path
from iwae_tf.data.omniglot import OmniglotIwae, load_chardata
from iwae_tf.data.pipeline import (
    DATASETS,
    binarize,
    eval_dataset,
    load_images,
    mean_image,
    num_examples,
    train_dataset,
)

__all__ = [
    "DATASETS",
    "IMAGE_SHAPE",
    "NUM_PIXELS",
    "DataUnavailableError",
    "MnistOffline",
    "OmniglotIwae",
    "binarize",
    "eval_dataset",
    "load_chardata",
    "load_images",
    "mean_image",
    "mnist_pickle_path",
    "num_examples",
    "train_dataset",
]
