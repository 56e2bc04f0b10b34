"""Speed of the training step: FLOP counts, a matmul-rate probe, step timing and peak memory.

`scripts/benchmark.py` is the command line over this module. For a model variant and a size
(batch, k, architecture) `run_benchmark` times the real `model.fit` path of `iwae_tf.train`
(`build_model`, Adam with epsilon 1e-4, `jit_compile` and `steps_per_execution` chosen as
`train.make_model` chooses them) on an in-memory tf.data pipeline of random intensities that are
shuffled and dynamically binarized inside the graph, like the real training input. It reports
steps per second, importance-weighted rows (examples x k) per second, the achieved GFLOP/s of the
networks' matmuls and the process' peak resident memory. `run_isolated` runs one benchmark in a
fresh Python process, so that peak memory belongs to one configuration.

FLOP convention (`dense_layer_specs`, `flop_count`), applied identically to every variant:

* Only dense-layer matmuls count; elementwise work (tanh, exp, sqrt, the noise, log-densities,
  Adam's update) is left out, so the achieved rate is a lower bound on the work done.
* A matmul of [rows, n_in] by [n_in, n_out] costs 2 * rows * n_in * n_out FLOPs forward.
* Backward costs 2x forward per matmul (the gradients with respect to the weights and to the
  inputs), except for the layer that reads the data x, whose input needs no gradient (1x).
* Rows: a deterministic encoder encodes each example once (`batch` rows in its first stochastic
  block); an encoder with per-row weight draws sees x tiled k times (k * batch rows), unless it
  computes its first layer's matmuls once per example and repeats their rows
  (`shares_first_moments`); every later block and every decoder layer sees k * batch rows.
* Matmuls per layer: 1 for a deterministic layer; 2 for local reparameterization (mean x @ mu
  and variance x^2 @ sigma^2) and for flipout (x @ mu and the sign-flipped perturbation); 1 for
  reparameterization (one sampled W per call).

With the paper's 784-200-200-50 networks at batch 20 and k = 50 this gives 1.26 GFLOP per IWAE
step and 4.46 GFLOP per IWAEU step (3.5x: IWAEU encodes k copies of x and doubles every matmul;
4x forward, less backward, where the first layer has no input gradient).

The matmul rate (`matmul_rate`) is the median GFLOP/s of a warm float32 `tf.matmul` under
`tf.function` (oneDNN, no XLA). Every benchmark process re-measures it at the step-shaped
`MATMUL_SHAPES["step"]` right after its timing, and also reports rates per CPU second, since on a
shared machine both numerator and denominator depend on how much of the CPU the process gets.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from iwae_tf import layers as dense_layers
from iwae_tf import rng, schedules
from iwae_tf.experiments import presets
from iwae_tf.model import ImportanceWeightedAutoencoder, build_model

MATMULS_PER_KIND: dict[str, int] = {
    "deterministic": 1,
    "local_reparameterization": 2,
    "flipout": 2,
    "reparameterization": 1,
}
"""Matmuls of one forward pass of a dense layer, by `iwae_tf.layers` kind."""

PAPER_ARCHITECTURE: dict[str, Any] = {"latent_sizes": (50,), "hidden_sizes": ((200, 200),)}
"""Burda et al.'s 1-stochastic-layer networks, 784-200-200-50 (the package default)."""

SEED_PRESET = "iwaeu_seed_mnist"
"""The preset of the uncertain-weights paper (`experiments.presets`): 1 hidden layer of 400 units,
40 latents, batch 20, k = 25."""

PIXELS = 784
"""Pixels per synthetic image: the benchmarks time MNIST-sized MLPs on flat rows."""


class Size(NamedTuple):
    """A benchmarked problem size.

    Attributes:
      batch_size: Examples per training step.
      k: Importance samples per example.
      latent_sizes: Sizes of the stochastic layers, bottom first.
      hidden_sizes: Hidden layer sizes of each stochastic layer, bottom first.
    """

    batch_size: int
    k: int
    latent_sizes: tuple[int, ...]
    hidden_sizes: tuple[tuple[int, ...], ...]


def _preset_size(name: str) -> Size:
    overrides = presets.preset_overrides(name)
    return Size(
        *(
            tuple(overrides[field]) if "sizes" in field else overrides[field]
            for field in Size._fields
        )
    )


