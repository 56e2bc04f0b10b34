r"""Scores images with an exported IWAE SavedModel: per-example log p(x) to CSV, mean printed.

Examples:

  python scripts/score.py --saved_model=exported/iwaeu --input=images.npy --output=scores.csv
  python scripts/score.py --saved_model=exported/iwaeu --input=tfds:test[:1000] --k=5000

Light on purpose: it imports numpy, TensorFlow, absl, `iwae_tf.serving` and `iwae_tf.files`
(never Keras, TFP or the model code; a tfds input also loads `iwae_tf.data`), and runs the
model through `tf.saved_model.load` alone, so any SavedModel written by `iwae_tf.export` can
be scored without the code that trained it.

Input (--input):
  * a `.npy` file of float images [N, *S], S the model's data shape ([28, 28, 1] for MNIST),
    or the same images flattened to rows [N, D]. Bernoulli models take values 0 or 1: grey
    values are rejected unless --binarize is given, which binarizes row i as
    Bernoulli(intensity) with the stateless seed (--binarize_seed, i). Gaussian models take
    intensities in [0, 1].
  * `tfds:SPLIT`, e.g. `tfds:test[:1000]`: a split of the model's dataset (from the export's
    metadata, or --dataset), read from a prepared tfds data directory (--data_dir) and
    binarized exactly as `iwae_tf.data.eval_dataset` binarizes it (seed 0: the test set's
    fixed binarization that the recorded metrics use), or as intensities for Gaussian models.

Bad input (wrong rank or shape, a non-float dtype, NaN or inf, values outside [0, 1], grey
values without --binarize) stops the script with exit status 1 and an error naming the
problem, in the same words as the SavedModel's own in-graph checks (see iwae_tf/serving.py);
so do a missing, non-.npy, pickled or truncated input file, a missing or damaged SavedModel,
k beyond 2^31 - 1 and an --output that cannot be written (checked before any scoring). The
CSV is written whole or not at all. docs/reliability.md lists every case tried.

Output: a CSV with columns index, log_px (the k-sample estimate log (1/k) sum_j w_j of
log p(x)), elbo; and the mean log p(x), the NLL and its standard error, printed. Scores are
reproducible for the same input, --k, --seed and --batch_size (except for flipout models).
"""

from __future__ import annotations

import csv
import math
import os
import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from iwae_tf import files, serving  # noqa: E402

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


class InputError(ValueError):
    """The input cannot be scored; the message says why."""


def read_tfds(
    split: str, dataset: str, data_dir: str | None, seed: int, binary: bool
) -> np.ndarray:
    """A split of a tfds dataset, binarized (if `binary`) as `iwae_tf.data.eval_dataset` does."""
    from iwae_tf import data  # Only tfds inputs need the data pipeline (and tfds).

    try:
        batches = data.eval_dataset(
            dataset,
            split,
            batch_size=4096,
            seed=seed,
            data_dir=data_dir,
            binarization="dynamic" if binary else "none",
        )
        parts = [batch.numpy() for batch in batches]
    except (ValueError, data.DataUnavailableError) as e:
        raise InputError(f"cannot read split {split!r} of dataset {dataset!r}: {e}") from None
    except Exception as e:  # tfds raises many types for unreadable data and bad splits.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"cannot read split {split!r} of dataset {dataset!r}: {first_line}"
        ) from None
    return np.concatenate(parts) if parts else np.zeros([0, 0], np.float32)


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: str) -> np.ndarray:
    """The array in a .npy file, never unpickled; InputError naming what is wrong otherwise."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(NPY_MAGIC))
            f.seek(0)
            x = np.load(f, allow_pickle=False) if header == NPY_MAGIC else None
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError(
                f"{path} holds an array of Python objects, which only pickle can load (refused: "
                "unsafe); save a float array"
            ) from None
        raise InputError(f"{path} is truncated or corrupt ({e}); write it again") from None
    except EOFError:
        raise InputError(f"{path} is truncated; write it again") from None
    if x is None:
        raise InputError(
            f"{path} is not a .npy file (it lacks the NUMPY header); write the images with "
            "numpy.save"
        )
    return x


def load_input(shape: tuple[int, ...], binary: bool, metadata: dict) -> np.ndarray:
    source = flags.FLAGS.input
    if source.startswith("tfds:"):
        dataset = flags.FLAGS.dataset or metadata.get("dataset")
        if not dataset:
            raise InputError("the model's metadata names no dataset; pass --dataset")
        x = read_tfds(source[5:], dataset, flags.FLAGS.data_dir, flags.FLAGS.binarize_seed, binary)
    else:
        if not source.endswith(".npy"):
            raise InputError(f"--input must be a .npy file or tfds:SPLIT, got {source!r}")
        x = read_npy(source)
        if flags.FLAGS.binarize and not binary:
            raise InputError("--binarize is for Bernoulli models; this model takes intensities")
        x = _checked(x, shape, binary=binary and not flags.FLAGS.binarize)
        if flags.FLAGS.binarize:
            x = serving.binarize_rows(x, flags.FLAGS.binarize_seed)
    if flags.FLAGS.max_examples:
        x = x[: flags.FLAGS.max_examples]
    if len(x) == 0:
        raise InputError("the input holds no examples")
    return _checked(x, shape, binary=binary)


def _checked(x: np.ndarray, shape: tuple[int, ...], binary: bool) -> np.ndarray:
    try:
        return serving.check_images(x, shape, binary)
    except ValueError as e:
        raise InputError(str(e)) from None


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
        serving.check_count("--k", flags.FLAGS.k)
        files.check_writable(flags.FLAGS.output, "--output")
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise InputError(f"{path} holds no SavedModel (saved_model.pb)")
        metadata = {}
        if os.path.exists(os.path.join(path, "assets", serving.METADATA_FILE)):
            metadata = serving.read_metadata(path)
        # The input is checked before the (slower) load when the metadata gives the shape.
        spec = serving.input_spec(metadata)
        signature = None
        if spec is None:
            signature = serving.load_saved_model(path).signatures["score"]
            spec = (tuple(signature.structured_input_signature[1]["x"].shape[1:]), True)
        x = load_input(*spec, metadata)
        if signature is None:
            signature = serving.load_saved_model(path).signatures["score"]
        scores = score(signature, x)
    # OSError: an unreadable model; OpError: the in-graph checks (the host checks come first).
    except (ValueError, OSError, tf.errors.OpError) as e:  # InputError is a ValueError.
        logs.fail(e)
    with files.atomic_write(flags.FLAGS.output, newline="") as f:
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
