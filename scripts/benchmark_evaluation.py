r"""Times the K-sample test-NLL estimate: the library's path and the exported `score` signature.

Each (model, mode) runs in a fresh process (`iwae_tf.experiments.evaluation_benchmark`), which
prints its pass times, rows per second, GFLOP/s, the fraction of the matmul rate it reaches and
its peak RSS. Example (what BENCHMARKS.md records, about 20 minutes quiet):

  python scripts/benchmark_evaluation.py --models=iwae_1l,iwae_2l,iwaeu_1l \
      --modes=library,exported --num_examples=10000 --k=5000 --output=eval.json
"""

from __future__ import annotations

import datetime
import os
import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

from absl import app, flags  # noqa: E402

from iwae_tf import files  # noqa: E402
from iwae_tf.experiments import benchmarking  # noqa: E402
from iwae_tf.experiments import evaluation_benchmark as bench  # noqa: E402

flags.DEFINE_list("models", ["iwae_1l"], f"Models, of {sorted(bench.EVALUATION_MODELS)}.")
flags.DEFINE_list("modes", ["library"], f"Paths timed, of {list(bench.MODES)}.")
flags.DEFINE_integer("num_examples", 10_000, "Images scored per pass.", lower_bound=1)
flags.DEFINE_integer("k", 5000, "Importance samples per image.", lower_bound=1)
flags.DEFINE_integer(
    "passes", 1, "Passes per benchmark; the first includes compilation.", lower_bound=1
)
flags.DEFINE_string("output", None, "Optional JSON file for the full report.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    try:
        if f.output:
            files.check_writable(f.output, "--output")
        configs = [
            bench.EvaluationBenchmarkConfig(model, mode, f.num_examples, f.k, f.passes)
            for model in f.models
            for mode in f.modes
        ]
    except (ValueError, OSError) as e:
        logs.fail(e)
    load_start = os.getloadavg()
    results = []
    for config in configs:
        results.append(bench.run_isolated(config))
        r = results[-1]
        print(
            f"{config.model} {config.mode}: first pass {r['first_pass_seconds']:.1f} s, "
            f"warm {r['warm_seconds']:.1f} s, {r['gflops']:.1f} GFLOP/s",
            flush=True,
        )
    report = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "machine": benchmarking.machine_info(),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "results": results,
    }
    print(bench.format_table(results))
    if f.output:
        files.write_json(f.output, report)


if __name__ == "__main__":
    app.run(main)
