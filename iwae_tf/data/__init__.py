"""Image datasets for IWAE training: TFDS builders and tf.data pipelines.

Any TFDS image dataset works by its name (see `iwae_tf.data.pipeline`). Four names have
builders of this package (`DATASETS`): `"mnist"` (offline MNIST grey levels, builder
`mnist_offline`), `"binarized_mnist"` (Larochelle's fixed binarization, TFDS' own downloading
builder `binarized_mnist`), `"omniglot"` (Omniglot 28x28 from the IWAE authors' `chardata.mat`,
builder `omniglot_iwae`) and `"frey_face"` (Frey Face 28x20, manual download, builder
`frey_face`).

Importing this package registers the `mnist_offline`, `omniglot_iwae` and `frey_face` TFDS
builders.
"""

from iwae_tf.data.errors import DataUnavailableError
from iwae_tf.data.frey_face import FreyFace
from iwae_tf.data.images import IMAGE_SHAPE
from iwae_tf.data.mnist import MnistOffline, mnist_pickle_path
from iwae_tf.data.omniglot import OmniglotIwae, load_chardata
from iwae_tf.data.pipeline import (
    BINARIZATIONS,
    DATASETS,
    binarize,
    eval_dataset,
    image_shape,
    load_images,
    mean_image,
    num_examples,
    train_dataset,
    training_set,
)

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "IMAGE_SHAPE",
    "DataUnavailableError",
    "FreyFace",
    "MnistOffline",
    "OmniglotIwae",
    "binarize",
    "eval_dataset",
    "image_shape",
    "load_chardata",
    "load_images",
    "mean_image",
    "mnist_pickle_path",
    "num_examples",
    "train_dataset",
    "training_set",
]
