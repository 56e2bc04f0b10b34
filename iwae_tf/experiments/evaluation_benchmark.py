"""Speed of the K-sample test-NLL estimate: the library's path and the exported `score`.

`scripts/benchmark_evaluation.py` is the command line over this module. For a model
(`EVALUATION_MODELS`), N images and K importance samples, `run_evaluation_benchmark` times

* `library`: `evaluation.estimate_log_likelihood` (XLA, as `scripts/evaluate.py` and the
  training job run it) over N images in batches of `batch_size`; or
* `exported`: the SavedModel's `score` signature, exported from the same model and loaded back
  with `tf.saved_model.load`, called on the same batches (what `scripts/score.py` does).

The first pass includes tracing and compilation (what a user waits for); later passes are warm.
The model is a seeded initialization and the images seeded random binary ones: the arithmetic of
a real evaluation, whose speed does not depend on the trained weights.

Figures: `rows_per_second` (examples x K per second), the achieved GFLOP/s of the forward
matmuls (`benchmarking.dense_layer_specs` at N examples and K samples, the training benchmark's
convention), and its fraction of the float32 matmul rate measured in the same process right
after, at the training benchmark's step shape and at the evaluation's own largest product
(`[rows per call, 200] x [200, 784]`), plus the process' peak RSS. `run_isolated` runs each
benchmark in a fresh process, so that peak memory is its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from iwae_tf import evaluation, export
from iwae_tf.experiments import benchmarking, presets
from iwae_tf.model import ImportanceWeightedAutoencoder, build_model

IMAGE_SHAPE = (28, 28, 1)
"""MNIST's shape, as the data pipeline feeds it."""

EVALUATION_MODELS: dict[str, dict[str, Any]] = {
    "iwae_1l": {"variant": "iwae", **presets.BURDA_ARCHITECTURES[1]},
    "iwae_2l": {"variant": "iwae", **presets.BURDA_ARCHITECTURES[2]},
    "iwaeu_1l": {"variant": "iwaeu", **presets.BURDA_ARCHITECTURES[1]},
}
"""Burda et al.'s 1- and 2-stochastic-layer networks, and the 1-layer net with uncertain
weights (local reparameterization in both networks)."""

MODES = ("library", "exported")

EVAL_MATMUL_SHAPE = (evaluation.COMPILED_ROWS_PER_CALL, 200, 784)
"""The evaluation's largest product: a call's rows through the 1-layer decoder's last layer."""


