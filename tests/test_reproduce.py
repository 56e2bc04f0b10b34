"""Tests of the reproduction grid (experiments.reproduce, scripts/reproduce.py) and its plots."""

import csv
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from iwae_tf import model as model_lib
from iwae_tf import rng
from iwae_tf.experiments import presets, reproduce
from iwae_tf.experiments.reproduce import Budget

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEED = rng.from_int(0)  # Deterministic decoders here: the seed reaches no draw.


@pytest.fixture(name="plots")
def plots_module():
    """experiments.plots; its tests are skipped without matplotlib (the "plots" extra)."""
    pytest.importorskip("matplotlib")
    from iwae_tf.experiments import plots

    return plots


def assert_png(path):
    assert os.path.getsize(path) > 1000, path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_budget_maps_onto_each_presets_schedule():
    with pytest.raises(ValueError, match="exactly one"):
        Budget()
    with pytest.raises(ValueError, match="exactly one"):
        Budget(stages=2, epochs=3)
    with pytest.raises(ValueError):
        Budget(stages=0)
    stages = Budget(stages=3, steps_per_epoch=4)
    burda = reproduce.run_config("burda_mnist_2l_iwae_k50", stages, eval_k=100)
    assert (burda.schedule, burda.stages, burda.epochs, burda.steps_per_epoch) == (
        "burda",
        3,
        13,
        4,
    )
    assert (burda.eval_k, burda.latent_sizes) == (100, (100, 50))
    # A constant-rate preset trains as many epochs as the truncated schedule would.
    seed = reproduce.run_config("iwaeu_seed_mnist", stages, eval_k=100)
    assert (seed.schedule, seed.epochs, seed.learning_rate) == ("constant", 13, 1e-3)
    epochs = reproduce.run_config("burda_mnist_1l_vae_k5", Budget(epochs=7), eval_k=5000)
    assert (epochs.schedule, epochs.epochs, epochs.learning_rate) == ("constant", 7, 1e-3)
    assert reproduce.describe_budget(burda) == "burda 3 stages = 13 epochs x 4 steps"
    assert reproduce.describe_budget(epochs) == "7 epochs at lr 0.001"
    with pytest.raises(ValueError, match="may only set"):
        reproduce.run_config("burda_mnist_1l_vae_k5", stages, 10, overrides={"k": 3})


def test_reproduce_command_states_the_run():
    command = reproduce.reproduce_command(
        "burda_mnist_1l_iwae_k5",
        Budget(stages=2, steps_per_epoch=3),
        eval_k=10,
        train_eval_split="train[:50]",
        output_dir="out dir",
        overrides={"train_split": "train[:200]"},
    )
    args = shlex.split(command)
    assert args[:2] == ["python", "scripts/reproduce.py"]
    assert set(args[2:]) == {
        "--presets=burda_mnist_1l_iwae_k5",
        "--stages=2",
        "--steps_per_epoch=3",
        "--eval_k=10",
        "--train_eval_split=train[:50]",
        "--train_split=train[:200]",
        "--output_dir=out dir",
    }


def test_a_failed_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    def fail(config, workdir):
        raise RuntimeError(f"no data for {config.dataset}")

    monkeypatch.setattr(reproduce.train, "train_and_evaluate", fail)
    rows = reproduce.run_grid(
        ["burda_omniglot_1l_iwae_k5", "iwae_seed_mnist"],
        str(tmp_path),
        Budget(epochs=1),
        make_plots=False,
        active_units_fn=lambda *a, **k: [0],
    )
    assert [r["status"] for r in rows] == [
        "failed: RuntimeError: no data for omniglot",
        "failed: RuntimeError: no data for mnist",
    ]
    written = read_csv(tmp_path / "results.csv")
    assert [r["preset"] for r in written] == ["burda_omniglot_1l_iwae_k5", "iwae_seed_mnist"]
    assert written[0]["published_nll"] == "106.12" and written[0]["test_nll"] == ""
    assert written[1]["published_nll"] == "95.182"  # -(-95.182): a log-likelihood, negated.
    assert "failed: RuntimeError" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="unknown preset"):
        reproduce.run_grid(["burda_mnist_1l_iwae_k6"], str(tmp_path), Budget(epochs=1))


