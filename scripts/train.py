r"""Trains a VAE / IWAE, reports its test NLL and exports it as a SavedModel.

Example (the README's main job):

  python scripts/train.py --model=iwae --k=5 --epochs=3 --output_dir=runs/iwae_k5

Every field of `iwae_tf.config.TrainConfig` is a flag of the same name; `--preset` starts from a
published configuration (see `iwae_tf.experiments.presets`) that the given flags override.
"""

from __future__ import annotations

import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from iwae_tf import config as config_lib  # noqa: E402
from iwae_tf import data  # noqa: E402
from iwae_tf.experiments import presets  # noqa: E402
from iwae_tf.train import train_and_evaluate  # noqa: E402

flags.DEFINE_string("output_dir", None, "Where metrics.json and history.csv go.", required=True)
flags.DEFINE_string(
    "preset", None, "A named published configuration; the flags given override its settings."
)
flags.DEFINE_integer(
    "stochastic_layers",
    None,
    "Burda et al.'s architecture: 1 (784-200-200-50) or 2 (784-200-200-100-100-100-50); sets "
    "latent_sizes and hidden_sizes.",
    lower_bound=1,
    upper_bound=2,
)
config_lib.define_flags()


def config_from_flags() -> config_lib.TrainConfig:
    """The preset's config (or the defaults), overridden by the flags given explicitly."""
    given = config_lib.flag_overrides()
    if flags.FLAGS.stochastic_layers:
        given.update(presets.BURDA_ARCHITECTURES[flags.FLAGS.stochastic_layers])
    if flags.FLAGS.preset:
        return presets.apply_preset(flags.FLAGS.preset, **given)
    return config_lib.TrainConfig(**presets.resolve_overrides(given))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags()
        print(
            f"Training {config.model} (k={config.k}) on {config.dataset} {config.train_split}, "
            f"{config.epochs} epochs -> {flags.FLAGS.output_dir}",
            flush=True,
        )
        metrics = train_and_evaluate(config, flags.FLAGS.output_dir)
    except (ValueError, OSError, data.DataUnavailableError, tf.errors.OpError) as e:
        logs.fail(e)
    print(
        f"{metrics['model']} k={metrics['k']} on {metrics['dataset']}: "
        f"test NLL {metrics['test_nll']:.2f} +- {metrics['test_nll_stderr']:.2f} nats "
        f"(eval_k={metrics['eval_k']}), {metrics['train_steps']} steps in "
        f"{metrics['train_seconds']:.0f} s -> {flags.FLAGS.output_dir}, SavedModel "
        f"{metrics.get('export_dir')}"
    )


if __name__ == "__main__":
    app.run(main)
