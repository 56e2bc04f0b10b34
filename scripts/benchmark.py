r"""Benchmarks the training step of every variant: speed, achieved GFLOP/s and peak memory.

Example (what BENCHMARKS.md records):

  python scripts/benchmark.py --output=benchmark.json

Probes the float32 matmul rate, then runs each (variant, size) in a fresh process through the
real `model.fit` path, prints a Markdown table and writes the full report as JSON.
"""

from __future__ import annotations

import shlex
import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

from absl import app, flags, logging  # noqa: E402

from iwae_tf import files  # noqa: E402
from iwae_tf.experiments import benchmarking  # noqa: E402
from iwae_tf.model import VARIANTS  # noqa: E402

_DEFAULTS = benchmarking.BenchmarkConfig()

flags.DEFINE_multi_enum(
    "variants", list(benchmarking.BENCHMARK_VARIANTS), sorted(VARIANTS), "Variants to run."
)
flags.DEFINE_multi_enum(
    "sizes", list(benchmarking.SIZES), list(benchmarking.SIZES), "Sizes to run (see SIZES)."
)
flags.DEFINE_enum(
    "jit_compile", "auto", ["auto", "on", "off"], "XLA; auto chooses as train.make_model does."
)
flags.DEFINE_integer(
    "steps_per_execution", _DEFAULTS.steps_per_execution, "Steps per call.", lower_bound=1
)
flags.DEFINE_integer("repeats", _DEFAULTS.repeats, "Timed executions (medians).", lower_bound=1)
flags.DEFINE_integer(
    "warmup_executions", _DEFAULTS.warmup_executions, "Untimed executions first.", lower_bound=0
)
flags.DEFINE_integer("matmul_repeats", 9, "Repeats of the matmul-rate probe.", lower_bound=1)
flags.DEFINE_string("output", None, "Where the JSON report goes (default: none).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS.output:
        try:
            files.check_writable(flags.FLAGS.output, "--output")
        except OSError as e:
            logs.fail(e)
    jit_compile = {"auto": None, "on": True, "off": False}[flags.FLAGS.jit_compile]
    configs = [
        benchmarking.BenchmarkConfig.for_size(
            variant,
            size,
            jit_compile=jit_compile,
            steps_per_execution=flags.FLAGS.steps_per_execution,
            repeats=flags.FLAGS.repeats,
            warmup_executions=flags.FLAGS.warmup_executions,
        )
        for size in flags.FLAGS.sizes
        for variant in flags.FLAGS.variants
    ]
    report = benchmarking.run_suite(
        configs,
        flags.FLAGS.matmul_repeats,
        command=shlex.join(["python", *sys.argv]),
        log=logging.info,
    )
    print(benchmarking.format_report(report))
    if flags.FLAGS.output:
        files.write_json(flags.FLAGS.output, report)


if __name__ == "__main__":
    app.run(main)
