r"""Scores images with an exported IWAE SavedModel: per-example log p(x) to CSV, mean printed.

Examples:

  python scripts/score.py --saved_model=exported/iwaeu --input=images.npy --output=scores.csv
  python scripts/score.py --saved_model=exported/iwaeu --input=tfds:test[:1000] --k=5000

Standalone on purpose: it imports only numpy, TensorFlow, absl (and tensorflow_datasets for a
tfds input), never the iwae_tf package, and runs the model through `tf.saved_model.load` alone,
so any SavedModel written by `iwae_tf.export` can be scored without the code that trained it.

Input (--input):
  * a `.npy` file of float images [N, D] with values 0 or 1 (D = the model's data size, 784
    for MNIST). Grey values are rejected unless --binarize is given, which binarizes row i as
    Bernoulli(intensity) with the stateless seed (--binarize_seed, i).
  * `tfds:SPLIT`, e.g. `tfds:test[:1000]`: a split of the model's dataset (from the export's
    metadata, or --dataset), read from a prepared tfds data directory (--data_dir) and
    binarized exactly as `iwae_tf.data.eval_dataset` binarizes it (seed 0: the test set's
    fixed binarization that the recorded metrics use).

Bad input (wrong rank or width, a non-float dtype, NaN or inf, values outside [0, 1], grey
values without --binarize) stops the script with exit status 1 and an error naming the
problem, in the same words as the SavedModel's own in-graph checks (see iwae_tf/export.py).

Output: a CSV with columns index, log_px (the k-sample estimate log (1/k) sum_j w_j of
log p(x)), elbo; and the mean log p(x), the NLL and its standard error, printed. Scores are
reproducible for the same input, --k, --seed and --batch_size (except for flipout models).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

flags.DEFINE_string("saved_model", None, "SavedModel directory written by iwae_tf.", required=True)
flags.DEFINE_string("input", None, "A .npy file of images [N, D], or tfds:SPLIT.", required=True)
flags.DEFINE_string("output", "scores.csv", "Where the per-example scores go (CSV).")
flags.DEFINE_integer("k", 5000, "Importance samples per example.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the importance samples.")
flags.DEFINE_integer("batch_size", 100, "Examples per call of the model.", lower_bound=1)
flags.DEFINE_integer("max_examples", None, "Score only the first N examples.", lower_bound=1)
flags.DEFINE_bool("binarize", False, "Binarize grey .npy images instead of rejecting them.")
flags.DEFINE_integer("binarize_seed", 0, "Seed of the binarization (tfds input and --binarize).")
flags.DEFINE_string("dataset", None, "Dataset of a tfds input (default: the model's).")
flags.DEFINE_string("data_dir", None, "tfds data directory of a tfds input.")

# The same words as the in-graph checks of iwae_tf/export.py (not imported: see above).
MSG_RANK = "x must have rank 2, [N, {width}]"
MSG_WIDTH = "x must have {width} columns (flattened images)"
MSG_DTYPE = "x must be a float array"
MSG_NONFINITE = "x contains NaN or inf"
MSG_RANGE = "x has values outside [0, 1]"
MSG_BINARY = "x is not binary"

# Dataset name -> (tfds builder, image feature, divisor to [0, 1]); mirrors the decoders of
# iwae_tf.data.pipeline (tests/test_export.py checks that the two agree).
TFDS_SOURCES = {
    "mnist": ("mnist_offline", "image", 255.0),
    "binarized_mnist": ("binarized_mnist", "image", 1.0),
    "omniglot": ("omniglot_iwae", "image", 1.0),
}


class InputError(ValueError):
    """The input cannot be scored; the message says why."""


def check_images(x: np.ndarray, width: int, binary: bool) -> np.ndarray:
    """Validates images [N, width]; returns them as float32 (see iwae_tf.export.check_images)."""
    if x.ndim != 2:
        raise InputError(f"{MSG_RANK.format(width=width)}; got shape {x.shape}")
    if x.shape[1] != width:
        raise InputError(f"{MSG_WIDTH.format(width=width)}; got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{MSG_DTYPE} (float32 in {{0, 1}}); got dtype {x.dtype}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{MSG_NONFINITE}: {int(bad.sum())} values, first x[{row}, {col}]")
    outside = (x < 0) | (x > 1)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise InputError(
            f"{MSG_RANGE}: min {x.min():g}, max {x.max():g}, first x[{row}, {col}] = "
            f"{x[row, col]:g}"
        )
    grey = (x != 0) & (x != 1)
    if binary and grey.any():
        row, col = np.argwhere(grey)[0]
        raise InputError(
            f"{MSG_BINARY}: {int(grey.sum())} values strictly between 0 and 1, first "
            f"x[{row}, {col}] = {x[row, col]:g}; grey values are rejected, pass --binarize "
            "to binarize them as Bernoulli(intensity)"
        )
    return x


def binarize(images: tf.data.Dataset, seed: int) -> np.ndarray:
    """Element i -> Bernoulli(intensity) with stateless seed (seed, i): iwae_tf.data's scheme."""
    base = tf.constant(seed, tf.int64)

    def draw(i: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
        uniform = tf.random.stateless_uniform(
            tf.shape(image), seed=tf.stack([base, i]), alg=tf.random.Algorithm.PHILOX
        )
        return tf.cast(uniform < image, tf.float32)

    parts = [b.numpy() for b in images.enumerate().map(draw).batch(4096)]
    return np.concatenate(parts) if parts else np.zeros([0, 0], np.float32)


def read_tfds(split: str, dataset: str, data_dir: str | None, seed: int) -> np.ndarray:
    """A split of a prepared tfds dataset, binarized like iwae_tf.data.eval_dataset."""
    import tensorflow_datasets as tfds

    if dataset not in TFDS_SOURCES:
        raise InputError(f"no tfds source known for dataset {dataset!r}; use a .npy input")
    name, feature, scale = TFDS_SOURCES[dataset]
    data_dir = data_dir or tfds.core.constants.DATA_DIR
    prepare_hint = (
        f"prepare it with iwae_tf (iwae_tf.data.num_examples({dataset!r}, 'test', data_dir)) "
        "or point --data_dir at a prepared one"
    )
    if not os.path.isdir(os.path.join(data_dir, name)):
        raise InputError(f"tfds dataset {name!r} is not prepared in {data_dir}: {prepare_hint}")
    try:
        # The builder class lives in iwae_tf; a prepared dataset is readable from its files.
        builder = tfds.builder(name, data_dir=data_dir)
        examples = builder.as_dataset(split=split, shuffle_files=False)
    except Exception as e:  # tfds raises many types for unreadable data and bad splits.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"cannot read split {split!r} of tfds dataset {name!r} in {data_dir}: {first_line}"
        ) from None
    images = examples.map(lambda ex: tf.cast(tf.reshape(ex[feature], [-1]), tf.float32) / scale)
    return binarize(images, seed)