SIZES: dict[str, Size] = {
    "b20_k50": Size(20, 50, **PAPER_ARCHITECTURE),
    "b100_k5": Size(100, 5, **PAPER_ARCHITECTURE),
    "seed_k25": _preset_size(SEED_PRESET),
}
"""The issue's sizes: batch 20 with k=50, batch 100 with k=5 (both the paper's networks) and
the seed preset `SEED_PRESET` (1 hidden layer of 400, 40 latents, batch 20, k=25)."""

BENCHMARK_VARIANTS: tuple[str, ...] = ("vae", "iwae", "iwaeu", "iwaeu_rec")
"""The variants benchmarked by default."""

MATMUL_SHAPES: dict[str, tuple[int, int, int]] = {
    "step": (1000, 784, 200),
    "square": (2048, 2048, 2048),
}
"""(m, n_in, n_out) of the matmul-rate probe: the largest matmul of an IWAE step at batch 20,
k = 50 (the decoder's 1000 rows against a 784 x 200 kernel), and a large square one near peak."""

DENOMINATOR_SHAPE = "step"
"""The probe shape whose rate is the denominator of `fraction_of_matmul_rate`: the step-shaped
one, as the step's own matmuls are that size, not the large square one's. Every benchmark
process probes it right after its timing, so that numerator and denominator see the same load
on a shared machine."""


class DenseSpec(NamedTuple):
    """One dense layer of a built model, as it runs in one training step.

    Attributes:
      network: "encoder" or "decoder".
      name: Layer path, e.g. "q_h1/hidden_0".
      kind: The `iwae_tf.layers` kind of the layer.
      input_size: n_in of the kernel.
      units: n_out of the kernel.
      rows: Rows the layer processes per step.
      matmuls: Matmuls per forward pass (see `MATMULS_PER_KIND`).
      input_gradient: Whether backprop computes the gradient with respect to the input (False
        only for the layer reading the data x).
    """

    network: str
    name: str
    kind: str
    input_size: int
    units: int
    rows: int
    matmuls: int
    input_gradient: bool

    @property
    def forward_flops(self) -> int:
        """2 * rows * n_in * n_out per matmul."""
        return 2 * self.rows * self.input_size * self.units * self.matmuls

    @property
    def backward_flops(self) -> int:
        """Weight gradient, plus the input gradient when needed, each as costly as forward."""
        return self.forward_flops * (2 if self.input_gradient else 1)


class FlopCount(NamedTuple):
    """Matmul FLOPs of one training step (see the module docstring for the convention)."""

    forward: int
    backward: int

    @property
    def total(self) -> int:
        """forward + backward."""
        return self.forward + self.backward


def _kernel_shape(layer: keras.layers.Layer) -> tuple[int, int]:
    if isinstance(layer, keras.layers.Dense):
        kernel = layer.kernel
    else:
        kernel, _ = dense_layers.kernel_posterior_variables(layer)
    n_in, n_out = kernel.shape
    return int(n_in), int(n_out)


def _block_layers(block: keras.layers.Layer) -> list[keras.layers.Layer]:
    return [*block.hidden, block.head]


def dense_layer_specs(
    model: ImportanceWeightedAutoencoder, batch_size: int, k: int
) -> list[DenseSpec]:
    """Lists the dense layers of a built model with the rows and matmuls of one step.

    Args:
      model: A built model (call it once, e.g. on `tf.zeros([1, data_size])`).
      batch_size: Examples per step.
      k: Importance samples per example.

    Returns:
      The encoder's layers (bottom block first), then the decoder's (output network first).

    Raises:
      ValueError: If the model is not built.
    """
    if not model.built:
        raise ValueError("Build the model first, e.g. model(tf.zeros([1, data_size])).")
    specs = []
    encoder, decoder = model.encoder, model.decoder
    kind = encoder.config.layer_kind
    # An encoder that repeats its first layer's rows itself (`shares_first_moments`, if the
    # networks have it) computes that layer's matmuls once per example, like a deterministic one.
    shares_first = getattr(encoder, "shares_first_moments", False)
    for b, block in enumerate(encoder.blocks):
        for i, layer in enumerate(_block_layers(block)):
            # Only a deterministic (or per-call-draw) first block encodes each example once.
            once = b == 0 and (not encoder.tile_inputs or (i == 0 and shares_first))
            rows = batch_size if once else k * batch_size
            n_in, n_out = _kernel_shape(layer)
            specs.append(
                DenseSpec(
                    "encoder",
                    f"{block.name}/{layer.name}",
                    kind,
                    n_in,
                    n_out,
                    rows,
                    MATMULS_PER_KIND[kind],
                    input_gradient=not (b == 0 and i == 0),
                )
            )
    kind = decoder.config.layer_kind
    for block in [decoder.output_net, *decoder.blocks]:
        for layer in _block_layers(block):
            n_in, n_out = _kernel_shape(layer)
            specs.append(
                DenseSpec(
                    "decoder",
                    f"{block.name}/{layer.name}",
                    kind,
                    n_in,
                    n_out,
                    k * batch_size,
                    MATMULS_PER_KIND[kind],
                    input_gradient=True,
                )
            )
    return specs


