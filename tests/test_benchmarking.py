"""Tests of the benchmark library: FLOP counts against hand counts and against the traced graph.

The FLOP convention is checked two independent ways: against counts worked out by hand for
small networks, and against the MatMul ops TensorFlow actually runs in a traced training step
(forward and backward, pruned to what the variable gradients need). No timing is asserted.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from iwae_tf import bounds, rng
from iwae_tf.experiments import benchmarking as B
from iwae_tf.experiments import evaluation_benchmark as EB
from iwae_tf.model import VARIANTS, build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK_SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")
PIXELS = 6


def built(variant, **kwargs):
    keras.utils.set_random_seed(0)
    model = build_model(variant, **kwargs)
    model(tf.zeros([1, *kwargs.get("data_shape", (784,))]))
    return model


def test_paper_iwae_at_batch_20_k_50_matches_a_hand_count():
    # Encoder 784-200-200-100 on 20 rows (x encoded once); decoder 50-200-200-784 on 1000 rows.
    specs = B.dense_layer_specs(built("iwae"), batch_size=20, k=50)
    assert [(s.network, s.input_size, s.units, s.rows, s.matmuls) for s in specs] == [
        ("encoder", 784, 200, 20, 1),
        ("encoder", 200, 200, 20, 1),
        ("encoder", 200, 100, 20, 1),
        ("decoder", 50, 200, 1000, 1),
        ("decoder", 200, 200, 1000, 1),
        ("decoder", 200, 784, 1000, 1),
    ]
    flops = B.flop_count(built("iwae"), batch_size=20, k=50)
    encoder = 20 * (784 * 200 + 200 * 200 + 200 * 100)
    decoder = 1000 * (50 * 200 + 200 * 200 + 200 * 784)
    forward = 2 * (encoder + decoder)
    # Backward: 2x forward, except the layer reading x, which needs no input gradient.
    backward = 2 * forward - 2 * 20 * 784 * 200
    assert forward == 422_272_000
    assert (flops.forward, flops.backward) == (forward, backward)
    assert flops.total == 3 * forward - 6_272_000


def shares_first_moments(model):
    """Whether the encoder computes its first layer's matmuls once per example even with
    per-row weight draws (a possible optimization of the local reparameterization)."""
    return getattr(model.encoder, "shares_first_moments", False)


def test_uncertain_weights_tile_the_encoder_and_double_every_matmul():
    # Tiny networks by hand: x 6 -> 4 -> (2 means, 2 log-stds); decoder 2 -> 4 -> 6.
    sizes = dict(latent_sizes=(2,), hidden_sizes=((4,),), data_shape=(PIXELS,))
    batch, k = 3, 5

    def count(per_row_encoder, enc_matmuls, dec_matmuls, first_once=False):
        # Rows of the encoder's two layers: x encoded once, or tiled k times.
        first = batch if not per_row_encoder or first_once else batch * k
        second = batch if not per_row_encoder else batch * k
        encoder = [2 * first * 6 * 4 * enc_matmuls, 2 * second * 4 * 4 * enc_matmuls]
        decoder = [2 * batch * k * i * o * dec_matmuls for i, o in [(2, 4), (4, 6)]]
        forward = sum(encoder) + sum(decoder)
        return forward, 2 * forward - encoder[0]  # The layer reading x: no input gradient.

    for variant, args in {
        "iwae": (False, 1, 1),
        "vae": (False, 1, 1),
        "iwaeu": (True, 2, 2),
        "iwaeu_rec": (True, 2, 1),
        "iwaeu_gen": (False, 1, 2),
    }.items():
        model = built(variant, **sizes)
        forward, backward = count(*args, first_once=shares_first_moments(model))
        flops = B.flop_count(model, batch, k)
        assert (flops.forward, flops.backward) == (forward, backward), variant
    assert set(VARIANTS) == {"iwae", "vae", "iwaeu", "iwaeu_rec", "iwaeu_gen"}


def test_paper_iwaeu_costs_about_3_5_times_iwae_at_k_50():
    iwae = B.flop_count(built("iwae"), 20, 50).total
    model = built("iwaeu")
    iwaeu = B.flop_count(model, 20, 50).total
    if shares_first_moments(model):
        # The 784 x 200 layer's two matmuls run on 20 rows instead of 1000, forward and for the
        # weight gradient: 2 * 2 * 2 * (1000 - 20) * 784 * 200 fewer FLOPs.
        assert iwaeu == 4_456_000_000 - 1_229_312_000
        assert 2.5 < iwaeu / iwae < 2.6
    else:
        assert iwaeu == 4_456_000_000
        assert 3.5 < iwaeu / iwae < 3.6


def test_two_stochastic_layers_and_per_call_draws():
    sizes = dict(latent_sizes=(3, 2), hidden_sizes=((4,), (5,)), data_shape=(PIXELS,))
    specs = B.dense_layer_specs(built("iwae", **sizes), batch_size=2, k=3)
    # The second encoder block reads the k * batch samples of h1 and needs their gradient.
    assert [(s.name, s.rows, s.input_gradient) for s in specs] == [
        ("q_h1/hidden_0", 2, False),
        ("q_h1/gaussian_head", 2, True),
        ("q_h2/hidden_0", 6, True),
        ("q_h2/gaussian_head", 6, True),
        ("p_x/hidden_0", 6, True),
        ("p_x/output_head", 6, True),
        ("p_h1/hidden_0", 6, True),
        ("p_h1/gaussian_head", 6, True),
    ]
    # One shared weight draw per call: x is encoded once, with one matmul per layer.
    model = built("iwaeu", uncertain_layer_kind="reparameterization", **sizes)
    specs = B.dense_layer_specs(model, batch_size=2, k=3)
    assert [(s.rows, s.matmuls) for s in specs[:2]] == [(2, 1), (2, 1)]


def test_specs_cover_every_kernel_of_the_model():
    model = built("iwaeu", latent_sizes=(3, 2), hidden_sizes=((4, 4), (5,)), data_shape=(PIXELS,))
    specs = B.dense_layer_specs(model, batch_size=1, k=1)
    kernels = [v for v in model.trainable_variables if v.shape.rank == 2 and "loc" in v.name]
    assert len(specs) == len(kernels) == 10
    parameters = sum(v.shape.num_elements() for v in kernels)
    assert sum(s.input_size * s.units for s in specs) == parameters


def test_unbuilt_model_is_rejected():
    with pytest.raises(ValueError, match="Build the model"):
        B.dense_layer_specs(build_model("iwae"), 20, 5)


def traced_matmul_flops(model, batch, k):
    """2 m n p of every MatMul a traced train step needs for its variable gradients."""

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            seed = rng.from_int(0)
            loss = -tf.reduce_mean(bounds.iwae_bound(model.log_weights(x, k, seed)))
        return tape.gradient(loss, model.trainable_variables)

    graph = gradients.get_concrete_function(tf.TensorSpec([batch, PIXELS])).graph
    needed, stack = set(), [t.op for t in graph.outputs]
    while stack:  # The ops the outputs depend on: what the runtime executes after pruning.
        op = stack.pop()
        if op.name not in needed:
            needed.add(op.name)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    forward = backward = 0
    for op in graph.get_operations():
        if op.type != "MatMul" or op.name not in needed:
            continue
        a, b = (t.shape.as_list() for t in op.inputs)
        m = a[1] if op.get_attr("transpose_a") else a[0]
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        n = b[0] if op.get_attr("transpose_b") else b[1]
        flops = 2 * m * inner * n
        if "gradient" in op.name.lower():
            backward += flops
        else:
            forward += flops
    return forward, backward


@pytest.mark.parametrize("variant", ["iwae", "iwaeu", "iwaeu_rec", "iwaeu_gen"])
def test_count_equals_the_matmuls_of_the_traced_training_step(variant):
    model = built(variant, latent_sizes=(3, 2), hidden_sizes=((4,), (5,)), data_shape=(PIXELS,))
    flops = B.flop_count(model, batch_size=2, k=3)
    assert traced_matmul_flops(model, 2, 3) == (flops.forward, flops.backward)


def test_matmul_flops_formula():
    assert B.matmul_flops(2, 3, 4) == 48
    assert B.matmul_flops(1000, 784, 200) == 313_600_000


def test_matmul_rate_divides_the_flops_of_the_timed_calls_by_their_time(monkeypatch):
    wall = iter(np.arange(1000.0) * 0.5)  # Every reading is 0.5 s after the previous one...
    cpu = iter(np.arange(1000.0) * 2.0)  # ...and 2 s of CPU time after it.
    monkeypatch.setattr(B.time, "perf_counter", lambda: next(wall))
    monkeypatch.setattr(B.time, "process_time", lambda: next(cpu))
    rate = B.matmul_rate(4, 5, 6, repeats=3, seconds_per_repeat=1.2)
    # Calibration measures 0.5 s per call, so each repeat times int(1.2 / 0.5) = 2 calls.
    assert rate.shape == (4, 5, 6)
    assert rate.samples == pytest.approx([2 * 2 * 4 * 5 * 6 / 0.5 / 1e9] * 3)
    assert rate.gflops == pytest.approx(rate.samples[0])
    assert rate.gflops_per_cpu_second == pytest.approx(2 * 2 * 4 * 5 * 6 / 2.0 / 1e9)


def test_matmul_rate_is_positive_for_a_real_matmul():
    rate = B.matmul_rate(64, 64, 64, repeats=3, seconds_per_repeat=0.01)
    assert len(rate.samples) == 3 and rate.gflops > 0


def test_config_json_round_trip_and_jit_default():
    config = B.BenchmarkConfig.for_size("iwaeu", "seed_k25", repeats=2)
    assert (config.batch_size, config.k, config.latent_sizes, config.hidden_sizes) == (
        20,
        25,
        (40,),
        ((400,),),
    )
    assert B.BenchmarkConfig.from_json(config.to_json()) == config
    # As train.make_model without a strategy: XLA for every variant unless turned off.
    assert B.BenchmarkConfig(variant="iwae").resolved_jit_compile() is True
    assert B.BenchmarkConfig(variant="iwaeu").resolved_jit_compile() is True
    assert B.BenchmarkConfig(variant="iwaeu", jit_compile=False).resolved_jit_compile() is False
    assert B.BenchmarkConfig(variant="iwaeu", jit_compile=True).resolved_jit_compile() is True


TINY = dict(
    batch_size=4,
    k=3,
    latent_sizes=(2,),
    hidden_sizes=((8,),),
    steps_per_execution=3,
    repeats=2,
    matmul_repeats=2,
    num_examples=32,
    size="tiny",
)


def test_synthetic_dataset_is_binary_with_static_batches():
    batches = list(B.synthetic_dataset(10, 4, seed=0).take(5))
    assert all(b.shape == (4, 784) for b in batches)
    values = np.concatenate([b.numpy() for b in batches])
    assert set(np.unique(values)) == {0.0, 1.0}
    assert not np.array_equal(batches[0].numpy(), batches[3].numpy())


def test_run_benchmark_reports_consistent_figures():
    config = B.BenchmarkConfig(variant="iwae", jit_compile=False, **TINY)
    result = B.run_benchmark(config)
    assert len(result["seconds_per_execution"]) == 2
    assert result["step_seconds"] == pytest.approx(np.median(result["seconds_per_execution"]) / 3)
    cpu = np.median(result["cpu_seconds_per_execution"]) / 3
    assert result["step_cpu_seconds"] == pytest.approx(cpu)
    assert result["rows_per_second"] == pytest.approx(result["steps_per_second"] * 4 * 3)
    model = B.make_benchmark_model(config)
    assert result["step_flops"] == B.flop_count(model, 4, 3).total
    achieved = result["step_flops"] * result["steps_per_second"] / 1e9
    assert result["gflops"] == pytest.approx(achieved)
    assert result["gflops_per_cpu_second"] == pytest.approx(result["step_flops"] / cpu / 1e9)
    assert tuple(result["matmul"]["shape"]) == (1000, 784, 200)
    assert result["fraction_of_matmul_rate"] == pytest.approx(
        result["gflops"] / result["matmul"]["gflops"]
    )
    assert np.isfinite(result["final_loss"])
    assert result["peak_rss_mib"] >= result["rss_before_model_mib"] > 0
    json.dumps(result)


def test_ratios_and_table():
    def result(variant, size, gflops, cpu_gflops):
        config = B.BenchmarkConfig.for_size(variant, size)
        return {
            "config": B.dataclasses.asdict(config),
            "jit_compile": config.resolved_jit_compile(),
            "step_seconds": 0.01,
            "step_cpu_seconds": 0.02,
            "steps_per_second": 100.0,
            "rows_per_second": 1e5,
            "step_flops": 1e9,
            "gflops": gflops,
            "gflops_per_cpu_second": cpu_gflops,
            "matmul": {"gflops": 200.0},
            "fraction_of_matmul_rate": gflops / 200.0,
            "cpu_fraction_of_matmul_rate": 0.25,
            "peak_rss_mib": 900.0,
            "rss_before_model_mib": 700.0,
            "load_average_after": [2.5, 2.0, 1.0],
        }

    results = [result("iwae", "b20_k50", 100.0, 50.0), result("iwaeu", "b20_k50", 80.0, 60.0)]
    results.append(result("iwaeu", "b100_k5", 10.0, 5.0))  # No IWAE at this size: no ratio.
    assert B.iwaeu_over_iwae(results) == {
        "b20_k50": {"wall": pytest.approx(0.8), "cpu": pytest.approx(1.2)}
    }
    table = B.format_table(results).splitlines()
    assert len(table) == 5 and table[0].count("|") == table[1].count("|") == table[3].count("|")
    assert "| iwaeu | b20_k50 | 20 | 50 | on | 10.00 | 20.00 |" in table[3]
    assert "| 40% | 25% | 900 (700) | 2.5 |" in table[3]


def test_script_writes_the_report(tmp_path):
    output = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            BENCHMARK_SCRIPT,
            "--variants=vae",
            "--sizes=b100_k5",
            "--steps_per_execution=2",
            "--repeats=1",
            "--matmul_repeats=1",
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert [r["config"]["variant"] for r in report["results"]] == ["vae"]
    assert report["results"][0]["config"]["batch_size"] == 100
    assert set(report["matmul_rates"]) == {"step", "square"} and report["denominator"] == "step"
    assert report["machine"]["logical_cores"] >= 1
    assert "| vae | b100_k5 | 100 | 5 | on |" in done.stdout
    assert "IWAEU" not in done.stdout  # Only one variant: no ratio to print.


@pytest.mark.parametrize("mode", EB.MODES)
def test_evaluation_benchmark_reports_consistent_figures(mode):
    config = EB.EvaluationBenchmarkConfig(
        "iwae_1l", mode, num_examples=30, num_samples=10, passes=2, batch_size=20
    )
    result = EB.run_evaluation_benchmark(config)
    assert len(result["pass_seconds"]) == 2
    assert result["warm_seconds"] == result["pass_seconds"][1]
    assert result["first_pass_seconds"] == result["pass_seconds"][0]
    assert result["rows_per_second"] == pytest.approx(300 / result["warm_seconds"])
    # Forward matmuls by hand: the decoder 50-200-200-784 on N K rows, the encoder
    # 784-200-200-(2 x 50) once per example.
    decoder = 2 * 300 * (50 * 200 + 200 * 200 + 200 * 784)
    encoder = 2 * 30 * (784 * 200 + 200 * 200 + 200 * 100)
    assert result["forward_flops"] == decoder + encoder
    assert result["gflops"] == pytest.approx(result["forward_flops"] / result["warm_seconds"] / 1e9)
    assert tuple(result["matmul_eval"]["shape"]) == EB.EVAL_MATMUL_SHAPE
    assert result["fraction_of_eval_matmul_rate"] == pytest.approx(
        result["gflops"] / result["matmul_eval"]["gflops"]
    )
    # The same draws in both passes: the same program on the same inputs.
    assert result["nll"][0] == result["nll"][1] and np.isfinite(result["nll"][0])
    assert result["peak_rss_mib"] >= result["rss_before_model_mib"] > 0
    json.dumps(result)


def test_evaluation_benchmark_refuses_unknown_settings():
    with pytest.raises(ValueError, match="model must be one of"):
        EB.EvaluationBenchmarkConfig("iwae_3l")
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        EB.EvaluationBenchmarkConfig(num_samples=0)


def test_evaluation_script_writes_the_report(tmp_path):
    output = tmp_path / "eval.json"
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "benchmark_evaluation.py"),
            "--models=iwae_1l",
            "--modes=library,exported",
            "--num_examples=20",
            "--k=5",
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert [r["config"]["mode"] for r in report["results"]] == ["library", "exported"]
    assert "| iwae_1l | exported | 20 x 5 |" in done.stdout
