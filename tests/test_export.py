"""Tests of the SavedModel export, its loading wrapper and scripts/score.py.

The exported `score` is compared with the in-memory model through an independent path: the
log-weights the model draws with the documented seeds, combined here in numpy. The scoring
script runs in fresh processes in which importing iwae_tf, tf_keras or TFP raises, which
proves that a SavedModel is usable with TensorFlow alone.
"""

import ast
import csv
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from scipy import special

from iwae_tf import data, evaluation, export, likelihoods, load_exported, rng, serving
from iwae_tf.experiments import shipping
from iwae_tf.model import VARIANTS, build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORE_SCRIPT = os.path.join(REPO, "scripts", "score.py")
PIXELS = 784
MAX_ROWS = 100  # Small, so that scoring exercises the in-graph blocks and chunks.

# Runs a script with imports of Keras, TFP and the model code made impossible: only the package's
# lazy __init__, iwae_tf.serving, iwae_tf.rng (and iwae_tf.data for tfds inputs) may load.
ISOLATED_RUNNER = """
import runpy, sys
BLOCKED = {"tf_keras", "tensorflow_probability", "iwae_tf"}
ALLOWED = (
    "iwae_tf", "iwae_tf.logs", "iwae_tf.serving", "iwae_tf.rng", "iwae_tf.files", "iwae_tf.data"
)

class Blocker:
    def find_spec(self, name, path=None, target=None):
        allowed = name in ALLOWED or name.startswith("iwae_tf.data.")
        if name.split(".")[0] in BLOCKED and not allowed:
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    loaded = {m for m in sys.modules if m.split(".")[0] in BLOCKED}
    print("LOADED:", sorted(loaded - set(ALLOWED[:5])))
"""


def assert_only_serving_and_data_loaded(stdout):
    """A tfds input may load iwae_tf.data; nothing else beyond the serving modules."""
    loaded = ast.literal_eval(stdout.split("LOADED: ", 1)[1].strip().splitlines()[0])
    assert loaded and all(m.startswith("iwae_tf.data") for m in loaded), loaded


