r"""Trains a VAE / IWAE and reports its test NLL.

Example (the README's main job):

  python scripts/train.py --model=iwae --k=5 --epochs=3 --output_dir=runs/iwae_k5

Writes metrics.json and history.csv to --output_dir.
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ INFO lines (oneDNN, XLA) bury the progress bar; warnings still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags, logging  # noqa: E402

from iwae_tf import data, model  # noqa: E402
from iwae_tf.train import TrainConfig, train_and_evaluate  # noqa: E402

_DEFAULTS = TrainConfig()

flags.DEFINE_enum("dataset", _DEFAULTS.dataset, sorted(data.DATASETS), "Dataset to train on.")
flags.DEFINE_enum("model", _DEFAULTS.model, sorted(model.VARIANTS), "Model variant.")
flags.DEFINE_integer("k", _DEFAULTS.k, "Importance samples per example in training.", lower_bound=1)
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Passes over the training set.", lower_bound=1)
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Examples per step.", lower_bound=1)
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate.", lower_bound=0)
flags.DEFINE_integer(
    "steps_per_epoch", None, "Optional cap on the training steps of each epoch.", lower_bound=1
)
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Random seed.")
flags.DEFINE_integer(
    "eval_k", _DEFAULTS.eval_k, "Importance samples for the final test NLL.", lower_bound=1
)
flags.DEFINE_string("train_split", _DEFAULTS.train_split, "tfds split to train on.")
flags.DEFINE_string("test_split", _DEFAULTS.test_split, "tfds split to report the NLL on.")
flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds' own).")
flags.DEFINE_string("output_dir", None, "Where metrics.json and history.csv go.", required=True)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = TrainConfig(
        dataset=flags.FLAGS.dataset,
        model=flags.FLAGS.model,
        k=flags.FLAGS.k,
        epochs=flags.FLAGS.epochs,
        batch_size=flags.FLAGS.batch_size,
        learning_rate=flags.FLAGS.learning_rate,
        steps_per_epoch=flags.FLAGS.steps_per_epoch,
        seed=flags.FLAGS.seed,
        eval_k=flags.FLAGS.eval_k,
        train_split=flags.FLAGS.train_split,
        test_split=flags.FLAGS.test_split,
        data_dir=flags.FLAGS.data_dir,
    )
    try:
        metrics = train_and_evaluate(config, flags.FLAGS.output_dir)
    except (ValueError, OSError, data.DataUnavailableError) as e:
        logging.error("%s", e)
        sys.exit(f"train.py: error: {e}")
    print(
        f"{metrics['model']} k={metrics['k']} on {metrics['dataset']}: "
        f"test NLL {metrics['test_nll']:.2f} +- {metrics['test_nll_stderr']:.2f} nats "
        f"(eval_k={metrics['eval_k']}), {metrics['train_steps']} steps in "
        f"{metrics['train_seconds']:.0f} s -> {flags.FLAGS.output_dir}"
    )


if __name__ == "__main__":
    app.run(main)