def load_input(width: int, metadata: dict) -> np.ndarray:
    source = flags.FLAGS.input
    if source.startswith("tfds:"):
        dataset = flags.FLAGS.dataset or metadata.get("dataset")
        if not dataset:
            raise InputError("the model's metadata names no dataset; pass --dataset")
        x = read_tfds(source[5:], dataset, flags.FLAGS.data_dir, flags.FLAGS.binarize_seed)
    else:
        if not source.endswith(".npy"):
            raise InputError(f"--input must be a .npy file or tfds:SPLIT, got {source!r}")
        try:
            x = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {source}: {e}") from None
        x = check_images(x, width, binary=not flags.FLAGS.binarize)
        if flags.FLAGS.binarize:
            x = binarize(tf.data.Dataset.from_tensor_slices(x), flags.FLAGS.binarize_seed)
    if flags.FLAGS.max_examples:
        x = x[: flags.FLAGS.max_examples]
    if len(x) == 0:
        raise InputError("the input holds no examples")
    return check_images(x, width, binary=True)


def score(signature: tf.types.experimental.ConcreteFunction, x: np.ndarray) -> np.ndarray:
    """[N, 2] (log_px, elbo), the model called on batches of --batch_size examples."""
    # Exports before 0.2 took an int32 k; read each scalar's dtype off the signature.
    specs = signature.structured_input_signature[1]
    k = tf.constant(flags.FLAGS.k, specs["k"].dtype)
    seed = tf.constant(flags.FLAGS.seed, specs["seed"].dtype)
    rows = []
    for start in range(0, len(x), flags.FLAGS.batch_size):
        out = signature(x=tf.constant(x[start : start + flags.FLAGS.batch_size]), k=k, seed=seed)
        rows.append(np.stack([out["log_px"].numpy(), out["elbo"].numpy()], axis=1))
    return np.concatenate(rows)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    path = flags.FLAGS.saved_model
    try:
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise InputError(f"{path} holds no SavedModel (saved_model.pb)")
        metadata_path = os.path.join(path, "assets", "metadata.json")
        metadata = {}
        if os.path.exists(metadata_path):
            with open(metadata_path) as f:
                metadata = json.load(f)
        # The input is checked before the (slower) load when the metadata gives the width.
        width = metadata.get("architecture", {}).get("data_size")
        signature = None
        if width is None:
            signature = tf.saved_model.load(path).signatures["score"]
            width = signature.structured_input_signature[1]["x"].shape[1]
        x = load_input(int(width), metadata)
        if signature is None:
            signature = tf.saved_model.load(path).signatures["score"]
        scores = score(signature, x)
    except InputError as e:
        sys.exit(f"score.py: error: {e}")
    except tf.errors.InvalidArgumentError as e:  # The in-graph checks; the host checks come first.
        lines = [line for line in e.message.splitlines() if "assertion failed" in line]
        sys.exit(f"score.py: error: {(lines or e.message.strip().splitlines())[0].strip()}")
    with open(flags.FLAGS.output, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "log_px", "elbo"])
        for i, (log_px, elbo) in enumerate(scores):
            writer.writerow([i, repr(float(log_px)), repr(float(elbo))])
    log_px = scores[:, 0].astype(np.float64)
    stderr = log_px.std(ddof=1) / math.sqrt(len(log_px)) if len(log_px) > 1 else float("nan")
    if metadata.get("seed_reproducible") is False:  # Format-1 exports of flipout models.
        print("warning: this model uses flipout layers; its scores are not seed-reproducible.")
    print(
        f"mean log p(x) = {log_px.mean():.4f} nats (NLL {-log_px.mean():.4f} +- {stderr:.4f}) "
        f"over {len(log_px)} examples, k={flags.FLAGS.k}, seed={flags.FLAGS.seed} "
        f"-> {flags.FLAGS.output}"
    )


if __name__ == "__main__":
    app.run(main)
