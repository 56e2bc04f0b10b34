"""Binarized-image datasets for IWAE training: an offline MNIST TFDS builder and tf.data pipelines.

Importing this package registers the `mnist_offline` TFDS builder.
"""

from iwae_tf.data.mnist import MnistOffline, mnist_pickle_path
from iwae_tf.data.pipeline import (
    DATASETS,
    NUM_PIXELS,
    DataUnavailableError,
    binarize,
    binarize_dynamic,
    eval_dataset,
    load_images,
    mean_image,
    num_examples,
    train_dataset,
)

__all__ = [
    "DATASETS",
    "NUM_PIXELS",
    "DataUnavailableError",
    "MnistOffline",
    "binarize",
    "binarize_dynamic",
    "eval_dataset",
    "load_images",
    "mean_image",
    "mnist_pickle_path",
    "num_examples",
    "train_dataset",
]
