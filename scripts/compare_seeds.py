r"""Paired comparison of presets across training seeds (`iwae_tf.experiments.seeds`).

Example:

  python scripts/compare_seeds.py --reference=burda_mnist_1l_iwae_k5 \
      --output_dirs=runs/estimators_s2_k5000_seed0,runs/estimators_s2_k5000_seed1 \
      --output=docs/results/estimators_k5/comparison.json
"""

from __future__ import annotations

import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

from absl import app, flags  # noqa: E402

from iwae_tf import files  # noqa: E402
from iwae_tf.experiments import seeds  # noqa: E402

flags.DEFINE_list("output_dirs", None, "Grid output directories, one per seed.", required=True)
flags.DEFINE_string("reference", None, "The preset differences are taken from.", required=True)
flags.DEFINE_list("presets", None, "Presets to tabulate (default: every finished one).")
flags.DEFINE_string("output", None, "Where the rows go as JSON (default: none).")
flags.DEFINE_string(
    "curves",
    None,
    "Optional PNG of every run's training and held-out bound per epoch, one colour per preset "
    "and one line per seed (needs matplotlib).",
)
flags.DEFINE_string("held_out", "validation", "What the runs' val_ columns were computed on.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        if flags.FLAGS.output:
            files.check_writable(flags.FLAGS.output, "--output")
        if flags.FLAGS.curves:
            files.check_writable(flags.FLAGS.curves, "--curves")
        runs = seeds.load_runs(flags.FLAGS.output_dirs)
        names = flags.FLAGS.presets or sorted(runs)
        rows = seeds.paired_table(runs, flags.FLAGS.reference, names)
    except (OSError, ValueError) as error:
        logs.fail(error)
    print(seeds.format_markdown(rows, flags.FLAGS.reference), end="")
    if flags.FLAGS.curves:
        from iwae_tf.experiments import plots  # matplotlib only when plotting.

        histories = seeds.history_paths(flags.FLAGS.output_dirs)
        plots.plot_seed_curves(
            {name: histories[name] for name in names},
            flags.FLAGS.curves,
            held_out=flags.FLAGS.held_out,
        )
    if flags.FLAGS.output:
        files.write_json(flags.FLAGS.output, {"reference": flags.FLAGS.reference, "rows": rows})


if __name__ == "__main__":
    app.run(main)
