"""End-to-end tests of the training job: the library entry point and scripts/train.py."""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from iwae_tf import data
from iwae_tf.config import TrainConfig
from iwae_tf.train import (
    BestWeights,
    ResumableEarlyStopping,
    check_workdir,
    load_run,
    make_model,
    train_and_evaluate,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO, "scripts", "train.py")


def test_short_fit_on_mnist_subset_improves_the_test_bound(mnist_data_dir):
    config = TrainConfig(k=5, train_split="train[:2000]", data_dir=mnist_data_dir)
    keras.utils.set_random_seed(0)
    model = make_model(config, num_train_examples=2000)
    test = data.eval_dataset("mnist", "test[:500]", 100, data_dir=mnist_data_dir)
    before = model.evaluate(test, verbose=0, return_dict=True)["iwae_bound"]
    model.fit(
        data.train_dataset("mnist", 20, 0, mnist_data_dir, split="train[:2000]"),
        epochs=2,
        steps_per_epoch=100,
        verbose=0,
    )
    after = model.evaluate(test, verbose=0, return_dict=True)["iwae_bound"]
    # The output bias starts the model at the mean image (about -206 nats); two epochs on
    # 2000 images must learn real structure, tens of nats of it.
    assert before < -180, before
    assert after > before + 40, (before, after)


def test_train_and_evaluate_writes_metrics_and_history(mnist_data_dir, tmp_path):
    config = TrainConfig(
        model="vae",
        k=2,
        epochs=2,
        steps_per_epoch=10,
        eval_k=20,
        train_split="train[:400]",
        test_split="test[:60]",
        eval_batch_size=25,
        data_dir=mnist_data_dir,
        export_dir=str(tmp_path / "export"),
        tensorboard=False,
    )
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    tmp_path = tmp_path / "run"
    assert not (tmp_path / "tensorboard").exists()  # Asked for none.
    with open(tmp_path / "metrics.json") as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(metrics))
    assert written["train_steps"] == 20
    assert written["num_test_examples"] == 60
    assert (written["model"], written["dataset"], written["k"], written["eval_k"]) == (
        "vae",
        "mnist",
        2,
        20,
    )
    # An NLL estimate is at most the negative ELBO over the same samples.
    assert 50 < written["test_nll"] <= written["test_negative_elbo"] < 800
    assert 0 < written["test_nll_stderr"] < 20
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "iwae_bound", "elbo", "val_iwae_bound"} <= set(rows[0])
    # A finished run is never overwritten.
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        train_and_evaluate(config, str(tmp_path))


def test_check_workdir_rejects_unwritable_paths(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="cannot create output dir"):
        check_workdir(str(blocker / "run"))


def event_tags(log_dir):
    """{run: {tag: number of events}} of the TensorBoard event files under log_dir."""
    tags = {}
    for path in log_dir.rglob("events.out.tfevents.*"):
        run = path.parent.relative_to(log_dir).as_posix()
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(run, {}).setdefault(value.tag, 0)
                tags[run][value.tag] += 1
    return tags


def test_tensorboard_holds_scalars_posterior_scales_and_image_grids(mnist_data_dir, tmp_path):
    config = TrainConfig(
        model="iwaeu",
        k=2,
        epochs=3,
        steps_per_epoch=4,
        steps_per_execution=4,
        eval_k=2,
        latent_sizes=(4,),
        hidden_sizes=((16,),),
        train_split="train[:200]",
        test_split="test[:40]",
        eval_batch_size=20,
        data_dir=mnist_data_dir,
        export_dir=str(tmp_path / "export"),
        image_summary_epochs=2,
    )
    train_and_evaluate(config, str(tmp_path / "run"))
    tags = event_tags(tmp_path / "run" / "tensorboard")
    for name in ("loss", "iwae_bound", "elbo", "learning_rate"):
        assert tags["train"][f"epoch_{name}"] == 3, tags["train"]
    assert tags["validation"]["epoch_iwae_bound"] == 3
    # Every uncertain dense layer, encoder and decoder: 2 per network here.
    scales = sorted(t for t in tags["model"] if t.startswith("posterior_scale/"))
    assert scales == sorted(
        f"posterior_scale/{path}/{stat}"
        for path in (
            "encoder/q_h1/hidden_0",
            "encoder/q_h1/gaussian_head",
            "decoder/p_x/hidden_0",
            "decoder/p_x/output_head",
        )
        for stat in ("mean", "min", "max")
    )
    assert all(tags["model"][t] == 3 for t in scales)
    # Images every 2 epochs and at the last: epochs 2 and 3.
    assert tags["model"]["prior_samples"] == 2 and tags["model"]["reconstructions"] == 2


