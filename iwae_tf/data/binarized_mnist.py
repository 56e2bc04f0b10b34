"""Larochelle's fixed binarization of MNIST, through TFDS' own `binarized_mnist` builder.

The dataset of Larochelle & Murray (2011): MNIST binarized once by sampling, then fixed, as the
three text files `binarized_mnist_{train,valid,test}.amat` (50,000 / 10,000 / 10,000 images).
TFDS' builder `binarized_mnist` (version 1.0.0) downloads them from `SOURCE_URL` and stores
uint8 images `(28, 28, 1)` with values in {0, 1}, in the splits

    * `train`: 50,000 images,
    * `validation`: 10,000 images,
    * `test`: 10,000 images,

which this package exposes unchanged (`"train+validation"` gives all 60,000 training images).
Burda et al.'s own code trains on the 50,000 `train` images and validates on `validation`.
`decode` turns an image into float32 `[28, 28, 1]` in {0, 1} (like the other datasets);
the pipeline's Bernoulli binarization leaves such images unchanged, so every epoch sees the
same binarization and so does the evaluation.

Fixed versus dynamic binarization: Burda et al. (2016, appendix) report that models trained on
this fixed binarization score about 2 nats worse in test log-likelihood than the same models
trained on dynamically binarized MNIST (`"mnist"` in this package, re-binarized every epoch),
because a single fixed binarization of the training set is overfit. Compare numbers only
within one binarization scheme.

Offline use: TFDS retries a failed download for minutes, so `prepare` first checks for the
three files in the manual directory `<data_dir>/downloads/manual/` and otherwise probes the host
for a few seconds; unreachable, it raises `DataUnavailableError` at once.
"""

from pathlib import Path

import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from iwae_tf.data import reachability
from iwae_tf.data.errors import DataUnavailableError
from iwae_tf.data.images import IMAGE_SHAPE

BUILDER_NAME = "binarized_mnist"
"""The TFDS builder (TFDS' own, version 1.0.0)."""

SOURCE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
"""Where TFDS' builder downloads `SOURCE_FILES` from."""

SOURCE_FILES = (
    "binarized_mnist_train.amat",
    "binarized_mnist_valid.amat",
    "binarized_mnist_test.amat",
)

SPLIT_SIZES = {"train": 50_000, "validation": 10_000, "test": 10_000}
"""Examples per split of the prepared dataset."""


def decode(image: tf.Tensor) -> tf.Tensor:
    """Maps a stored image to float32 `[28, 28, 1]` pixels in {0, 1}.

    Args:
        image: uint8 `(28, 28, 1)` image with values in {0, 1}, as TFDS' builder stores it.

    Returns:
        The image as float32.

    Raises:
        tf.errors.InvalidArgumentError: If a pixel exceeds 1 (not Larochelle's binarization).
    """
    pixels = tf.reshape(tf.cast(image, tf.float32), IMAGE_SHAPE)
    tf.debugging.assert_less_equal(pixels, 1.0, message="binarized_mnist pixels must be 0 or 1")
    return pixels


def _manual_dir(builder: tfds.core.DatasetBuilder) -> Path:
    # TFDS' default: download_and_prepare() without a DownloadConfig, as the pipeline calls it.
    return Path(builder.data_dir_root) / "downloads" / "manual"


def prepare(builder: tfds.core.DatasetBuilder) -> None:
    """Prepares TFDS' `binarized_mnist`, failing within seconds when it cannot be downloaded.

    Already prepared data is used as it is; otherwise, if the three `.amat` files are in the
    manual directory TFDS reads them from there (checking their checksums), else the download
    host is probed before TFDS is allowed to try.

    Args:
        builder: The `binarized_mnist` builder, for the data_dir to prepare in.

    Raises:
        DataUnavailableError: If the data is neither prepared, nor in the manual directory, nor
            downloadable (host unreachable, download failed, or wrong checksum); the message
            says how to fix it.
    """
    if builder.is_prepared():
        return
    manual_dir = _manual_dir(builder)
    if not all((manual_dir / name).is_file() for name in SOURCE_FILES):
        reason = reachability.unreachable_reason(SOURCE_URL)
        if reason is not None:
            raise DataUnavailableError(_unavailable_message(builder, f"no network: {reason}"))
    try:
        builder.download_and_prepare()
    except (OSError, tfds.download.DownloadError, NonMatchingChecksumError) as e:
        reason = f"{type(e).__name__}: {e}".splitlines()[0].rstrip(":")
        raise DataUnavailableError(_unavailable_message(builder, reason)) from None


def _unavailable_message(builder: tfds.core.DatasetBuilder, reason: str) -> str:
    manual_dir = _manual_dir(builder)
    return (
        f"TFDS' `{BUILDER_NAME}` builder must download {', '.join(SOURCE_FILES)} from "
        f"{SOURCE_URL}, which failed ({reason}). Fix it in one of three ways: run once with "
        f"network access; or copy a prepared `{BUILDER_NAME}/{builder.version}` TFDS directory "
        f"from another machine into {builder.data_dir_root}; or download the three files by "
        f"hand from {SOURCE_URL} and put them in {manual_dir}."
    )
