"""Tests of shipping a run's model to exported/ (experiments.shipping, scripts/ship.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from iwae_tf import evaluation, train
from iwae_tf.config import TrainConfig
from iwae_tf.experiments import shipping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(name="finished_run", scope="module")
def finished_run_fixture(mnist_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("shipping")
    config = TrainConfig(
        model="iwae",
        k=3,
        epochs=1,
        steps_per_epoch=30,
        eval_k=20,
        latent_sizes=(6,),
        hidden_sizes=((32,),),
        train_split="train[:600]",
        eval_batch_size=20,
        data_dir=mnist_data_dir,
        export_dir=str(root / "export"),
    )
    run_dir = str(root / "run")
    train.train_and_evaluate(config, run_dir)
    return run_dir


def test_ship_copies_the_export_with_figures_check_and_command(finished_run, tmp_path):
    root = str(tmp_path / "exported")
    path = shipping.ship(finished_run, "tiny", "python train.py --x", root, 20, 10)
    assert path == os.path.join(root, "tiny")
    assert os.listdir(root) == ["tiny"]  # No staging directory is left.
    with open(os.path.join(finished_run, train.METRICS_FILE)) as f:
        run_metrics = json.load(f)
    with open(os.path.join(path, "metrics.json")) as f:
        assert json.load(f) == run_metrics
    with open(os.path.join(path, "assets", "metadata.json")) as f:
        assert json.load(f)["training_metrics"]["test_nll"] == run_metrics["test_nll"]
    with open(os.path.join(path, shipping.SHIPPED_FILE)) as f:
        check = json.load(f)
    assert (check["split"], check["k"], check["command"]) == (
        "test[:20]",
        10,
        "python train.py --x",
    )
    # The check figure is the library's estimate on those images, seed 0; seed 1 gives another.
    config, model = train.load_run(finished_run)
    images = train.eval_data(config, "test[:20]")
    for seed in (0, 1):
        estimate = evaluation.estimate_log_likelihood(model, images, 10, seed=seed)
        assert check["nll_by_seed"][str(seed)] == pytest.approx(estimate.nll, rel=1e-6)
    assert check["nll"] == check["nll_by_seed"]["0"]
    assert check["monte_carlo_spread"] == pytest.approx(
        abs(check["nll_by_seed"]["0"] - check["nll_by_seed"]["1"])
    )
    readme = open(os.path.join(path, "README.md")).read()
    assert "python train.py --x" in readme and f"{run_metrics['test_nll']:.2f}" in readme


def test_ship_refuses_a_taken_name_and_the_size_budget(finished_run, tmp_path):
    root = str(tmp_path / "exported")
    shipping.ship(finished_run, "tiny", "cmd", root, 20, 10)
    with pytest.raises(ValueError, match="exists; ship under another name"):
        shipping.ship(finished_run, "tiny", "cmd", root, 20, 10)
    size = shipping.directory_bytes(os.path.join(root, "tiny"))
    with pytest.raises(ValueError, match="over the .* budget"):
        shipping.ship(finished_run, "second", "cmd", root, 20, 10, max_total_bytes=size + 1000)
    assert sorted(os.listdir(root)) == ["tiny"]


def test_a_fresh_process_scores_the_check_figure_and_a_wrong_k_does_not(finished_run, tmp_path):
    """The contract the shipped-model test relies on, with a negative control."""
    root = str(tmp_path / "exported")
    path = shipping.ship(finished_run, "tiny", "cmd", root, 20, 10)
    with open(os.path.join(path, shipping.SHIPPED_FILE)) as f:
        check = json.load(f)
    with open(os.path.join(finished_run, "config.json")) as f:
        data_dir = json.load(f)["data_dir"]

    def fresh_score(k):
        out = tmp_path / f"k{k}.csv"
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "scripts", "score.py"),
                f"--saved_model={path}",
                f"--input=tfds:{check['split']}",
                f"--data_dir={data_dir}",
                f"--k={k}",
                f"--output={out}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        rows = np.genfromtxt(out, delimiter=",", names=True)
        return -float(np.mean(rows["log_px"]))

    tolerance = shipping.check_tolerance(check)
    assert abs(fresh_score(check["k"]) - check["nll"]) < tolerance
    # Negative control: K = 1 (the ELBO) is a looser estimate, outside the tolerance.
    assert fresh_score(1) - check["nll"] > tolerance


def test_ship_script_fails_in_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "ship.py"),
            f"--run_dir={tmp_path}",
            "--name=x",
            "--command=c",
            f"--export_root={tmp_path / 'exported'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"ship.py: error: {tmp_path} holds no finished run (no metrics.json)"
    )
