r"""Reproduces a grid of published results under a stated budget.

Examples:

  python scripts/reproduce.py --grid=quick --stages=3 --output_dir=runs/quick
  python scripts/reproduce.py --grid=burda_table1_mnist_1l --stages=8 --output_dir=runs/t1
  python scripts/reproduce.py --presets=iwae_seed_mnist,iwaeu_seed_mnist --epochs=100 \
      --output_dir=runs/uw
  python scripts/reproduce.py --list

Trains every preset of the grid (skipping runs already finished in --output_dir, so an
interrupted grid resumes), estimates train and test NLL with --eval_k importance samples and
writes results.csv, results.md and plots/ to --output_dir. See iwae_tf/experiments/reproduce.py.
"""

from __future__ import annotations

import os
import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

from absl import app, flags  # noqa: E402

from iwae_tf import config as config_lib  # noqa: E402
from iwae_tf import data, files  # noqa: E402
from iwae_tf.experiments import presets, reproduce  # noqa: E402

flags.DEFINE_string("grid", None, "Named grid of presets (see --list).")
flags.DEFINE_list("presets", None, "Comma-separated preset names, instead of --grid.")
flags.DEFINE_integer(
    "stages", None, "Budget: stages of Burda et al.'s schedule (8 = 3280 epochs).", lower_bound=1
)
flags.DEFINE_integer(
    "epochs", None, "Budget: epochs at each preset's base learning rate, constant.", lower_bound=1
)
flags.DEFINE_integer(
    "steps_per_epoch", None, "Optional cap on the steps of each epoch.", lower_bound=1
)
flags.DEFINE_integer(
    "eval_k", reproduce.DEFAULT_EVAL_K, "Importance samples of the NLL estimates.", lower_bound=1
)
flags.DEFINE_string(
    "train_eval_split",
    reproduce.DEFAULT_TRAIN_EVAL_SPLIT,
    "Training examples the train-set NLL is estimated on (for a statically binarized run, as "
    "many from the start of its training split, in its own binarization).",
)
flags.DEFINE_string("output_dir", None, "Where runs, results and plots go.")
flags.DEFINE_bool("plots", True, "Draw the PNG plots (needs matplotlib).")
flags.DEFINE_bool("list", False, "List the presets and grids, and exit.")
config_lib.define_flags(reproduce.OVERRIDABLE_FIELDS, defaults=False)


def _listing() -> str:
    lines = ["Grids:"]
    lines += [f"  {name}: {', '.join(members)}" for name, members in presets.GRIDS.items()]
    lines += ["Presets:"] + [f"  {name}" for name in presets.PRESETS]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    if f.list:
        print(_listing())
        return
    if (f.grid is None) == (not f.presets):
        raise app.UsageError("give exactly one of --grid and --presets")
    if (f.stages is None) == (f.epochs is None):
        raise app.UsageError("state a budget: exactly one of --stages and --epochs")
    if not f.output_dir:
        raise app.UsageError("--output_dir is required")
    overrides = config_lib.flag_overrides(reproduce.OVERRIDABLE_FIELDS)
    try:
        files.check_creatable_dir(f.output_dir, "--output_dir")
        names = presets.grid_presets(f.grid) if f.grid else list(f.presets)
        rows = reproduce.run_grid(
            names,
            f.output_dir,
            reproduce.Budget(f.stages, f.epochs, f.steps_per_epoch),
            eval_k=f.eval_k,
            train_eval_split=f.train_eval_split,
            overrides=overrides,
            make_plots=f.plots,
        )
    except (ValueError, OSError, ImportError, data.DataUnavailableError) as e:
        logs.fail(e)
    with open(os.path.join(f.output_dir, reproduce.RESULTS_MD)) as md:
        print(md.read())
    failed = [row["preset"] for row in rows if row["status"] != "ok"]
    if failed:
        sys.exit(f"reproduce.py: {len(failed)} run(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