def run_script(*args):
    return subprocess.run(
        [sys.executable, TRAIN_SCRIPT, *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model=iwea"], "--model"),
        (["--k=0"], "--k"),
        (["--epochs=-1"], "--epochs"),
        (["--dataset=cifar"], "unknown dataset 'cifar'"),
        (["--likelihood=gaussian"], "--binarization=none"),
        (["--binarization=none"], "--likelihood=gaussian"),
        (["--architecture=conv", "--model=iwaeu"], "--uncertain_layer_kind=flipout"),
        (["--architecture=convnet"], "--architecture"),
    ],
)
def test_script_rejects_bad_flags_with_one_line(args, message, tmp_path):
    result = run_script(*args, f"--output_dir={tmp_path}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error:" in line.lower()]
    assert errors and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_script_rejects_unwritable_output_dir(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = run_script(f"--output_dir={tmp_path / 'a_file' / 'run'}", "--epochs=1")
    assert result.returncode != 0
    assert "train.py: error: cannot create output dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_script_end_to_end_writes_well_formed_metrics(mnist_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_script(
        "--model=iwae",
        "--k=3",
        "--epochs=1",
        "--steps_per_epoch=15",
        "--eval_k=10",
        "--train_split=train[:300]",
        "--test_split=test[:40]",
        f"--data_dir={mnist_data_dir}",
        f"--output_dir={out}",
        f"--export_dir={tmp_path / 'export'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_nll",
        "test_nll_stderr",
        "eval_k",
        "k",
        "model",
        "dataset",
        "epochs",
        "train_steps",
        "train_seconds",
    ):
        assert key in metrics
    assert metrics["train_steps"] == 15 and metrics["eval_k"] == 10 and metrics["k"] == 3
    assert math.isfinite(metrics["test_nll"]) and metrics["test_nll"] > 0
    assert metrics["train_seconds"] > 0
    assert f"test NLL {metrics['test_nll']:.2f}" in result.stdout
    assert (out / "history.csv").exists()
    assert (tmp_path / "export" / "saved_model.pb").exists()
    assert metrics["export_dir"] == str(tmp_path / "export")
    assert metrics["layer_types"] == {"encoder": "deterministic", "decoder": "deterministic"}
    # A clean log: the run's own lines on stdout, and nothing from TensorFlow, tfds or XLA
    # (C++ INFO lines, deprecation warnings, "Ignoring Assert operator") on stderr.
    assert result.stderr.strip() == "", result.stderr[-3000:]
    assert result.stdout.startswith("Training iwae (k=3) on mnist train[:300], 1 epochs")