def flop_count(model: ImportanceWeightedAutoencoder, batch_size: int, k: int) -> FlopCount:
    """Matmul FLOPs of one training step of `model` (forward and backward).

    Args:
      model: A built model.
      batch_size: Examples per step.
      k: Importance samples per example.

    Returns:
      The step's forward and backward matmul FLOPs.
    """
    specs = dense_layer_specs(model, batch_size, k)
    return FlopCount(
        forward=sum(s.forward_flops for s in specs),
        backward=sum(s.backward_flops for s in specs),
    )


class MatmulRate(NamedTuple):
    """Measured float32 matmul throughput at one shape.

    Attributes:
      shape: (m, n_in, n_out): [m, n_in] @ [n_in, n_out].
      gflops: Median GFLOP/s (wall clock) over the repeats.
      samples: GFLOP/s of every repeat.
      gflops_per_cpu_second: Median GFLOP per second of this process' CPU time (all threads),
        a figure less sensitive than the wall-clock rate to other processes on the machine.
    """

    shape: tuple[int, int, int]
    gflops: float
    samples: tuple[float, ...]
    gflops_per_cpu_second: float


def matmul_flops(m: int, n_in: int, n_out: int) -> int:
    """FLOPs of [m, n_in] @ [n_in, n_out]: one multiply and one add per term, 2 m n_in n_out."""
    return 2 * m * n_in * n_out


