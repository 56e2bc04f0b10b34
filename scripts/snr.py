r"""Measures the gradient signal-to-noise ratio of the encoder and decoder against k.

Example (a 4-epoch IWAE of the truncated grid):

  python scripts/snr.py --run_dir=runs/quick_s2_k1000/runs/burda_mnist_1l_iwae_k5 \
      --ks=1,3,10,30,100 --estimators=reparam,dreg --output_dir=runs/snr

Writes snr.csv (one row per estimator, k and network), snr.png (log-log) and prints the fitted
slopes of the median SNR against k. See iwae_tf/experiments/snr.py.
"""

from __future__ import annotations

import os
import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from iwae_tf import bounds, data, files, train  # noqa: E402
from iwae_tf.experiments import snr  # noqa: E402

flags.DEFINE_string("run_dir", None, "A finished training run (scripts/train.py).", required=True)
flags.DEFINE_list("ks", ["1", "3", "10", "30", "100"], "Numbers of importance samples k.")
flags.DEFINE_list("estimators", ["reparam", "dreg"], "Estimators to compare.")
flags.DEFINE_string("objective", "iwae", "The objective whose gradient is measured.")
flags.DEFINE_integer("num_draws", 200, "Draws per (estimator, k).", lower_bound=2)
flags.DEFINE_integer("num_examples", 20, "Test images in the minibatch.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the draws.")
flags.DEFINE_string("output_dir", None, "Where snr.csv, snr.json and snr.png go.", required=True)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    try:
        files.check_creatable_dir(f.output_dir, "--output_dir")
        ks = [int(k) for k in f.ks]
        config, model = train.load_run(f.run_dir)
        batch = train.eval_data(config, config.test_split, f.num_examples)
        x = next(iter(batch))
        rows = snr.snr_table(
            model, x, ks, f.estimators, bounds.Objective(f.objective), f.num_draws, f.seed
        )
    except (ValueError, OSError, data.DataUnavailableError, tf.errors.OpError) as e:
        logs.fail(e)
    os.makedirs(f.output_dir, exist_ok=True)
    snr.write_csv(rows, os.path.join(f.output_dir, "snr.csv"))
    fitted = snr.slopes(rows)
    files.write_json(
        os.path.join(f.output_dir, "snr.json"),
        {"slopes": fitted, "rows": rows, "run_dir": f.run_dir},
    )
    snr.plot(rows, os.path.join(f.output_dir, "snr.png"))
    for row in rows:
        print(
            f"{row['estimator']:8s} k={row['k']:4d} {row['network']:8s} "
            f"median SNR {row['median_snr']:.4f}"
        )
    for estimator, by_network in fitted.items():
        print(
            f"{estimator}: SNR ~ k^{by_network['encoder']:+.2f} (encoder), "
            f"k^{by_network['decoder']:+.2f} (decoder)"
        )


if __name__ == "__main__":
    app.run(main)