def run_score(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-c", ISOLATED_RUNNER, SCORE_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


fold_in = rng.fold_in  # The documented derivation; its own tests are in test_rng.py.


def binary_images(n, seed=0, p=0.3):
    return (np.random.default_rng(seed).random((n, PIXELS)) < p).astype(np.float32)


# ------------------------------------------------------------------------------ fixtures

ROUND_TRIP_MODELS = {
    **{name: (name, (4,), ((16,),)) for name in sorted(VARIANTS)},
    "iwaeu_two_layers": ("iwaeu", (4, 3), ((16,), (8,))),
}


def make_model(variant, latent_sizes, hidden_sizes, seed=0, kind="local_reparameterization"):
    keras.utils.set_random_seed(seed)
    model = build_model(
        variant,
        3,
        latent_sizes=latent_sizes,
        hidden_sizes=hidden_sizes,
        output_bias=-1.0,
        uncertain_layer_kind=kind,
    )
    model(tf.zeros([1, PIXELS]))
    return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """name -> (in-memory model, loaded ExportedModel), built on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            model = make_model(*ROUND_TRIP_MODELS[name])
            path = str(tmp_path_factory.mktemp("exports") / name)
            export.export_saved_model(
                model, path, {"dataset": "mnist", "note": name}, max_rows=MAX_ROWS
            )
            cache[name] = (model, load_exported(path))
        return cache[name]

    return get


# ---------------------------------------------------------------------------- round trip


def manual_score(model, x, k, seed, block, chunk):
    """log_px and elbo from log-weights drawn block by block, chunk by chunk, in numpy."""
    pair = rng.from_int(seed)
    log_px, elbo = [], []
    for b, start in enumerate(range(0, len(x), block)):
        rows = tf.constant(x[start : start + block])
        lw = np.concatenate(
            [
                model.log_weights(
                    rows, min(chunk, k - first), seed=fold_in(fold_in(pair, b), c)
                ).numpy()
                for c, first in enumerate(range(0, k, chunk))
            ]
        ).astype(np.float64)
        log_px.append(special.logsumexp(lw, axis=0) - np.log(k))
        elbo.append(lw.mean(axis=0))
    return np.concatenate(log_px), np.concatenate(elbo)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_MODELS))
def test_saved_score_equals_in_memory_score_with_the_same_seed(exports, name):
    model, exported = exports(name)
    x = binary_images(9, seed=1)
    # k = 5: one block of all 9 examples, one chunk (45 rows <= MAX_ROWS).
    # k = 250: blocks of 1 example, chunks of 100, 100, 50.
    for k, block, chunk in [(5, 9, 5), (250, 1, 100)]:
        saved = exported.score(x, k=k, seed=42)
        log_px, elbo = manual_score(model, x, k, 42, block, chunk)
        np.testing.assert_allclose(saved["log_px"], log_px, rtol=1e-5)
        np.testing.assert_allclose(saved["elbo"], elbo, rtol=1e-5)
        # And the library function the signature wraps, run eagerly.
        in_memory = evaluation.score(model, x, k, rng.from_int(42), MAX_ROWS)
        np.testing.assert_allclose(saved["log_px"], in_memory[0].numpy(), rtol=1e-5)
    again = exported.score(x, k=5, seed=42)
    np.testing.assert_array_equal(again["log_px"], exported.score(x, k=5, seed=42)["log_px"])
    assert not np.allclose(again["log_px"], exported.score(x, k=5, seed=43)["log_px"])


def test_serving_default_is_score(exports):
    _, exported = exports("iwae")
    signatures = exported._saved_model.signatures
    x = tf.constant(binary_images(3))
    args = dict(x=x, k=tf.constant(4, tf.int64), seed=tf.constant(7, tf.int64))
    default, score = signatures["serving_default"](**args), signatures["score"](**args)
    np.testing.assert_array_equal(default["log_px"].numpy(), score["log_px"].numpy())


def test_the_calls_users_write_first_take_int32_int64_and_python_ints(exports):
    """k, n and seed: int64 in the signatures (TF Serving), Python ints there too, and int32
    tensors such as tf.constant(7) through the restored functions."""
    _, exported = exports("iwae")
    loaded = exported._saved_model
    x = tf.constant(binary_images(3))
    want = loaded.signatures["score"](
        x=x, k=tf.constant(4, tf.int64), seed=tf.constant(7, tf.int64)
    )["log_px"].numpy()
    calls = [
        loaded.signatures["score"](x=x, k=4, seed=7),
        loaded.score(x=x, k=tf.constant(4), seed=tf.constant(7)),
        loaded.score(x, tf.constant(4, tf.int64), tf.constant(7, tf.int64)),
        loaded.score(x=x, k=4, seed=7),
    ]
    for out in calls:  # The same graph on the same inputs.
        np.testing.assert_array_equal(out["log_px"].numpy(), want)
    images = loaded.sample(n=tf.constant(5), seed=tf.constant(1))["images"].numpy()
    np.testing.assert_array_equal(images, loaded.signatures["sample"](n=5, seed=1)["images"])


def test_encode_gives_posterior_mean_and_std(exports):
    model, exported = exports("iwae")
    x = binary_images(6, seed=2)
    encoded = exported.encode(x)
    ((_, gaussian),) = model.encoder(tf.constant(x), num_samples=1, seed=rng.from_int(0))
    np.testing.assert_allclose(encoded["h1_mean"], gaussian.mean.numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoded["h1_std"], gaussian.std.numpy()[0], rtol=1e-5)


def test_encode_and_decode_use_posterior_mean_weights(exports):
    model, exported = exports("iwaeu_two_layers")
    x = binary_images(5, seed=3)

    def mean_mlp(mlp, h):
        for layer in [*mlp.hidden, mlp.head]:
            loc, _, bias = layer.get_weights()
            h = h @ loc + bias
            if layer is not mlp.head:
                h = np.tanh(h)
        return h

    q1, q2 = model.encoder.blocks
    out1 = mean_mlp(q1, x)
    out2 = mean_mlp(q2, out1[:, :4])
    encoded = exported.encode(x)
    np.testing.assert_allclose(encoded["h1_mean"], out1[:, :4], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoded["h1_std"], np.exp(out1[:, 4:]), rtol=1e-4)
    np.testing.assert_allclose(encoded["h2_mean"], out2[:, :3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoded["h2_std"], np.exp(out2[:, 3:]), rtol=1e-4)

    z = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
    h1 = mean_mlp(model.decoder.blocks[0], z)[:, :4]
    logits = mean_mlp(model.decoder.output_net, h1)
    np.testing.assert_allclose(exported.decode(z), special.expit(logits), rtol=1e-4, atol=1e-6)


def test_sample_is_seeded_binary_and_consistent_with_decode(exports):
    model, exported = exports("iwae")
    first, again, other = (
        exported.sample(50, seed=1),
        exported.sample(50, 1),
        exported.sample(50, 2),
    )
    for name in ("images", "probs", "z"):
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["images"], other["images"])
    assert first["images"].shape == (50, PIXELS) and first["z"].shape == (50, 4)
    assert set(np.unique(first["images"])) <= {0.0, 1.0}
    # A deterministic one-layer decoder: sample's probs are decode(z), and images ~ probs.
    np.testing.assert_allclose(first["probs"], exported.decode(first["z"]), rtol=1e-5)
    logits, _ = model.decoder([tf.constant(first["z"])], seed=rng.from_int(0))
    np.testing.assert_allclose(first["probs"], tf.sigmoid(logits).numpy(), rtol=1e-5)
    assert abs(first["images"].mean() - first["probs"].mean()) < 0.01


def test_sample_draws_what_the_decoder_and_the_plots_draw_for_the_seed(exports):
    # One ancestral sampler, in networks.Decoder.sample: the export and the figures share it.
    model, exported = exports("iwaeu_two_layers")
    out = exported.sample(9, seed=5)
    model_seed, _ = rng.split(rng.from_int(5), 2)
    draw = model.decoder.sample(9, model_seed)
    np.testing.assert_allclose(out["probs"], tf.sigmoid(draw.outputs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["z"], draw.latents[-1], rtol=1e-5, atol=1e-6)
    plots = pytest.importorskip("iwae_tf.experiments.plots")
    np.testing.assert_allclose(plots.prior_samples(model, 9, seed=5), out["probs"], rtol=1e-5)
    # Another seed draws other images (the check above would hold for a constant sampler).
    assert not np.allclose(exported.sample(9, seed=6)["probs"], out["probs"], atol=1e-3)
    assert exported.sample(0, 0)["images"].shape == (0, PIXELS)


def test_flipout_exports_score_seed_reproducibly(tmp_path):
    model = make_model("iwaeu", (4,), ((16,),), kind="flipout")
    path = export.export_saved_model(model, str(tmp_path / "flipout"), {})
    exported = load_exported(path)
    assert exported.metadata["layer_types"] == {"encoder": "flipout", "decoder": "flipout"}
    x = binary_images(4)
    scores = exported.score(x, k=20, seed=0)
    assert np.all(np.isfinite(scores["log_px"])) and np.all(scores["log_px"] >= scores["elbo"])
    np.testing.assert_array_equal(exported.score(x, k=20, seed=0)["log_px"], scores["log_px"])
    assert not np.allclose(exported.score(x, k=20, seed=1)["log_px"], scores["log_px"])


# ------------------------------------------------------------------ files and metadata


def test_metadata_and_export_dir_handling(exports, tmp_path):
    model, exported = exports("iwaeu_two_layers")
    meta = exported.metadata
    assert meta["note"] == "iwaeu_two_layers" and meta["dataset"] == "mnist"
    assert meta["variant"] == "iwaeu" and meta["objective"] == "iwae"
    assert meta["architecture"] == {
        "data_shape": [784],
        "data_size": 784,
        "latent_sizes": [4, 3],
        "hidden_sizes": [[16], [8]],
        "conv_filters": [],
    }
    assert meta["likelihood"] == {"name": "bernoulli", "min_std": 0.01}
    assert meta["layer_types"] == {
        "encoder": "local_reparameterization",
        "decoder": "local_reparameterization",
    }
    assert meta["training_k"] == 3 and meta["max_rows"] == MAX_ROWS
    assert meta["versions"]["tensorflow"] == tf.__version__
    assert set(meta["versions"]) >= {"iwae_tf", "tf_keras", "tensorflow_probability"}
    path = str(tmp_path / "out")
    export.export_saved_model(model, path, {"a": 1})
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        export.export_saved_model(model, path, {"a": 2})
    export.export_saved_model(model, path, {"a": 3}, overwrite=True)
    assert serving.read_metadata(path)["a"] == 3
    # Only the SavedModel is left behind: no staging directories.
    assert sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(ValueError, match="not JSON-serializable"):
        export.export_saved_model(model, str(tmp_path / "bad"), {"a": object()})
    with pytest.raises(ValueError, match="not built"):
        export.export_saved_model(build_model("iwae"), str(tmp_path / "unbuilt"), {})


def test_export_metadata_from_a_training_config():
    from iwae_tf.config import TrainConfig

    config = TrainConfig(model="iwaeu", k=7, test_split="test[:100]")
    meta = export.export_metadata(config, {"test_nll": 90.0, "config": {"x": 1}})
    assert meta["variant"] == "iwaeu" and meta["dataset"] == "mnist"
    assert meta["config"]["k"] == 7 and meta["test_split"] == "test[:100]"
    assert meta["training_metrics"] == {"test_nll": 90.0}
    json.dumps(meta)


def test_uncertain_784_400_40_export_is_small(tmp_path):
    model = make_model("iwaeu", (40,), ((400,),))
    model.compile(optimizer=keras.optimizers.Adam())
    model.fit(binary_images(40), batch_size=20, epochs=1, verbose=0)  # Creates Adam's slots.
    path = export.export_saved_model(model, str(tmp_path / "big"), {})
    size = sum(
        os.path.getsize(f)
        for f in glob.glob(os.path.join(path, "**"), recursive=True)
        if os.path.isfile(f)
    )
    # 2 x 675,000 kernel parameters (loc, scale) in float32 = 5.4 MB; no optimizer slots.
    assert 5.0e6 < size < 10e6, size


def test_saved_model_cli_lists_the_signatures_with_their_shapes(exports):
    _, exported = exports("iwaeu_two_layers")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run(
        [cli, "show", "--dir", exported.path, "--all"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name", out, re.S))
    assert set(blocks) >= {"serving_default", "score", "encode", "decode", "sample"}

    def tensors(block, kind):
        section = block.split("output(s):")[0 if kind == "inputs" else 1]
        return {
            name: (dtype, shape)
            for name, dtype, shape in re.findall(
                r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", section
            )
        }

    expected = {
        "score": (
            {"x": ("DT_FLOAT", "(-1, 784)"), "k": ("DT_INT64", "()"), "seed": ("DT_INT64", "()")},
            {"log_px": ("DT_FLOAT", "(-1)"), "elbo": ("DT_FLOAT", "(-1)")},
        ),
        "encode": (
            {"x": ("DT_FLOAT", "(-1, 784)")},
            {
                "h1_mean": ("DT_FLOAT", "(-1, 4)"),
                "h1_std": ("DT_FLOAT", "(-1, 4)"),
                "h2_mean": ("DT_FLOAT", "(-1, 3)"),
                "h2_std": ("DT_FLOAT", "(-1, 3)"),
            },
        ),
        "decode": ({"z": ("DT_FLOAT", "(-1, 3)")}, {"probs": ("DT_FLOAT", "(-1, 784)")}),
        "sample": (
            {"n": ("DT_INT64", "()"), "seed": ("DT_INT64", "()")},
            {
                "images": ("DT_FLOAT", "(-1, 784)"),
                "probs": ("DT_FLOAT", "(-1, 784)"),
                "z": ("DT_FLOAT", "(-1, 3)"),
            },
        ),
    }
    expected["serving_default"] = expected["score"]
    for name, (inputs, outputs) in expected.items():
        assert tensors(blocks[name], "inputs") == inputs, name
        assert tensors(blocks[name], "outputs") == outputs, name
    # And the same documentation in the metadata.
    assert exported.metadata["signatures"]["decode"]["inputs"] == {"z": "float32 [N, 3]"}


# ---------------------------------------------------------------------------- bad input

GOOD = binary_images(3, seed=5)
BAD_INPUTS = {
    "rank 1": (GOOD[0], r"x must have rank 2, \[N, 784\]"),
    "rank 3": (GOOD[None], r"x must have rank 2, \[N, 784\]"),
    "width": (GOOD[:, :100], r"x must have 784 columns \(flattened images\)"),
    "nan": (np.where(GOOD > 0, np.nan, 0.0).astype(np.float32), "x contains NaN or inf"),
    "inf": (np.where(GOOD > 0, np.inf, 0.0).astype(np.float32), "x contains NaN or inf"),
    "above 1": (GOOD * 2, r"x has values outside \[0, 1\]"),
    "negative": (-GOOD, r"x has values outside \[0, 1\]"),
    "grey": (GOOD * 0.5, "x is not binary"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_signature_rejects_bad_input_in_the_graph(exports, case):
    _, exported = exports("iwaeu")
    x, message = BAD_INPUTS[case]
    score = exported._saved_model.signatures["score"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="assertion failed: \\[" + message):
        score(x=tf.constant(x), k=tf.constant(3, tf.int64), seed=tf.constant(0, tf.int64))
    if case in ("rank 1", "rank 3", "width", "nan", "grey"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            exported._saved_model.signatures["encode"](x=tf.constant(x))


def test_signature_rejects_other_bad_arguments(exports):
    _, exported = exports("iwaeu")
    signatures = exported._saved_model.signatures
    seed = tf.constant(0, tf.int64)
    # dtype: TensorFlow checks the signature's input types before the graph runs.
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        signatures["score"](
            x=tf.constant(GOOD.astype(np.int64)), k=tf.constant(3, tf.int64), seed=seed
        )
    for k in (0, 2**31):  # An int32 cast inside would wrap 2^31 to a negative count.
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"k must be in \[1, 2\^31 - 1\]"):
            signatures["score"](x=tf.constant(GOOD), k=k, seed=seed)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"n must be in \[0, 2\^31 - 1\]"):
        signatures["sample"](n=-1, seed=seed)
    with pytest.raises(tf.errors.InvalidArgumentError, match="z contains NaN or inf"):
        signatures["decode"](z=tf.constant(np.full((2, 4), np.nan, np.float32)))


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_wrapper_rejects_bad_input_on_the_host(exports, case):
    _, exported = exports("iwae")
    x, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        exported.score(x, k=3)


def test_check_images_converts_between_rows_and_images_and_nothing_else():
    rows = binary_images(4, seed=1)
    images = rows.reshape(4, 28, 28, 1)
    np.testing.assert_array_equal(serving.check_images(rows, (28, 28, 1)), images)
    np.testing.assert_array_equal(serving.check_images(images, 784), rows)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 28, 28, 1\]; got shape"):
        serving.check_images(images[:, :, :20], (28, 28, 1))
    with pytest.raises(ValueError, match=r"x must have rank 4, \[N, 28, 28, 1\]"):
        serving.check_images(rows[:, :700], (28, 28, 1))
    grey = np.full((2, 5, 4, 3), 0.5, np.float32)  # A Gaussian model's input: no binarity check.
    np.testing.assert_array_equal(serving.check_images(grey, (5, 4, 3), binary=False), grey)
    with pytest.raises(ValueError, match="x is not binary"):
        serving.check_images(grey, (5, 4, 3))


def test_wrapper_rejects_non_float_and_binarizes_grey_on_request(exports, mnist_data_dir):
    _, exported = exports("iwae")
    with pytest.raises(ValueError, match="x must be a float array.*got dtype int64"):
        exported.score(GOOD.astype(np.int64), k=3)
    with pytest.raises(ValueError, match="x must be a float array.*got dtype uint8"):
        exported.score((GOOD * 255).astype(np.uint8), k=3)
    # Grey test images binarized on request are exactly the test set's fixed binarization.
    grey = np.concatenate(
        [b.numpy() for b in data.load_images("mnist", "test[:30]", mnist_data_dir).batch(30)]
    )
    binary = np.concatenate(
        [b.numpy() for b in data.eval_dataset("mnist", "test[:30]", 30, data_dir=mnist_data_dir)]
    )
    np.testing.assert_array_equal(serving.binarize_rows(grey, 0), binary)
    np.testing.assert_array_equal(
        exported.score(grey, k=4, seed=3, binarize=True)["log_px"],
        exported.score(binary, k=4, seed=3)["log_px"],
    )


# ------------------------------------------------------------------------ fresh process


@pytest.fixture(scope="module")
def shipped_like(tmp_path_factory, mnist_data_dir):
    """A briefly trained IWAEU exported with a recorded test metric, like a shipped model."""
    keras.utils.set_random_seed(0)
    mean = data.mean_image("mnist", mnist_data_dir, split="train[:2000]")
    model = build_model(
        "iwaeu",
        5,
        latent_sizes=(8,),
        hidden_sizes=((64,),),
        data_shape=mean.shape,
        output_bias=likelihoods.get("bernoulli").output_bias(mean),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-4))
    train = data.train_dataset("mnist", 20, 0, mnist_data_dir, split="train[:2000]")
    model.fit(train, epochs=2, steps_per_epoch=100, verbose=0)
    split, eval_k = "test[:300]", 200
    test = data.eval_dataset("mnist", split, 100, data_dir=mnist_data_dir)
    estimates = evaluation.estimate_log_likelihood(model, test, eval_k, seed=1)
    metrics = {
        "test_nll": estimates.nll,
        "test_nll_stderr": estimates.nll_stderr,
        "eval_k": eval_k,
        "num_test_examples": len(estimates.log_px),
    }
    path = str(tmp_path_factory.mktemp("shipped") / "iwaeu")
    export.export_saved_model(
        model, path, {"dataset": "mnist", "test_split": split, "training_metrics": metrics}
    )
    x = np.concatenate([b.numpy() for b in test])
    return path, x, metrics


def read_scores(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    return np.array([[float(r["log_px"]), float(r["elbo"])] for r in rows])


def test_fresh_process_scores_like_the_recorded_metric_without_model_code(
    shipped_like, mnist_data_dir, tmp_path
):
    path, x, metrics = shipped_like
    out = tmp_path / "scores.csv"
    result = run_score(
        f"--saved_model={path}",
        "--input=tfds:test[:300]",
        f"--data_dir={mnist_data_dir}",
        f"--k={metrics['eval_k']}",
        "--seed=0",
        "--batch_size=100",
        f"--output={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_only_serving_and_data_loaded(result.stdout)
    scores = read_scores(out)
    assert scores.shape == (300, 2)
    nll = -scores[:, 0].mean()
    assert f"NLL {nll:.4f}" in result.stdout
    # The recorded metric used another seed: the two differ by Monte Carlo error only, far
    # below the metric's own standard error over examples.
    assert abs(nll - metrics["test_nll"]) < metrics["test_nll_stderr"], (nll, metrics)
    assert abs(nll - metrics["test_nll"]) < 0.5, (nll, metrics)
    # The same batches and seed in this process give the same numbers.
    exported = load_exported(path)
    expected = np.concatenate(
        [
            exported.score(x[i : i + 100], k=metrics["eval_k"], seed=0)["log_px"]
            for i in (0, 100, 200)
        ]
    )
    np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-5)


def test_fresh_process_scores_npy_files_and_binarizes_on_request(
    shipped_like, mnist_data_dir, tmp_path
):
    path, x, _ = shipped_like
    np.save(tmp_path / "binary.npy", x[:40])
    grey = np.concatenate(
        [b.numpy() for b in data.load_images("mnist", "test[:40]", mnist_data_dir).batch(40)]
    )
    np.save(tmp_path / "grey.npy", grey)
    results = {}
    for name, extra in [("binary", []), ("grey", ["--binarize"])]:
        out = tmp_path / f"{name}.csv"
        result = run_score(
            f"--saved_model={path}",
            f"--input={tmp_path / (name + '.npy')}",
            "--k=50",
            f"--output={out}",
            *extra,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        results[name] = read_scores(out)
    # Binarizing the grey test images on request reproduces the test set's binarization.
    np.testing.assert_array_equal(results["grey"], results["binary"])


def test_score_script_rejects_bad_input_with_the_documented_messages(shipped_like, tmp_path):
    path, x, _ = shipped_like
    x = x[:5]
    cases = {
        "rank": (x[0], r"x must have rank 4, \[N, 28, 28, 1\]; got shape \(28, 28, 1\)"),
        "width": (x[:, :, :20], r"x must have shape \[N, 28, 28, 1\]; got shape"),
        "dtype": (x.astype(np.int32), "x must be a float array .*got dtype int32"),
        "nan": (np.where(x > 0, np.nan, 0.0), "x contains NaN or inf"),
        "range": (x * 3, r"x has values outside \[0, 1\]"),
        "grey": (x * 0.5, "x is not binary: .*--binarize"),
    }
    for name, (bad, message) in cases.items():
        np.save(tmp_path / f"{name}.npy", bad)
        result = run_score(
            f"--saved_model={path}",
            f"--input={tmp_path / name}.npy",
            "--k=2",
            f"--output={tmp_path / name}.csv",
        )
        assert result.returncode == 1, (name, result.stderr[-2000:])
        assert re.search("score.py: error: " + message, result.stderr), (name, result.stderr)


def shipped_models():
    found = []
    for meta_path in sorted(
        glob.glob(os.path.join(REPO, "exported", "*", "assets", "metadata.json"))
    ):
        with open(meta_path) as f:
            meta = json.load(f)
        if "test_nll" in meta.get("training_metrics", {}):
            found.append((os.path.dirname(os.path.dirname(meta_path)), meta))
    return found


SHIPPED = shipped_models()


@pytest.mark.parametrize(
    "path, meta",
    SHIPPED or [pytest.param(None, None, marks=pytest.mark.skip(reason="no shipped model"))],
    ids=[os.path.basename(path) for path, _ in SHIPPED] or None,
)
def test_shipped_model_in_a_fresh_process_matches_its_recorded_metric(
    path, meta, mnist_data_dir, tmp_path
):
    """Every model in exported/ scores, in a process with no model code, what it recorded:
    its check figure (shipped.json: the library's NLL of the same images at the same K) within
    Monte Carlo error, and its full test-set NLL within the images' sampling error."""
    metrics = meta["training_metrics"]
    if meta.get("dataset") != "mnist":
        pytest.skip(f"the shipped model is for {meta.get('dataset')!r}; this test reads MNIST")
    check_path = os.path.join(path, shipping.SHIPPED_FILE)
    check = None
    if os.path.exists(check_path):
        with open(check_path) as f:
            check = json.load(f)
    split = check["split"] if check else "test[:500]"
    k = check["k"] if check else min(int(metrics.get("eval_k", 1000)), 1000)
    out = tmp_path / "shipped.csv"
    result = run_score(
        f"--saved_model={path}",
        f"--input=tfds:{split}",
        f"--data_dir={mnist_data_dir}",
        f"--k={k}",
        f"--output={out}",
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_only_serving_and_data_loaded(result.stdout)
    log_px = read_scores(out)[:, 0]
    if check:
        assert abs(-log_px.mean() - check["nll"]) < shipping.check_tolerance(check), check
    # The first n test images are a sample of the test set: their mean NLL is within 4
    # standard errors of the recorded full-set figure (plus 1 nat for k <= eval_k, L_k <= L_K).
    n = len(log_px)
    tolerance = 4 * log_px.std(ddof=1) / np.sqrt(n) + (1.0 if k < metrics.get("eval_k", k) else 0)
    assert abs(-log_px.mean() - metrics["test_nll"]) < tolerance, (-log_px.mean(), metrics)