def matmul_rate(
    m: int,
    n_in: int,
    n_out: int,
    repeats: int = 9,
    seconds_per_repeat: float = 0.1,
    jit_compile: bool = False,
) -> MatmulRate:
    """Measures the float32 `tf.matmul` rate at one shape, warm, under `tf.function`.

    Each repeat times a Python loop of calls lasting about `seconds_per_repeat`, ending with a
    device sync; the result is the median over repeats, in wall-clock and in CPU time.

    Args:
      m: Rows of the left operand.
      n_in: Inner dimension.
      n_out: Columns of the right operand.
      repeats: Timed repeats.
      seconds_per_repeat: Target duration of one repeat.
      jit_compile: Whether to XLA-compile the matmul.

    Returns:
      The median GFLOP/s and the samples.
    """
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((m, n_in), dtype=np.float32))
    b = tf.constant(rng.standard_normal((n_in, n_out), dtype=np.float32))
    matmul = tf.function(tf.matmul, jit_compile=jit_compile)
    matmul(a, b).numpy()  # Trace, compile, warm the caches.
    start = time.perf_counter()
    matmul(a, b).numpy()
    calls = max(1, int(seconds_per_repeat / max(time.perf_counter() - start, 1e-6)))
    flops = matmul_flops(m, n_in, n_out) * calls
    samples, cpu_samples = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(calls):
            out = matmul(a, b)
        out.numpy()
        samples.append(flops / (time.perf_counter() - start) / 1e9)
        cpu_samples.append(flops / max(time.process_time() - cpu_start, 1e-9) / 1e9)
    return MatmulRate(
        (m, n_in, n_out),
        statistics.median(samples),
        tuple(samples),
        statistics.median(cpu_samples),
    )


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmarked configuration.

    Attributes:
      variant: One of `iwae_tf.model.VARIANTS`.
      size: Name of the size, a key of `SIZES` or any label.
      batch_size: Examples per step.
      k: Importance samples per example.
      latent_sizes: Sizes of the stochastic layers.
      hidden_sizes: Hidden sizes of each stochastic layer.
      jit_compile: XLA-compile the step; None chooses as `iwae_tf.train.make_model` does
        without a tf.distribute strategy (on for every variant).
      steps_per_execution: Train steps per tf.function call (`TrainConfig` uses 100).
      warmup_executions: Untimed executions first (tracing, XLA compilation, shuffle buffer).
      repeats: Timed executions of `steps_per_execution` steps each; results are medians.
      matmul_repeats: Repeats of the matmul-rate probe run after the timing, in the same process.
      num_examples: Size of the in-memory synthetic training set.
      seed: Seed of the weights, the data and the pipeline.
    """

    variant: str = "iwae"
    size: str = "b20_k50"
    batch_size: int = 20
    k: int = 50
    latent_sizes: tuple[int, ...] = (50,)
    hidden_sizes: tuple[tuple[int, ...], ...] = ((200, 200),)
    jit_compile: bool | None = None
    steps_per_execution: int = 100
    warmup_executions: int = 1
    repeats: int = 5
    matmul_repeats: int = 7
    num_examples: int = 10_000
    seed: int = 0

    @classmethod
    def for_size(cls, variant: str, size: str, **overrides: Any) -> BenchmarkConfig:
        """The config of `variant` at the named size of `SIZES`, with optional overrides."""
        values = {"variant": variant, "size": size, **SIZES[size]._asdict()}
        return cls(**{**values, **overrides})

    def resolved_jit_compile(self) -> bool:
        """`jit_compile`, or `iwae_tf.train.make_model`'s default when it is None."""
        return True if self.jit_compile is None else self.jit_compile

    def to_json(self) -> str:
        """The config as JSON (tuples become lists)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchmarkConfig:
        """Inverse of `to_json`."""
        values = json.loads(text)
        values["latent_sizes"] = tuple(values["latent_sizes"])
        values["hidden_sizes"] = tuple(tuple(h) for h in values["hidden_sizes"])
        return cls(**values)


def synthetic_dataset(
    num_examples: int, batch_size: int, seed: int, data_size: int = PIXELS
) -> tf.data.Dataset:
    """Random intensities, cached in memory, shuffled and dynamically binarized in the graph.

    The same stages as `iwae_tf.data.train_dataset` (cache, reshuffle each pass, batch with
    static shapes, Bernoulli binarization per batch, prefetch), repeated without end and without
    file IO.

    Args:
      num_examples: Images in memory.
      batch_size: Examples per batch.
      seed: Seed of the intensities, the shuffling and the binarization.
      data_size: Pixels per image.

    Returns:
      An infinite dataset of float32 {0, 1} batches [batch_size, data_size].
    """
    intensities = np.random.default_rng(seed).random((num_examples, data_size), dtype=np.float32)
    images = tf.data.Dataset.from_tensor_slices(intensities).cache()
    images = images.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True).repeat()
    batches = images.batch(batch_size, drop_remainder=True)
    base = rng.from_int(seed, rng.TRAIN_STREAM)
    binary = batches.enumerate().map(
        lambda j, x: rng.bernoulli(x, rng.fold_in(base, j)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return binary.prefetch(tf.data.AUTOTUNE)


def make_benchmark_model(config: BenchmarkConfig) -> ImportanceWeightedAutoencoder:
    """Builds and compiles the model as `iwae_tf.train.make_model` does (constant learning
    rate 1e-3, output bias 0)."""
    model = build_model(
        config.variant,
        num_importance_samples=config.k,
        latent_sizes=config.latent_sizes,
        hidden_sizes=config.hidden_sizes,
    )
    model(tf.zeros([1, PIXELS]))
    model.compile(
        optimizer=schedules.make_optimizer(1e-3),
        jit_compile=config.resolved_jit_compile(),
        steps_per_execution=config.steps_per_execution,
    )
    return model


class _ExecutionTimer(keras.callbacks.Callback):
    """Wall-clock time at the end of every execution (of steps_per_execution steps).

    Without `_supports_tf_logs`, Keras converts the logs to numpy before calling back, so each
    timestamp is taken after that execution's results have been computed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.ends, self.cpu_ends = [time.perf_counter()], [time.process_time()]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_benchmark(config: BenchmarkConfig) -> dict[str, Any]:
    """Times `model.fit` on one configuration in this process, then probes the matmul rate.

    Args:
      config: What to run.

    Returns:
      A JSON-able dict: the config; `seconds_per_execution` and `cpu_seconds_per_execution` (all
      timed executions; CPU time of the whole process, tf.data included); the medians
      `step_seconds`, `step_cpu_seconds`, `steps_per_second` and `rows_per_second` (examples x
      k); the FLOP count (`forward_flops`, `backward_flops`, `step_flops`); `gflops` achieved
      (wall clock) and `gflops_per_cpu_second`; `matmul` (the `MATMUL_SHAPES["step"]` probe
      run right after, in this process) and `fraction_of_matmul_rate` = gflops / its rate
      (`cpu_fraction_of_matmul_rate` likewise per CPU second); the final loss (finite unless
      training diverged); `rss_before_model_mib` and `peak_rss_mib` (this process' peak, which
      includes TensorFlow itself); and the load average before and after.
    """
    load_before = os.getloadavg()
    keras.utils.set_random_seed(config.seed)
    dataset = synthetic_dataset(config.num_examples, config.batch_size, config.seed)
    rss_before_model = peak_rss_mib()
    model = make_benchmark_model(config)
    flops = flop_count(model, config.batch_size, config.k)
    timer = _ExecutionTimer()
    executions = config.warmup_executions + config.repeats
    history = model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=executions * config.steps_per_execution,
        verbose=0,
        callbacks=[timer],
    )
    peak_rss = peak_rss_mib()  # Before the probe allocates anything.
    load_after = os.getloadavg()
    durations = np.diff(timer.ends)[config.warmup_executions :]
    cpu_durations = np.diff(timer.cpu_ends)[config.warmup_executions :]
    if len(durations) != config.repeats:
        raise RuntimeError(f"expected {config.repeats} timed executions, got {len(durations)}")
    step_seconds = float(np.median(durations)) / config.steps_per_execution
    step_cpu_seconds = float(np.median(cpu_durations)) / config.steps_per_execution
    steps_per_second = 1.0 / step_seconds
    gflops = flops.total * steps_per_second / 1e9
    gflops_per_cpu_second = flops.total / step_cpu_seconds / 1e9
    matmul = matmul_rate(*MATMUL_SHAPES[DENOMINATOR_SHAPE], repeats=config.matmul_repeats)
    return {
        "config": dataclasses.asdict(config),
        "jit_compile": config.resolved_jit_compile(),
        "seconds_per_execution": [float(d) for d in durations],
        "cpu_seconds_per_execution": [float(d) for d in cpu_durations],
        "warmup_seconds": float(timer.ends[config.warmup_executions] - timer.ends[0]),
        "step_seconds": step_seconds,
        "step_cpu_seconds": step_cpu_seconds,
        "steps_per_second": steps_per_second,
        "rows_per_second": steps_per_second * config.batch_size * config.k,
        "forward_flops": flops.forward,
        "backward_flops": flops.backward,
        "step_flops": flops.total,
        "gflops": gflops,
        "gflops_per_cpu_second": gflops_per_cpu_second,
        "matmul": matmul._asdict(),
        "fraction_of_matmul_rate": gflops / matmul.gflops,
        "cpu_fraction_of_matmul_rate": gflops_per_cpu_second / matmul.gflops_per_cpu_second,
        "final_loss": float(history.history["loss"][-1]),
        "rss_before_model_mib": rss_before_model,
        "peak_rss_mib": peak_rss,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
    }


