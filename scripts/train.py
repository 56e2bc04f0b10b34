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

from iwae_tf import data, layers, model, schedules  # noqa: E402
from iwae_tf.experiments import presets  # noqa: E402
from iwae_tf.train import STRATEGIES, TrainConfig, train_and_evaluate  # noqa: E402

_DEFAULTS = TrainConfig()

flags.DEFINE_string(
    "preset",
    None,
    "A named published configuration (see iwae_tf.experiments.presets); flags given "
    "explicitly on the command line override its settings.",
)
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
flags.DEFINE_enum(
    "uncertain_layer_kind",
    _DEFAULTS.uncertain_layer_kind,
    [kind for kind in layers.LAYER_KINDS if layers.is_uncertain(kind)],
    "TFP layer of the uncertain networks of iwaeu* models.",
)
flags.DEFINE_float(
    "init_scale", _DEFAULTS.init_scale, "Initial posterior std of uncertain weights.", lower_bound=0
)
flags.DEFINE_float(
    "kl_weight",
    _DEFAULTS.kl_weight,
    "Weight of KL(q(W)||p(W)) / N_train in the loss.",
    lower_bound=0,
)
flags.DEFINE_float(
    "prior_scale", _DEFAULTS.prior_scale, "Std of the N(0, s^2) weight prior.", lower_bound=0
)
flags.DEFINE_enum(
    "schedule",
    _DEFAULTS.schedule,
    list(schedules.SCHEDULES),
    "Learning-rate schedule; burda: 3^i epochs at learning_rate * 10^(-i/7), i < --stages.",
)
flags.DEFINE_integer(
    "stages",
    _DEFAULTS.stages,
    "Stages of --schedule=burda (8: the paper's 3280 epochs).",
    lower_bound=1,
)
flags.DEFINE_enum(
    "strategy",
    _DEFAULTS.strategy,
    list(STRATEGIES),
    "tf.distribute strategy; multi_worker reads the cluster from TF_CONFIG (see BUILD.md).",
)
flags.DEFINE_boolean(
    "jit_compile", None, "XLA-compile the train step (default: where it measured faster)."
)
flags.DEFINE_integer(
    "steps_per_execution",
    _DEFAULTS.steps_per_execution,
    "Train steps per tf.function call.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "stochastic_layers",
    1,
    "Stochastic layers of Burda et al.'s architecture: 1 "
    "(784-200-200-50) or 2 (784-200-200-100-100-100-50).",
    lower_bound=1,
    upper_bound=2,
)
flags.DEFINE_string(
    "export_dir", None, "Where the trained SavedModel goes (default: exported/<output dir name>)."
)
flags.DEFINE_string("train_split", _DEFAULTS.train_split, "tfds split to train on.")
flags.DEFINE_string("test_split", _DEFAULTS.test_split, "tfds split to report the NLL on.")
flags.DEFINE_string("data_dir", None, "tfds data directory (default: tfds' own).")
flags.DEFINE_string("output_dir", None, "Where metrics.json and history.csv go.", required=True)

# Flags that set the TrainConfig field of the same name.
_CONFIG_FLAGS = (
    "dataset", "model", "k", "epochs", "batch_size", "learning_rate", "steps_per_epoch", "seed",
    "eval_k", "uncertain_layer_kind", "init_scale", "kl_weight", "prior_scale", "train_split",
    "test_split", "data_dir", "schedule", "stages", "strategy", "jit_compile",
    "steps_per_execution", "export_dir",
)  # fmt: skip


def config_from_flags() -> TrainConfig:
    """The preset's config (or the defaults), overridden by the flags given explicitly."""
    given = {name: flags.FLAGS[name].value for name in _CONFIG_FLAGS if flags.FLAGS[name].present}
    if flags.FLAGS["stochastic_layers"].present:
        given.update(presets.BURDA_ARCHITECTURES[flags.FLAGS.stochastic_layers])
    if flags.FLAGS.preset:
        return presets.apply_preset(flags.FLAGS.preset, **given)
    return TrainConfig(**presets.resolve_overrides(given))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags()
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