@dataclasses.dataclass(frozen=True)
class EvaluationBenchmarkConfig:
    """One benchmarked evaluation.

    Attributes:
      model: A key of `EVALUATION_MODELS`.
      mode: "library" or "exported" (see the module docstring).
      num_examples: N, images scored per pass.
      num_samples: K, importance samples per image.
      passes: Passes over the N images; the first includes tracing and compilation.
      batch_size: Images per call (the training config's `eval_batch_size`).
      seed: Seed of the initialization, the images and the draws.
    """

    model: str = "iwae_1l"
    mode: str = "library"
    num_examples: int = 10_000
    num_samples: int = 5000
    passes: int = 1
    batch_size: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in EVALUATION_MODELS:
            raise ValueError(f"model must be one of {sorted(EVALUATION_MODELS)}, got {self.model}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode}")
        for name in ("num_examples", "num_samples", "passes", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_json(self) -> str:
        """The config as a JSON object."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EvaluationBenchmarkConfig:
        """The inverse of `to_json`."""
        return cls(**json.loads(text))


def _images(config: EvaluationBenchmarkConfig) -> np.ndarray:
    gen = np.random.default_rng(config.seed)
    return (gen.random((config.num_examples, *IMAGE_SHAPE)) < 0.2).astype(np.float32)


def _library_pass(
    model: ImportanceWeightedAutoencoder,
    dataset: tf.data.Dataset,
    config: EvaluationBenchmarkConfig,
) -> float:
    estimates = evaluation.estimate_log_likelihood(
        model, dataset, config.num_samples, seed=config.seed
    )
    return estimates.nll


def _exported_pass(score: Any, images: np.ndarray, config: EvaluationBenchmarkConfig) -> float:
    k = tf.constant(config.num_samples, tf.int64)
    seed = tf.constant(config.seed, tf.int64)
    log_px = [
        score(x=tf.constant(images[i : i + config.batch_size]), k=k, seed=seed)["log_px"].numpy()
        for i in range(0, len(images), config.batch_size)
    ]
    return float(-np.mean(np.concatenate(log_px)))


def run_evaluation_benchmark(config: EvaluationBenchmarkConfig) -> dict[str, Any]:
    """Times `config.passes` passes of one evaluation in this process, then probes matmuls.

    Returns:
      A JSON-able dict: the config, `pass_seconds` (every pass, the first with compilation),
      `first_pass_seconds`, `warm_seconds` (median of the later passes, or the first if there
      is one pass), `rows_per_second`, `forward_flops` per pass, `gflops`, the two matmul
      probes and the fractions of them achieved, the NLL of the random model (a check that
      the passes agree), `rss_before_model_mib`, `peak_rss_mib` and the load averages.
    """
    load_before = os.getloadavg()
    keras.utils.set_random_seed(config.seed)
    images = _images(config)
    rss_before_model = benchmarking.peak_rss_mib()
    model = build_model(
        num_importance_samples=5, data_shape=IMAGE_SHAPE, **EVALUATION_MODELS[config.model]
    )
    model(tf.zeros([1, *IMAGE_SHAPE]))
    specs = benchmarking.dense_layer_specs(model, config.num_examples, config.num_samples)
    flops = sum(s.forward_flops for s in specs)
    with tempfile.TemporaryDirectory() as directory:
        if config.mode == "exported":
            export.export_saved_model(model, os.path.join(directory, "model"))
            score = tf.saved_model.load(os.path.join(directory, "model")).signatures["score"]

            def one_pass() -> float:
                return _exported_pass(score, images, config)

        else:
            dataset = tf.data.Dataset.from_tensor_slices(images).batch(config.batch_size).cache()

            def one_pass() -> float:
                return _library_pass(model, dataset, config)

        seconds, nlls = [], []
        for _ in range(config.passes):
            start = time.perf_counter()
            nlls.append(one_pass())
            seconds.append(time.perf_counter() - start)
    peak_rss = benchmarking.peak_rss_mib()
    load_after = os.getloadavg()
    warm = float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
    gflops = flops / warm / 1e9
    step_probe = benchmarking.matmul_rate(
        *benchmarking.MATMUL_SHAPES[benchmarking.DENOMINATOR_SHAPE]
    )
    eval_probe = benchmarking.matmul_rate(*EVAL_MATMUL_SHAPE)
    return {
        "config": dataclasses.asdict(config),
        "pass_seconds": seconds,
        "first_pass_seconds": seconds[0],
        "warm_seconds": warm,
        "rows_per_second": config.num_examples * config.num_samples / warm,
        "forward_flops": flops,
        "gflops": gflops,
        "matmul_step": step_probe._asdict(),
        "matmul_eval": eval_probe._asdict(),
        "fraction_of_step_matmul_rate": gflops / step_probe.gflops,
        "fraction_of_eval_matmul_rate": gflops / eval_probe.gflops,
        "nll": nlls,
        "rss_before_model_mib": rss_before_model,
        "peak_rss_mib": peak_rss,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
    }


def run_isolated(config: EvaluationBenchmarkConfig, timeout: float = 3600.0) -> dict[str, Any]:
    """Runs `run_evaluation_benchmark(config)` in a fresh Python process.

    Raises:
      RuntimeError: If the child fails; the message holds the end of its stderr.
    """
    what = f"evaluation benchmark of {config.model} ({config.mode})"
    return benchmarking.run_module(
        "iwae_tf.experiments.evaluation_benchmark", config.to_json(), what, timeout
    )


def format_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of evaluation benchmark results."""
    lines = [
        "| model | mode | N x K | first pass s | warm pass s | rows/s | GFLOP/s "
        "| of step matmul | of eval matmul | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r["config"]
        lines.append(
            f"| {c['model']} | {c['mode']} | {c['num_examples']:,} x {c['num_samples']:,} "
            f"| {r['first_pass_seconds']:.1f} | {r['warm_seconds']:.1f} "
            f"| {r['rows_per_second']:,.0f} | {r['gflops']:.1f} "
            f"| {r['fraction_of_step_matmul_rate']:.0%} | {r['fraction_of_eval_matmul_rate']:.0%} "
            f"| {r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(run_evaluation_benchmark(EvaluationBenchmarkConfig.from_json(sys.argv[1]))))
