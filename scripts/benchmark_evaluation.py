r"""Times the K-sample test-NLL estimate with and without XLA (`iwae_tf.evaluation`).

Example (what BENCHMARKS.md records):

  python scripts/benchmark_evaluation.py --num_examples=200 --k=5000 --repeats=3
"""

from __future__ import annotations

import json
import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

from absl import app, flags  # noqa: E402

from iwae_tf.experiments import benchmarking  # noqa: E402

flags.DEFINE_integer("num_examples", 200, "Images scored per pass.", lower_bound=1)
flags.DEFINE_integer("k", 5000, "Importance samples per image.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Timed passes per mode (medians).", lower_bound=1)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    report = benchmarking.time_evaluation(
        flags.FLAGS.num_examples, flags.FLAGS.k, flags.FLAGS.repeats
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