def test_killed_run_resumes_at_its_last_epoch_with_the_schedule_in_place(mnist_data_dir, tmp_path):
    import signal
    import time

    from iwae_tf import schedules

    out = tmp_path / "run"
    args = [
        sys.executable, TRAIN_SCRIPT, "--model=iwae", "--k=2", "--schedule=burda", "--stages=2",
        "--steps_per_epoch=150", "--steps_per_execution=10", "--eval_k=4",
        "--train_split=train[:3000]", "--test_split=test[:40]", f"--data_dir={mnist_data_dir}",
        f"--output_dir={out}", f"--export_dir={tmp_path / 'export'}",
    ]  # fmt: skip
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    history = out / "history.csv"
    deadline = time.time() + 300
    # The backup is written after the history row of the same epoch.
    while time.time() < deadline and first.poll() is None:
        rows = list(csv.DictReader(history.open())) if history.exists() else []
        if rows and (out / "backup").exists() and any((out / "backup").rglob("checkpoint")):
            break
        time.sleep(0.02)
    assert first.poll() is None, "the run ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    epochs_before_kill = len(list(csv.DictReader(history.open())))
    assert 1 <= epochs_before_kill < 4
    assert not (out / "metrics.json").exists()

    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["train_steps"] == 4 * 150
    rows = list(csv.DictReader(history.open()))
    epochs = [int(r["epoch"]) for r in rows]
    # Every epoch once; the restart did not begin again at epoch 0 (a row may repeat only for
    # the epoch in flight at the kill).
    assert sorted(set(epochs)) == [0, 1, 2, 3] and epochs.count(0) == 1, epochs
    expected = [schedules.burda_learning_rate(e, 1e-3, 2) for e in epochs]
    got = [float(r["learning_rate"]) for r in rows]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert "Epoch 1/4" not in second.stdout + second.stderr

    # The resumed run ends where an uninterrupted one does: the data stream and the noise are
    # keyed by the restored step, so weights and Adam's slots come out bit-identical (the same
    # ops on the same inputs in one process configuration; XLA on, as users run).
    whole = tmp_path / "whole"
    args_whole = [a for a in args if not a.startswith(("--output_dir", "--export_dir"))]
    args_whole += [f"--output_dir={whole}", f"--export_dir={tmp_path / 'export_whole'}"]
    uninterrupted = subprocess.run(args_whole, capture_output=True, text=True, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    resumed, reference = _checkpoint_tensors(out), _checkpoint_tensors(whole)
    assert resumed.keys() == reference.keys()
    slots = [name for name in resumed if name.startswith("optimizer/_variables/")]
    assert len(slots) >= 2 * 12 and len(resumed) > len(slots) + 12, sorted(resumed)
    for name in resumed:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)