def test_tiny_grid_trains_tabulates_plots_and_resumes(mnist_data_dir, tmp_path, monkeypatch, plots):
    names = ["burda_mnist_1l_vae_k1", "manifold_2d"]
    # 2 stages = 4 epochs of 2 steps: 160 images, inside train[:200] (Keras does not repeat it).
    budget = Budget(stages=2, steps_per_epoch=2)
    overrides = {
        "train_split": "train[:200]",
        "test_split": "test[:40]",
        "data_dir": mnist_data_dir,
        "eval_batch_size": 20,
    }
    unit_calls = []

    def fake_active_units(model, dataset, threshold):
        unit_calls.append(threshold)
        return [7] * len(model.decoder.latent_sizes)

    out = tmp_path / "grid"
    kwargs = dict(
        eval_k=8,
        train_eval_split="train[:40]",
        overrides=overrides,
        active_units_fn=fake_active_units,
    )
    rows = reproduce.run_grid(names, str(out), budget, **kwargs)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert unit_calls == [1e-2, 1e-2]

    written = read_csv(out / "results.csv")
    assert list(written[0]) == list(reproduce.COLUMNS)
    assert [r["preset"] for r in written] == names
    vae, manifold = written
    metrics = json.loads((out / "runs" / names[0] / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["train_steps"], metrics["eval_k"]) == (4, 8, 8)
    assert float(vae["test_nll"]) == pytest.approx(metrics["test_nll"])
    assert float(vae["test_nll_stderr"]) == pytest.approx(metrics["test_nll_stderr"])
    # The published figure comes from the package's copy of the paper results.
    table = presets.load_paper_results()["burda2016_iwae"]["mnist"]["1_layer"]["vae"]
    assert float(vae["published_nll"]) == table["k1"] == 86.76
    assert float(vae["difference"]) == pytest.approx(float(vae["test_nll"]) - 86.76)
    assert (vae["active_units"], vae["published_active_units"]) == ("7", "19")
    # A few steps from the mean-image start: far from trained, but a real NLL estimate.
    train_nll = float(vae["train_nll"])
    assert 100 < train_nll < 300 and 100 < float(vae["test_nll"]) < 300
    assert float(vae["gap"]) == pytest.approx(float(vae["test_nll"]) - train_nll)
    assert (vae["model"], vae["k"], vae["layers"], vae["dataset"]) == ("vae", "1", "1", "mnist")
    assert vae["budget"] == "burda 2 stages = 4 epochs x 2 steps"
    assert float(vae["wall_seconds"]) > 0
    assert manifold["published_nll"] == "" and manifold["difference"] == ""

    markdown = (out / "results.md").read_text()
    assert "| burda_mnist_1l_vae_k1 | vae | 1 | 1 | mnist |" in markdown
    assert f"{float(vae['test_nll']):.2f} ± " in markdown and "| 86.76 |" in markdown
    assert "truncated to 2 stages" in markdown and "K = 8" in markdown

    plot_dir = out / "plots"
    expected = [
        plot_dir / "learning_curves.png",
        *(plot_dir / n / f for n in names for f in ("learning_curves.png", "prior_samples.png")),
        *(plot_dir / n / "reconstructions.png" for n in names),
        plot_dir / "manifold_2d" / "latent_manifold.png",
    ]
    for path in expected:
        assert_png(path)
    assert not (plot_dir / names[0] / "latent_manifold.png").exists()  # 50 latents: none.
    assert "plots/manifold_2d/latent_manifold.png" in markdown

    # Resuming: nothing is trained, evaluated or loaded again, and the table is unchanged.
    finished = [
        out / "runs" / n / f
        for n in names
        for f in ("metrics.json", "evaluation.json", "weights/model.index")
    ] + [plot_dir / names[1] / "latent_manifold.png"]
    mtimes = [os.path.getmtime(p) for p in finished]

    def no_call(*args, **kwargs):
        raise AssertionError("a finished run was touched again")

    with monkeypatch.context() as patch:
        patch.setattr(reproduce.train, "train_and_evaluate", no_call)
        patch.setattr(reproduce.train, "load_run", no_call)
        again = reproduce.run_grid(names, str(out), budget, **kwargs)
    assert again == rows
    assert len(unit_calls) == 2

    # Another budget in the same directory is refused before anything runs.
    with pytest.raises(ValueError, match="another config"):
        reproduce.run_grid(names, str(out), Budget(stages=3, steps_per_epoch=2), **kwargs)

    # The script, given the command of a row, resumes that run rather than retraining it.
    args = shlex.split(vae["command"])
    assert args[:2] == ["python", "scripts/reproduce.py"]
    result = subprocess.run(
        [sys.executable, *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| burda_mnist_1l_vae_k1 |" in result.stdout
    assert [os.path.getmtime(p) for p in finished] == mtimes
    rerun = read_csv(out / "results.csv")
    assert [r["preset"] for r in rerun] == [names[0]]
    assert rerun[0]["test_nll"] == vae["test_nll"] and rerun[0]["train_nll"] == vae["train_nll"]


def test_a_static_grid_selects_on_validation_and_scores_its_own_training_images(
    mnist_data_dir, tmp_path
):
    """Issue #16's regime: the overrides reach every run, and the train NLL is of the images
    the run trained on (its own static draw), not of a fresh draw of the same pixels."""
    overrides = {
        "train_split": "train[:200]",
        "test_split": "test[:40]",
        "validation_split": "train[300:340]",
        "binarization": "static",
        "select_best": True,
        "seed": 3,
        "data_dir": mnist_data_dir,
        "eval_batch_size": 20,
    }
    out = tmp_path / "grid"
    rows = reproduce.run_grid(
        ["burda_mnist_1l_iwae_k5"],
        str(out),
        Budget(epochs=3, steps_per_epoch=4),
        eval_k=8,
        train_eval_split="train[:40]",
        overrides=overrides,
        active_units_fn=lambda model, dataset, threshold: [1],
        make_plots=False,
    )
    assert rows[0]["status"] == "ok", rows[0]["status"]
    run_dir = out / "runs" / "burda_mnist_1l_iwae_k5"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config"]["binarization"] == "static" and metrics["config"]["select_best"]
    assert rows[0]["selected_epoch"] == metrics["selected_epoch"]
    markdown = (out / "results.md").read_text()
    assert f"| {metrics['selected_epoch'] + 1} of 3 |" in markdown
    assert "`binarization=static`" in markdown and "`select_best=True`" in markdown
    assert "--binarization=static" in rows[0]["command"]

    config, model = reproduce.train.load_run(str(run_dir))
    own = reproduce.evaluation.estimate_log_likelihood(
        model, reproduce.train.training_data(config, 40), num_samples=8, seed=3
    )
    assert rows[0]["train_nll"] == pytest.approx(own.nll, rel=1e-5)
    # Negative control: the same 40 images binarized like the test set score otherwise.
    fresh = reproduce.evaluation.estimate_log_likelihood(
        model, reproduce.train.eval_data(config, "train[:40]"), num_samples=8, seed=3
    )
    assert rows[0]["train_nll"] != pytest.approx(fresh.nll, rel=1e-5)


def test_the_table_says_which_epoch_was_evaluated_and_where_training_stopped(tmp_path):
    def row(preset, selected, stopped):
        values = dict.fromkeys(reproduce.COLUMNS)
        values.update(
            preset=preset, model="iwae", objective="iwae", estimator="reparam", k=5,
            layers=1, dataset="mnist", epochs=150, selected_epoch=selected,
            stopped_epoch=stopped, status="ok",
        )  # fmt: skip
        return values

    rows = [row("a", None, None), row("b", 39, None), row("c", 39, 69)]
    csv_path, md_path = reproduce.write_results(rows, str(tmp_path), "")
    markdown = open(md_path).read()
    for cell in ("| last |", "| 40 of 150 |", "| 40 of 150, stopped at 70 |"):
        assert cell in markdown
    with open(csv_path) as f:
        assert [r["stopped_epoch"] for r in csv.DictReader(f)] == ["", "", "69"]


def test_script_requires_a_stated_budget(tmp_path):
    script = os.path.join(REPO, "scripts", "reproduce.py")
    out = tmp_path / "out"
    no_budget = subprocess.run(
        [sys.executable, script, "--grid=quick", f"--output_dir={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_budget.returncode != 0
    assert "exactly one of --stages and --epochs" in no_budget.stderr
    assert not out.exists()


def small_model(latent_sizes, hidden_sizes):
    model = model_lib.build_model(
        "iwae", num_importance_samples=2, latent_sizes=latent_sizes, hidden_sizes=hidden_sizes
    )
    model(tf.zeros([1, 784]))
    return model


def test_prior_samples_go_down_both_layers(plots):
    model = small_model((6, 3), ((8,), (5,)))
    samples = plots.prior_samples(model, 12, seed=1)
    assert samples.shape == (12, 784)
    assert np.all((samples > 0) & (samples < 1))
    np.testing.assert_array_equal(samples, plots.prior_samples(model, 12, seed=1))
    assert not np.allclose(samples, plots.prior_samples(model, 12, seed=2))
    # h1 is drawn from p(h1 | h2), not left at the placeholder zeros: samples differ from the
    # decoder's output at h1 = 0.
    at_zero = model.decoder([tf.zeros([12, 6]), tf.zeros([12, 3])], seed=SEED)[0]
    at_zero = tf.sigmoid(at_zero).numpy()
    assert np.max(np.abs(samples - at_zero)) > 1e-3


def test_reconstructions_and_manifold(tmp_path, plots):
    model = small_model((2,), ((16,),))
    x = np.random.default_rng(0).integers(0, 2, size=(7, 784)).astype(np.float32)
    recon = plots.reconstructions(model, x)
    assert recon.shape == (7, 784)
    mean = model.encoder(tf.constant(x), num_samples=1, seed=SEED)[0][1].mean[0]
    expected = tf.sigmoid(model.decoder([mean], seed=SEED)[0]).numpy()
    np.testing.assert_allclose(recon, expected, rtol=1e-5, atol=1e-6)
    manifold = plots.latent_manifold(model, points_per_axis=4)
    assert manifold.shape == (16, 784)
    # Row-major from the top-left: z2 decreases down the rows, z1 increases along them.
    corner = model.decoder([tf.constant([[-1.6448536, 1.6448536]])], seed=SEED)[0]
    corner = tf.sigmoid(corner).numpy()
    np.testing.assert_allclose(manifold[0], corner[0], rtol=1e-4, atol=1e-5)
    assert_png(plots.plot_latent_manifold(model, str(tmp_path / "m.png"), points_per_axis=4))
    assert_png(plots.plot_reconstructions(model, x, str(tmp_path / "r.png")))
    with pytest.raises(ValueError, match="2 latents"):
        plots.latent_manifold(small_model((3,), ((4,),)))


def test_learning_curves_from_history(tmp_path, plots):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,iwae_bound,loss,val_iwae_bound\n0,-150.0,150.0,-140.0\n1,-120.0,120.0,-118.0\n"
    )
    assert plots.read_history(str(history))["val_iwae_bound"].tolist() == [-140.0, -118.0]
    assert_png(plots.plot_learning_curves({"run": str(history)}, str(tmp_path / "c.png")))


def test_the_table_names_the_objective_and_estimator_that_trained_each_model():
    def cell(name):
        config = presets.apply_preset(name)
        row = {"model": config.model, "objective": reproduce.describe_objective(config)}
        return reproduce.describe_model({**row, "estimator": config.estimator})

    assert cell("burda_mnist_1l_vae_k5") == "vae"
    assert cell("burda_mnist_1l_iwae_k5") == "iwae"
    assert cell("dreg_mnist_1l_iwae_k5") == "iwae: dreg"
    assert cell("vr_max_mnist_1l_k50") == "iwae: vr(alpha=-inf)"
    assert cell("ciwae_mnist_1l_k64") == "iwae: ciwae(beta=0.05)"
    assert cell("rws_dreg_mnist_1l_k5") == "iwae: rws, dreg"