def run_isolated(config: BenchmarkConfig, timeout: float = 1800.0) -> dict[str, Any]:
    """Runs `run_benchmark(config)` in a fresh Python process, so peak memory is its own.

    Args:
      config: What to run.
      timeout: Seconds before the child is killed.

    Returns:
      The child's `run_benchmark` result.

    Raises:
      RuntimeError: If the child fails; the message holds the end of its stderr.
    """
    what = f"benchmark of {config.variant} at {config.size}"
    return run_module("iwae_tf.experiments.benchmarking", config.to_json(), what, timeout)


def run_module(module: str, argument: str, what: str, timeout: float) -> dict[str, Any]:
    """Runs `python -m module argument` and returns the JSON object on its last stdout line.

    Raises:
      RuntimeError: If the child fails, naming `what`; the message holds the end of its stderr.
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, "-m", module, argument]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def iwaeu_over_iwae(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """IWAEU's achieved GFLOP/s over IWAE's, {size: {"wall": ..., "cpu": ...}}, at every size
    where both were run ("cpu" compares GFLOP per CPU second)."""
    by_key = {(r["config"]["variant"], r["config"]["size"]): r for r in results}
    ratios = {}
    for (variant, size), result in by_key.items():
        if variant == "iwaeu" and ("iwae", size) in by_key:
            iwae = by_key["iwae", size]
            ratios[size] = {
                "wall": result["gflops"] / iwae["gflops"],
                "cpu": result["gflops_per_cpu_second"] / iwae["gflops_per_cpu_second"],
            }
    return ratios


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of `run_benchmark` results, one row per configuration.

    Columns: wall-clock ms per step and CPU ms per step (all threads of the process), steps and
    rows (examples x k) per second, matmul GFLOP per step, achieved GFLOP/s, the matmul probe's
    GFLOP/s in the same process, the achieved fraction of it (wall clock, and per CPU second),
    the peak RSS (and the RSS before the model was built: TensorFlow and the data) and the
    1-minute load average after the run.
    """
    header = (
        "| variant | size | batch | k | XLA | ms/step | CPU ms/step | steps/s | rows/s "
        "| GFLOP/step | GFLOP/s | matmul GFLOP/s | of matmul | of matmul per CPU-s "
        "| peak RSS MiB (before model) | load |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        c = r["config"]
        lines.append(
            f"| {c['variant']} | {c['size']} | {c['batch_size']} | {c['k']} "
            f"| {'on' if r['jit_compile'] else 'off'} | {1e3 * r['step_seconds']:.2f} "
            f"| {1e3 * r['step_cpu_seconds']:.2f} "
            f"| {r['steps_per_second']:.1f} | {r['rows_per_second']:,.0f} "
            f"| {r['step_flops'] / 1e9:.3f} | {r['gflops']:.1f} | {r['matmul']['gflops']:.1f} "
            f"| {100 * r['fraction_of_matmul_rate']:.0f}% "
            f"| {100 * r['cpu_fraction_of_matmul_rate']:.0f}% "
            f"| {r['peak_rss_mib']:.0f} ({r['rss_before_model_mib']:.0f}) "
            f"| {r['load_average_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """`run_suite`'s report as text: machine, load, matmul rates, the table and the ratios."""
    machine = report["machine"]
    lines = [
        f"{report['date']}, {machine['cpu']}, {machine['logical_cores']} logical cores, "
        f"TensorFlow {machine['tensorflow']}; load average "
        f"{report['load_average_start'][0]:.2f} at start, {report['load_average_end'][0]:.2f} "
        "at end (1 min)",
    ]
    for name, rate in report["matmul_rates"].items():
        m, n_in, n_out = rate["shape"]
        marker = " (the denominator's shape)" if name == report["denominator"] else ""
        lines.append(
            f"float32 matmul [{m}, {n_in}] x [{n_in}, {n_out}]: {rate['gflops']:.1f} GFLOP/s, "
            f"{rate['gflops_per_cpu_second']:.1f} per CPU-s (median of "
            f"{len(rate['samples'])}){marker}"
        )
    lines += ["", format_table(report["results"]), ""]
    for size, ratio in report["iwaeu_over_iwae"].items():
        lines.append(
            f"IWAEU / IWAE achieved GFLOP/s at {size}: {ratio['wall']:.2f} (wall clock), "
            f"{ratio['cpu']:.2f} (per CPU second)"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """CPU model name (as `lscpu` shows it), logical cores, memory and library versions."""
    model_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model_name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return {
        "cpu": model_name,
        "logical_cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
    }


def run_suite(
    configs: Sequence[BenchmarkConfig],
    matmul_repeats: int = 9,
    command: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Probes the matmul rate, then benchmarks every config in its own process.

    Args:
      configs: What to run, in order.
      matmul_repeats: Repeats of each matmul-rate probe.
      command: The command line, recorded in the report.
      log: Optional callable taking a progress message.

    Returns:
      A JSON-able report: `date`, `command`, `machine`, load averages, `matmul_rates` (the
      probes of `MATMUL_SHAPES` run first, {name: `MatmulRate` fields}), `denominator` (the
      probe shape each config re-measures for its `fraction_of_matmul_rate`), `results` (one
      `run_benchmark` dict per config) and `iwaeu_over_iwae`.
    """
    log = log or (lambda message: None)
    load_start = os.getloadavg()
    rates = {}
    for name, shape in MATMUL_SHAPES.items():
        rate = matmul_rate(*shape, repeats=matmul_repeats)
        rates[name] = rate._asdict()
        log(f"matmul {name} {shape}: {rate.gflops:.1f} GFLOP/s (median of {matmul_repeats})")
    results = []
    for config in configs:
        result = run_isolated(config)
        results.append(result)
        log(
            f"{config.variant} {config.size}: {1e3 * result['step_seconds']:.2f} ms/step, "
            f"{result['gflops']:.1f} GFLOP/s"
        )
    return {
        "date": datetime.date.today().isoformat(),
        "command": command,
        "machine": machine_info(),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "matmul_rates": rates,
        "denominator": DENOMINATOR_SHAPE,
        "results": results,
        "iwaeu_over_iwae": iwaeu_over_iwae(results),
    }


def _main(argv: list[str]) -> None:
    config = BenchmarkConfig.from_json(argv[1])
    result = run_benchmark(config)
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv)