def _checkpoint_tensors(run_dir):
    """Every saved tensor of a finished run: weights, optimizer slots and step counter."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run_dir / "weights" / "model"))
    names = [n for n in reader.get_variable_to_shape_map() if n.endswith("VARIABLE_VALUE")]
    return {n: reader.get_tensor(n) for n in names}


def test_resuming_with_other_settings_is_refused(tmp_path):
    config = TrainConfig(k=2, epochs=1)
    check_workdir(str(tmp_path), config)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    check_workdir(str(tmp_path), config)  # Same settings: resumes.
    with pytest.raises(FileExistsError, match=r"other settings \(k\)"):
        check_workdir(str(tmp_path), dataclasses.replace(config, k=3))


@pytest.mark.parametrize(
    "settings",
    [
        dict(model="iwaeu", objective="rws", estimator="dreg"),
        dict(model="iwae", objective="vr", alpha=0.5, estimator="dreg"),
        dict(model="iwaeu_rec", objective="piwae", num_groups=2, estimator="stl"),
    ],
    ids=lambda s: f"{s['model']}-{s['objective']}-{s['estimator']}",
)
def test_objectives_and_estimators_train_export_and_score_with_two_layers(
    settings, mnist_data_dir, tmp_path
):
    from iwae_tf.serving import load_exported

    config = TrainConfig(
        k=4,
        latent_sizes=(6, 4),
        hidden_sizes=((32,), (16,)),
        epochs=1,
        steps_per_epoch=20,
        eval_k=50,
        train_split="train[:400]",
        test_split="test[:100]",
        eval_batch_size=50,
        data_dir=mnist_data_dir,
        export_dir=str(tmp_path / "export"),
        tensorboard=False,
        **settings,
    )
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    assert 50 < metrics["test_nll"] <= metrics["test_negative_elbo"] < 800
    exported = load_exported(str(tmp_path / "export"))
    parameters = exported.metadata["objective_parameters"]
    assert parameters["name"] == settings["objective"]
    assert exported.metadata["estimator"] == settings["estimator"]
    assert parameters.get("alpha") == settings.get("alpha", 0.0)
    # The export scores the evaluation's images like the run's own estimate, up to Monte
    # Carlo error (another seed), well inside the standard error over images.
    x = np.concatenate(list(data.eval_dataset("mnist", "test[:100]", 50, 0, mnist_data_dir)))
    nll = -np.mean(exported.score(x, k=50, seed=1)["log_px"])
    assert abs(nll - metrics["test_nll"]) < metrics["test_nll_stderr"], (nll, metrics)


# Beyond binarized MNIST: continuous data, a Gaussian likelihood, conv networks, other shapes.


def small_conv_config(tmp_path, **settings):
    values = dict(
        k=3,
        latent_sizes=(4,),
        hidden_sizes=((32,),),
        architecture="conv",
        conv_filters=(8, 16),
        epochs=1,
        steps_per_epoch=20,
        eval_k=20,
        train_split="train[:200]",
        test_split="test[:40]",
        eval_batch_size=20,
        export_dir=str(tmp_path / "export"),
        tensorboard=False,
    )
    values.update(settings)
    return TrainConfig(**values)


def test_gaussian_conv_iwaeu_on_continuous_mnist_trains_exports_and_scores(
    mnist_data_dir, tmp_path
):
    from iwae_tf.serving import load_exported

    config = small_conv_config(
        tmp_path,
        model="iwaeu",
        uncertain_layer_kind="flipout",
        binarization="none",
        likelihood="gaussian",
        data_dir=mnist_data_dir,
        tensorboard=True,
    )
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    assert math.isfinite(metrics["test_nll"])
    assert metrics["test_nll"] <= metrics["test_negative_elbo"] + 1e-3
    exported = load_exported(str(tmp_path / "export"))
    assert exported.metadata["likelihood"] == {"name": "gaussian", "min_std": 0.01}
    assert exported.metadata["architecture"]["data_shape"] == [28, 28, 1]
    assert exported.metadata["architecture"]["conv_filters"] == [8, 16]
    assert exported.metadata["layer_types"] == {"encoder": "flipout", "decoder": "flipout"}
    # The export scores the test intensities (not binarized) like the run's estimate.
    test = data.eval_dataset("mnist", "test[:40]", 20, 0, mnist_data_dir, binarization="none")
    x = np.concatenate(list(test))
    assert x.shape == (40, 28, 28, 1) and len(np.unique(x)) > 2
    log_px = exported.score(x, k=20, seed=1)["log_px"]
    assert abs(-np.mean(log_px) - metrics["test_nll"]) < metrics["test_nll_stderr"]
    # Flattened rows are the same images.
    np.testing.assert_array_equal(
        exported.score(x.reshape(40, 784), k=20, seed=1)["log_px"], log_px
    )
    draw = exported.sample(3, seed=0)
    assert set(draw) == {"images", "mean", "std", "z"}
    assert draw["images"].shape == draw["mean"].shape == (3, 28, 28, 1)
    assert (draw["std"] >= 0.01 * (1 - 1e-6)).all()
    assert exported.decode(draw["z"]).shape == (3, 28, 28, 1)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        exported.score(x * 2, k=2)
    with pytest.raises(ValueError, match="binarize=True is for Bernoulli models"):
        exported.score(x, k=2, binarize=True)
    with pytest.raises(ValueError, match="x must have shape \\[N, 28, 28, 1\\]"):
        exported.score(x[:, :, :20], k=2)


@pytest.mark.parametrize(
    "dataset, shape, architecture",
    [("fashion_mnist", (28, 28, 1), "mlp"), ("cifar10", (32, 32, 3), "conv")],
)
def test_trains_on_a_mocked_tfds_dataset_of_its_own_shape(
    dataset, shape, architecture, tmp_path, monkeypatch
):
    import tensorflow_datasets as tfds

    from iwae_tf.data import reachability
    from iwae_tf.serving import load_exported

    monkeypatch.setattr(reachability, "unreachable_reason", lambda url: None)
    config = small_conv_config(
        tmp_path,
        dataset=dataset,
        architecture=architecture,
        model="iwaeu_rec",
        uncertain_layer_kind="flipout",
        train_split="train",
        test_split="test",
        steps_per_epoch=5,
        eval_k=5,
        eval_batch_size=10,
        tensorboard=True,
    )
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        metrics = train_and_evaluate(config, str(tmp_path / "run"))
        x = np.concatenate(list(data.eval_dataset(dataset, "test", 10)))
    assert x.shape == (30, *shape)
    assert 0 < metrics["test_nll"] <= metrics["test_negative_elbo"]
    exported = load_exported(str(tmp_path / "export"))
    assert exported.data_shape == shape and exported.binary
    log_px = exported.score(x, k=5, seed=1)["log_px"]
    assert abs(-np.mean(log_px) - metrics["test_nll"]) < 3 * metrics["test_nll_stderr"]
    assert exported.sample(2, seed=0)["images"].shape == (2, *shape)


def select_best_config(mnist_data_dir: str, tmp_path, **overrides) -> TrainConfig:
    """A tiny run validated on train[400:500] that evaluates its best epoch."""
    settings = dict(
        k=2,
        steps_per_epoch=10,
        eval_k=5,
        latent_sizes=(4,),
        hidden_sizes=((16,),),
        train_split="train[:400]",
        validation_split="train[400:500]",
        select_best=True,
        test_split="test[:50]",
        eval_batch_size=50,
        data_dir=mnist_data_dir,
        export_dir=str(tmp_path / "export"),
        tensorboard=False,
    )
    return TrainConfig(**{**settings, **overrides})


def test_select_best_evaluates_the_epoch_with_the_best_validation_bound(mnist_data_dir, tmp_path):
    config = select_best_config(mnist_data_dir, tmp_path, epochs=3)
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    bounds = [float(r["val_iwae_bound"]) for r in rows]
    assert metrics["selected_epoch"] == int(np.argmax(bounds))
    assert metrics["validation_iwae_bound"] == pytest.approx(max(bounds), rel=1e-6)
    assert metrics["test_iwae_bound"] is None  # Validation was not on the test set.
    # The history's val_ columns are the validation split's: its bound, recomputed.
    _, model = load_run(str(tmp_path / "run"))
    validation = data.eval_dataset("mnist", "train[400:500]", 50, data_dir=mnist_data_dir)
    recomputed = model.evaluate(validation, return_dict=True, verbose=0)["iwae_bound"]
    assert recomputed == pytest.approx(max(bounds), abs=3.0)  # Other draws, same weights.
    with pytest.raises(ValueError, match="select_best picks an epoch"):
        TrainConfig(select_best=True).validate()


def simulated_stop(bounds: list[float], patience: int) -> int | None:
    """The 0-based epoch at which early stopping with `patience` ends training on these
    validation bounds (first e with e - argmax_{e' <= e} bound(e') = patience), or None."""
    best_epoch = 0
    for epoch, bound in enumerate(bounds):
        if bound > bounds[best_epoch]:
            best_epoch = epoch
        elif epoch - best_epoch >= patience:
            return epoch
    return None


def test_early_stopping_stops_a_resumed_run_where_an_uninterrupted_one_stops(tmp_path):
    steps_per_epoch = 7
    bounds = [-100.0, -90.0, -95.0, -94.0, -93.0, -92.0, -91.0]
    assert simulated_stop(bounds, 3) == 4

    def run(prefix, stopper_for, epochs, first_epoch=0):
        model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
        model.compile(optimizer="sgd", loss="mse")
        model.optimizer.iterations.assign(first_epoch * steps_per_epoch)
        best = BestWeights(prefix)
        stopper = stopper_for(best)
        for callback in (best, stopper):
            callback.set_model(model)
            callback.on_train_begin()
        for epoch in epochs:
            for callback in (best, stopper):
                callback.on_epoch_end(epoch, {"val_iwae_bound": bounds[epoch]})
            if model.stop_training:
                return epoch
        return None

    def resumable(best):
        return ResumableEarlyStopping(best, 3, steps_per_epoch)

    uninterrupted = run(str(tmp_path / "a" / "m"), resumable, range(7))
    # Killed after epoch 2, resumed by a new process with new callbacks.
    run(str(tmp_path / "b" / "m"), resumable, range(3))
    resumed = run(str(tmp_path / "b" / "m"), resumable, range(3, 7), first_epoch=3)
    assert uninterrupted == resumed == 4
    # Negative control: Keras' EarlyStopping forgets its count and best on resume, takes
    # epoch 3's -94 for an improvement, and trains on past epoch 4.
    run(str(tmp_path / "c" / "m"), resumable, range(3))
    plain = run(
        str(tmp_path / "c" / "m"),
        lambda best: keras.callbacks.EarlyStopping("val_iwae_bound", mode="max", patience=3),
        range(3, 7),
        first_epoch=3,
    )
    assert plain != 4


def test_a_run_with_early_stopping_ends_where_its_history_says_and_evaluates_the_best(
    mnist_data_dir, tmp_path
):
    # A rate this high makes the validation bound wander, so that patience 1 ends the run.
    config = select_best_config(
        mnist_data_dir, tmp_path, epochs=8, learning_rate=0.05, early_stopping_patience=1
    )
    metrics = train_and_evaluate(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "history.csv") as f:
        bounds = [float(r["val_iwae_bound"]) for r in csv.DictReader(f)]
    stop = simulated_stop(bounds, 1)
    assert stop is not None and stop < config.epochs - 1, bounds
    assert metrics["stopped_epoch"] == stop and len(bounds) == stop + 1
    assert metrics["selected_epoch"] == int(np.argmax(bounds))
    with pytest.raises(ValueError, match="early_stopping_patience stops on the validation"):
        TrainConfig(early_stopping_patience=5).validate()


def test_best_weights_keep_the_best_epoch_across_a_resume(tmp_path):
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    model.compile(loss="mse")
    prefix = str(tmp_path / "best" / "model")

    def run_epochs(callback, values, first_epoch=0):
        callback.set_model(model)
        callback.on_train_begin()
        for epoch, value in enumerate(values, first_epoch):
            model.layers[0].kernel.assign([[float(epoch)]])
            callback.on_epoch_end(epoch, {"val_iwae_bound": value})

    run_epochs(BestWeights(prefix), [-100.0, -90.0, -95.0])
    # Resumed: a new callback (a new process) sees a worse epoch and keeps epoch 1.
    resumed = BestWeights(prefix)
    run_epochs(resumed, [-92.0], first_epoch=3)
    state = resumed.restore()
    assert state["epoch"] == 1 and state["logs"]["val_iwae_bound"] == -90.0
    assert model.layers[0].kernel.numpy()[0, 0] == 1.0
    # Negative control: Keras' ModelCheckpoint forgets its best on resume and overwrites it.
    plain = keras.callbacks.ModelCheckpoint(
        prefix, monitor="val_iwae_bound", mode="max", save_best_only=True, save_weights_only=True
    )
    run_epochs(plain, [-92.0], first_epoch=3)
    model.load_weights(prefix)
    assert model.layers[0].kernel.numpy()[0, 0] == 3.0
