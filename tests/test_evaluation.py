"""Tests of iwae_tf.evaluation: chunked statistics, L_k from groups, active units, the script.

The chunked estimators are checked against statistics recomputed here from `model.log_weights`
with the documented seeds (fold_in per block, then per chunk) and combined in numpy, so a wrong
chunk or block bookkeeping, seed, or log-sum-exp shows up as a mismatch at float32 precision.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from scipy import special

from iwae_tf import data, evaluation, rng
from iwae_tf.config import TrainConfig
from iwae_tf.model import build_model
from iwae_tf.train import load_run, train_and_evaluate, training_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIXELS = 20


fold_in = rng.fold_in  # The documented derivation; its own tests are in test_rng.py.


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    model = build_model("iwaeu", 4, latent_sizes=(3,), hidden_sizes=((8,),), data_shape=(PIXELS,))
    model(tf.zeros([1, PIXELS]))
    return model


@pytest.fixture(scope="module")
def x():
    return tf.constant(np.random.default_rng(0).random((7, PIXELS)) < 0.4, tf.float32)


def manual_statistics(model, x, num_samples, seed, block, chunk, group=None):
    """log sum w, sum log w and the group-bound sums, recomputed block by block, chunk by chunk."""
    log_sum, total, group_sum = [], [], []
    for b, start in enumerate(range(0, len(x), block)):
        rows = x[start : start + block]
        weights, groups = [], np.zeros(len(rows))
        for c, first in enumerate(range(0, num_samples, chunk)):
            size = min(chunk, num_samples - first)
            lw = model.log_weights(rows, size, seed=fold_in(fold_in(seed, b), c)).numpy()
            lw = lw.astype(np.float64)
            weights.append(lw)
            if group and size >= group:
                full = size // group
                grouped = lw[: full * group].reshape(full, group, len(rows))
                groups += (special.logsumexp(grouped, axis=1) - np.log(group)).sum(axis=0)
        lw = np.concatenate(weights)
        log_sum.append(special.logsumexp(lw, axis=0))
        total.append(lw.sum(axis=0))
        group_sum.append(groups)
    return np.concatenate(log_sum), np.concatenate(total), np.concatenate(group_sum)


@pytest.mark.parametrize(
    "num_samples, max_rows, block, chunk",
    [
        (5, 1000, 7, 5),  # One block, one chunk.
        (30, 60, 2, 30),  # Blocks of 2 examples (the last one short), one chunk each.
        (25, 10, 1, 10),  # One example per block, chunks of 10, 10, 5.
    ],
)
def test_log_weight_statistics_match_blockwise_recomputation(
    model, x, num_samples, max_rows, block, chunk
):
    seed = tf.constant([11, 0], tf.int64)
    stats = evaluation.log_weight_statistics(model, x, num_samples, seed, max_rows=max_rows)
    log_sum, total, _ = manual_statistics(model, x, num_samples, seed, block, chunk)
    np.testing.assert_allclose(stats.log_sum_exp.numpy(), log_sum, rtol=1e-5)
    np.testing.assert_allclose(stats.sum.numpy(), total, rtol=1e-5)
    # Same in a tf.function with a tensor K (the exported signature's situation).
    traced = tf.function(
        lambda x, k: evaluation.log_weight_statistics(model, x, k, seed, max_rows=max_rows)
    )(x, tf.constant(num_samples))
    np.testing.assert_allclose(traced.log_sum_exp.numpy(), log_sum, rtol=1e-5)


def test_group_bounds_match_recomputation_and_drop_the_partial_group(model, x):
    seed = tf.constant([5, 0], tf.int64)
    # K = 14, k = 4, max_rows = 56: blocks of 4 examples, chunks of 12 (rounded down to a
    # multiple of 4) then 2, which make no full group: G = 3.
    stats = evaluation.log_weight_statistics(model, x, 14, seed, max_rows=56, group_size=4)
    assert int(stats.num_groups) == 3
    log_sum, _, group_sum = manual_statistics(model, x, 14, seed, 4, 12, group=4)
    np.testing.assert_allclose(stats.log_sum_exp.numpy(), log_sum, rtol=1e-5)
    np.testing.assert_allclose(stats.group_bound_sum.numpy(), group_sum, rtol=1e-5)


def test_score_is_log_mean_exp_and_mean_log_weight(model, x):
    seed = tf.constant([2, 0], tf.int64)
    log_px, elbo = evaluation.score(model, x, 6, seed)
    lw = model.log_weights(x, 6, seed=fold_in(fold_in(seed, 0), 0)).numpy().astype(np.float64)
    np.testing.assert_allclose(log_px.numpy(), special.logsumexp(lw, 0) - np.log(6), rtol=1e-6)
    np.testing.assert_allclose(elbo.numpy(), lw.mean(0), rtol=1e-6)


def test_model_calls_never_exceed_max_rows(model, x, monkeypatch):
    rows = []
    original = model.log_weights

    def spy(x, num_samples, seed=None):
        rows.append(int(num_samples) * int(tf.shape(x)[0]))
        return original(x, num_samples, seed)

    monkeypatch.setattr(model, "log_weights", spy)
    evaluation.log_weight_statistics(model, tf.tile(x, [6, 1]), 1000, rng.from_int(0), 2500)
    assert max(rows) <= 2500
    assert sum(rows) == 1000 * 7 * 6


@pytest.mark.parametrize("jit_compile", [False, True])
def test_estimate_log_likelihood_is_reproducible_and_in_dataset_order(model, x, jit_compile):
    ds = tf.data.Dataset.from_tensor_slices(x).batch(3)

    def estimate(seed):
        return evaluation.estimate_log_likelihood(
            model, ds, 40, seed=seed, group_size=4, jit_compile=jit_compile
        )

    first, again, other = estimate(7), estimate(7), estimate(8)
    # The same ops on the same inputs, compiled or not: equal bits.
    np.testing.assert_array_equal(first.log_px, again.log_px)
    assert not np.allclose(first.log_px, other.log_px)
    # Batch i draws with fold_in([seed, 0], i): recompute the second batch alone.
    batch_seed = fold_in(tf.constant([7, 0], tf.int64), 1)
    stats = evaluation.log_weight_statistics(model, x[3:6], 40, batch_seed, jit_compile=jit_compile)
    np.testing.assert_allclose(first.log_px[3:6], stats.log_sum_exp - np.log(40), rtol=1e-6)
    assert first.group_size == 4 and first.iwae_bound_k.shape == (7,)


def manual_compiled_statistics(model, x, num_samples, seed, max_rows, group=None):
    """The compiled path's statistics recomputed eagerly: zero-padded blocks, full chunks drawn,
    the samples beyond K dropped, groups only where whole."""
    block, chunk, num_chunks = evaluation.compiled_chunk_sizes(num_samples, max_rows, group)
    padded = np.concatenate([x, np.zeros((-len(x) % block, x.shape[1]), np.float32)])
    log_sum, total, group_sum = [], [], []
    for b in range(len(padded) // block):
        rows = tf.constant(padded[b * block : (b + 1) * block])
        draws = [
            model.log_weights(rows, chunk, seed=fold_in(fold_in(seed, b), j)).numpy()
            for j in range(num_chunks)
        ]
        lw = np.concatenate(draws).astype(np.float64)[:num_samples]
        log_sum.append(special.logsumexp(lw, axis=0))
        total.append(lw.sum(axis=0))
        if group:
            # Chunks are multiples of the group size, so groups are consecutive samples.
            whole = num_samples // chunk * (chunk // group) + num_samples % chunk // group
            grouped = lw[: whole * group].reshape(whole, group, block)
            group_sum.append((special.logsumexp(grouped, axis=1) - np.log(group)).sum(axis=0))
    n = len(x)
    stack = [np.concatenate(v)[:n] for v in (log_sum, total)]
    return (*stack, np.concatenate(group_sum)[:n] if group else None)


@pytest.mark.parametrize(
    "num_samples, max_rows, group, sizes",
    [
        (5, 1000, None, (200, 5, 1)),  # One block, padded from 7 examples to 200.
        (25, 10, None, (1, 9, 3)),  # Chunks of 9, 9 and 7 kept of 9: 2 draws masked.
        (30, 60, 4, (1, 32, 1)),  # One chunk of 32 for K = 30: 7 whole groups of 4.
        (14, 12, 4, (1, 8, 2)),  # Chunks of 8 and 6 kept: groups 2 + 1.
    ],
)
def test_compiled_statistics_match_recomputation(model, x, num_samples, max_rows, group, sizes):
    assert evaluation.compiled_chunk_sizes(num_samples, max_rows, group) == sizes
    seed = tf.constant([11, 0], tf.int64)
    stats = tf.function(
        lambda x: evaluation.log_weight_statistics(
            model, x, num_samples, seed, max_rows, group, jit_compile=True
        )
    )(x)
    log_sum, total, group_sum = manual_compiled_statistics(
        model, x.numpy(), num_samples, seed, max_rows, group
    )
    np.testing.assert_allclose(stats.log_sum_exp.numpy(), log_sum, rtol=1e-5)
    np.testing.assert_allclose(stats.sum.numpy(), total, rtol=1e-5)
    if group:
        whole = {30: 7, 14: 3}[num_samples]
        assert int(stats.num_groups) == whole
        np.testing.assert_allclose(stats.group_bound_sum.numpy(), group_sum, rtol=1e-5)


def test_score_is_the_same_for_an_int_and_a_tensor_k_and_any_batch_split(model, x):
    seed = rng.from_int(4)
    as_int = evaluation.score(model, x, 37, seed, max_rows=64)
    as_tensor = evaluation.score(model, x, tf.constant(37), seed, max_rows=64)
    # K = 37 fills a chunk, so blocks hold one example: cutting the batch changes no draw.
    first_three = evaluation.score(model, x[:3], 37, seed, max_rows=64)
    for a, b in zip(as_int, as_tensor, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(first_three[0], as_int[0][:3], rtol=1e-6)


def test_compiled_and_uncompiled_estimates_agree_up_to_monte_carlo_error(model):
    xs = tf.constant(np.random.default_rng(4).random((50, PIXELS)) < 0.4, tf.float32)
    ds = tf.data.Dataset.from_tensor_slices(xs).batch(25)
    compiled, plain = (
        evaluation.estimate_log_likelihood(model, ds, 3000, max_rows=2000, jit_compile=jit)
        for jit in (True, False)
    )
    assert not np.array_equal(compiled.log_px, plain.log_px)  # Other draws...
    # ...of the same estimator: the mean difference over examples is Monte Carlo noise, within
    # a few of its standard errors (a dropped or doubled chunk would shift every example).
    for a, b in ((compiled.log_px, plain.log_px), (compiled.elbo, plain.elbo)):
        difference = a.astype(np.float64) - b
        stderr = difference.std(ddof=1) / np.sqrt(len(difference))
        assert abs(difference.mean()) < 4 * stderr + 1e-3, (difference.mean(), stderr)


def dead_unit_model(variant, latent_sizes, hidden_sizes, dead):
    """A model whose encoder mean ignores x for the units in `dead` (layer index -> units)."""
    keras.utils.set_random_seed(0)
    model = build_model(
        variant, 2, latent_sizes=latent_sizes, hidden_sizes=hidden_sizes, data_shape=(PIXELS,)
    )
    model(tf.zeros([1, PIXELS]))
    for layer_index, units in dead.items():
        head = model.encoder.blocks[layer_index].head
        weights = head.get_weights()
        kernel = weights[0]  # [d_in, 2 * latent]: mean columns first, then log-std.
        kernel[:, units] = 0.0
        # Live means get a strong dependence on the input so their variance is large.
        live = [u for u in range(latent_sizes[layer_index]) if u not in units]
        kernel[:, live] *= 10.0
        weights[0] = kernel
        head.set_weights(weights)
    return model


def test_active_units_match_numpy_and_count_ignored_units_inactive():
    model = dead_unit_model("iwae", (5,), ((16,),), {0: [1, 3]})
    xs = (np.random.default_rng(2).random((300, PIXELS)) < 0.4).astype(np.float32)
    units = evaluation.active_units(model, tf.data.Dataset.from_tensor_slices(xs).batch(64))
    # Independent forward pass: E_q[h|x] is the Gaussian head's mean, exactly.
    (w1, b1), (w2, b2) = [
        layer.get_weights()
        for layer in model.encoder.blocks[0].hidden + [model.encoder.blocks[0].head]
    ]
    means = (np.tanh(xs @ w1 + b1) @ w2 + b2)[:, :5]
    np.testing.assert_allclose(units.variances[0], means.var(axis=0, ddof=1), rtol=1e-4, atol=1e-9)
    assert units.variances[0][[1, 3]].max() < 1e-10
    assert units.counts == (3,)
    assert list(np.flatnonzero(units.active[0])) == [0, 2, 4]


@pytest.mark.parametrize("variant", ["iwae", "iwaeu_rec"])
def test_active_units_of_two_layers_and_uncertain_encoders(variant):
    # Layer 2's units 0 and 2 ignore h_1; with an uncertain encoder, E_q includes the weight
    # draws (Monte Carlo, 100 draws), whose noise must stay far below the threshold.
    model = dead_unit_model(variant, (4, 3), ((16,), (8,)), {0: [0], 1: [0, 2]})
    xs = (np.random.default_rng(3).random((200, PIXELS)) < 0.4).astype(np.float32)
    units = evaluation.active_units(model, tf.data.Dataset.from_tensor_slices(xs).batch(50))
    assert units.counts == (3, 1), units.variances
    assert units.variances[0][0] < 1e-3 and max(units.variances[1][[0, 2]]) < 1e-3


def test_evaluate_summary_and_csv(model, x, tmp_path):
    ds = tf.data.Dataset.from_tensor_slices(tf.tile(x, [4, 1])).batch(10)
    result = evaluation.evaluate(model, ds, num_samples=24, seed=1)
    summary = result.summary()
    assert summary["train_k"] == 4 and summary["num_samples"] == 24
    assert summary["num_examples"] == 28
    assert summary["nll"] == pytest.approx(-np.mean(result.estimates.log_px))
    assert summary["nll_stderr"] == pytest.approx(
        np.std(result.estimates.log_px, ddof=1) / np.sqrt(28)
    )
    # 24 samples = 6 full groups of k = 4: L_4 <= log p(x) estimate, per example and on average.
    assert summary["nll"] <= -summary["iwae_bound_train_k"] + 1e-4
    assert summary["active_units"] == list(result.active_units.counts)
    json.dumps(summary)
    path = tmp_path / "per_example.csv"
    result.write_per_example_csv(str(path))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "log_px", "elbo", "iwae_bound_k4"]
    np.testing.assert_array_equal([float(r["log_px"]) for r in rows], result.estimates.log_px)


def tiny_run_config(data_dir, tmp_path, **changes):
    """A 20-step IWAE k = 3 on MNIST, evaluated on test[:50]: a finished run in seconds."""
    values = dict(
        model="iwae",
        k=3,
        epochs=1,
        steps_per_epoch=20,
        eval_k=10,
        latent_sizes=(6,),
        hidden_sizes=((32,),),
        train_split="train[:400]",
        test_split="test[:50]",
        eval_batch_size=25,
        data_dir=data_dir,
        export_dir=str(tmp_path / "export"),
    )
    return TrainConfig(**{**values, **changes})


def test_evaluate_script_on_a_finished_run(mnist_data_dir, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_run_config(mnist_data_dir, tmp_path)
    train_and_evaluate(config, str(run_dir))
    csv_path = tmp_path / "nll.csv"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "evaluate.py"),
            f"--run_dir={run_dir}",
            "--k=30",
            "--split=test[:40]",
            f"--per_example_csv={csv_path}",
            "--max_rows=200",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run_dir / "evaluation.json") as f:
        summary = json.load(f)
    assert summary["num_examples"] == 40 and summary["num_samples"] == 30
    assert summary["train_k"] == 3 and summary["split"] == "test[:40]"
    assert len(summary["active_units"]) == 1 and 0 <= summary["active_units"][0] <= 6
    assert summary["peak_rss_mb"] > 0
    assert f"NLL          {summary['nll']:.2f}" in result.stdout
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    assert -np.mean([float(r["log_px"]) for r in rows]) == pytest.approx(summary["nll"], rel=1e-6)
    # The script's numbers are evaluation.evaluate's on the same data and seed.
    _, model = load_run(str(run_dir))
    ds = data.eval_dataset("mnist", "test[:40]", 25, data_dir=mnist_data_dir)
    direct = evaluation.evaluate(model, ds, num_samples=30, train_k=3, max_rows=200, seed=0)
    assert direct.summary()["nll"] == pytest.approx(summary["nll"], rel=1e-5)


def test_evaluate_script_as_trained_scores_a_static_runs_own_images(mnist_data_dir, tmp_path):
    """--as_trained is the training-set side of the train-test gap: the run's own draw."""
    run_dir = tmp_path / "run"
    config = tiny_run_config(
        mnist_data_dir, tmp_path, binarization="static", seed=5, train_split="train[100:500]"
    )
    train_and_evaluate(config, str(run_dir))
    output = tmp_path / "train_eval.json"
    command = [
        sys.executable,
        os.path.join(REPO, "scripts", "evaluate.py"),
        f"--run_dir={run_dir}",
        "--k=20",
        "--as_trained",
        "--num_examples=40",
        f"--output={output}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output) as f:
        summary = json.load(f)
    assert summary["as_trained"] and summary["split"] == "train[100:500]"
    assert summary["num_examples"] == 40
    own, model = load_run(str(run_dir))
    direct = evaluation.evaluate(model, training_data(own, 40), num_samples=20, seed=0)
    assert direct.summary()["nll"] == pytest.approx(summary["nll"], rel=1e-5)
    # Negative control: the evaluation's fresh draw of the same 40 images, with the same
    # importance samples, is not what the script scored.
    fresh = data.eval_dataset("mnist", "train[100:140]", 25, data_dir=mnist_data_dir)
    wrong = evaluation.evaluate(model, fresh, num_samples=20, seed=0)
    assert wrong.summary()["nll"] != pytest.approx(summary["nll"], rel=1e-5)
    # --as_trained names its own split.
    clash = subprocess.run([*command, "--split=test"], capture_output=True, text=True, timeout=600)
    assert clash.returncode == 1
    assert clash.stderr.strip().splitlines()[-1].endswith("drop --split")
