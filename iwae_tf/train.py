"""Training and evaluation of one run: config in, metrics.json and history.csv out.

`train_and_evaluate(config, workdir)` is the whole job behind `scripts/train.py`: it builds
the input pipeline and the model, fits with Adam (epsilon 1e-4, as in Burda et al. 2016),
estimates the test NLL with `config.eval_k` importance samples, and writes

    workdir/metrics.json   the final figures (see `train_and_evaluate`)
    workdir/history.csv    per-epoch training and test-set metrics (Keras CSVLogger)
    workdir/backup/        the last epoch's checkpoint, so a killed run resumes (BackupAndRestore)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import tensorflow as tf
import tf_keras as keras
from absl import logging

from iwae_tf import data, evaluation, export, layers, networks, schedules
from iwae_tf.model import VARIANTS, ImportanceWeightedAutoencoder, build_model

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
CONFIG_FILE = "config.json"
EXPORT_ROOT = "exported"
STRATEGIES = ("default", "mirrored", "multi_worker")
WEIGHTS_PREFIX = os.path.join("weights", "model")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
      dataset: Dataset name, one of `iwae_tf.data.DATASETS`.
      model: Model variant, one of `iwae_tf.model.VARIANTS`.
      k: Importance samples per example in training.
      epochs: Passes over the training set.
      batch_size: Examples per training step.
      learning_rate: Adam learning rate.
      steps_per_epoch: Optional cap on the steps of each epoch.
      seed: Seed of everything random in the run: weight initialization, the training data's
        order and binarization, every draw of the train and validation steps (latents and
        uncertain weights, keyed by the step counter, see `iwae_tf.rng`) and the final test-NLL
        estimate. The test set's binarization has its own fixed seed, so that scores compare
        across runs.
      eval_k: Importance samples per example for the final test NLL.
      latent_sizes: Sizes of the stochastic layers, bottom first.
      hidden_sizes: Hidden layer sizes of each stochastic layer, bottom first.
      uncertain_layer_kind: Layer kind of uncertain networks (see `iwae_tf.layers`).
      init_scale: Initial posterior std of uncertain weights.
      kl_weight: Weight of the weight-prior KL per example (0: none).
      prior_scale: Std of the weight prior of that KL.
      train_split: tfds split to train on (slices like "train[:1000]" work).
      test_split: tfds split to evaluate on; binarized once, with a fixed seed.
      eval_batch_size: Examples per evaluation batch.
      data_dir: tfds data directory (None: the tfds default).
      jit_compile: XLA-compile the train step; None picks what measured faster on CPU: on
        for every variant (with `iwae_tf.rng` drawing the noise, see BENCHMARKS.md), off
        under tf.distribute, whose collectives XLA cannot compile on CPU.
      steps_per_execution: Train steps per tf.function call; more steps amortize Keras'
        per-call overhead, which dominates small models like the paper's.
      schedule: Learning-rate schedule: "constant", or "burda" (Burda et al.: 3^i passes at
        learning_rate * 10^(-i/7) for stage i = 0..stages-1; sets the number of epochs).
      stages: Stages of the "burda" schedule (8 in the paper, 3280 epochs in all).
      strategy: tf.distribute strategy: "default", "mirrored" or "multi_worker".
      export_dir: Where the trained SavedModel goes; None: exported/<name of workdir>, relative
        to the current directory.
    """

    dataset: str = "mnist"
    model: str = "iwae"
    k: int = 5
    epochs: int = 3
    batch_size: int = 20
    learning_rate: float = 1e-3
    steps_per_epoch: int | None = None
    seed: int = 0
    eval_k: int = 1000
    latent_sizes: tuple[int, ...] = (50,)
    hidden_sizes: tuple[tuple[int, ...], ...] = ((200, 200),)
    uncertain_layer_kind: str = "local_reparameterization"
    init_scale: float = layers.DEFAULT_INIT_SCALE
    kl_weight: float = 0.0
    prior_scale: float = 1.0
    train_split: str = "train"
    test_split: str = "test"
    eval_batch_size: int = 100
    data_dir: str | None = None
    jit_compile: bool | None = None
    steps_per_execution: int = 100
    schedule: str = "constant"
    stages: int = 8
    strategy: str = "default"
    export_dir: str | None = None

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        if self.model not in VARIANTS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {sorted(VARIANTS)}")
        if self.dataset not in data.DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; expected one of {sorted(data.DATASETS)}"
            )
        for name in (
            "k",
            "epochs",
            "batch_size",
            "eval_k",
            "eval_batch_size",
            "steps_per_execution",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if len(self.latent_sizes) != len(self.hidden_sizes):
            raise ValueError("latent_sizes and hidden_sizes need one entry per stochastic layer")
        if self.schedule not in schedules.SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; expected one of {schedules.SCHEDULES}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.uncertain_layer_kind not in layers.LAYER_KINDS:
            raise ValueError(
                f"unknown layer kind {self.uncertain_layer_kind!r}; "
                f"expected one of {layers.LAYER_KINDS}"
            )


def check_workdir(workdir: str, config: TrainConfig | None = None) -> None:
    """Fails early, before any training, if results cannot be written to `workdir`.

    A workdir holding an unfinished run of the same config is fine: training resumes there.

    Raises:
      FileExistsError: `workdir` holds a finished run, which must not be overwritten, or an
        unfinished run of a different config, which must not be resumed with this one.
      PermissionError: `workdir` cannot be created or written.
    """
    config_path = os.path.join(workdir, CONFIG_FILE)
    if config is not None and os.path.exists(config_path):
        with open(config_path) as f:
            previous = config_from_dict(json.load(f))
        if previous != config:
            changed = sorted(
                name
                for name, value in dataclasses.asdict(config).items()
                if dataclasses.asdict(previous).get(name) != value
            )
            raise FileExistsError(
                f"{workdir} holds an unfinished run with other settings ({', '.join(changed)}); "
                "rerun with the same flags to resume it, or choose another output dir"
            )
    if os.path.exists(os.path.join(workdir, METRICS_FILE)):
        raise FileExistsError(
            f"{workdir} already holds a finished run ({METRICS_FILE}); choose another output dir"
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"cannot create output dir {workdir}: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise PermissionError(f"output dir {workdir} is not writable")


def steps_per_epoch(config: TrainConfig, num_train_examples: int) -> int:
    """Steps of one epoch: the cap if set, else one pass, N // batch_size (the last partial
    batch of a pass is dropped). The schedule and the input stream both count in these."""
    return config.steps_per_epoch or num_train_examples // config.batch_size


def make_model(config: TrainConfig, num_train_examples: int) -> ImportanceWeightedAutoencoder:
    """Builds and compiles the model of `config`, its output bias set from the training data.

    Call it inside the distribution strategy's scope, so that variables are mirrored.
    """
    mean_image = data.mean_image(config.dataset, config.data_dir, split=config.train_split)
    model = build_model(
        config.model,
        num_importance_samples=config.k,
        latent_sizes=config.latent_sizes,
        hidden_sizes=config.hidden_sizes,
        output_bias=networks.output_bias_from_mean(mean_image),
        uncertain_layer_kind=config.uncertain_layer_kind,
        init_scale=config.init_scale,
        kl_weight=config.kl_weight,
        prior_scale=config.prior_scale,
        num_train_examples=num_train_examples,
        seed=config.seed,
    )
    # Built before fit, so that BackupAndRestore can restore into existing variables.
    model(tf.zeros([1, data.NUM_PIXELS]))
    jit_compile = config.jit_compile
    if jit_compile is None:
        # XLA on CPU cannot compile the cross-replica collectives of tf.distribute.
        jit_compile = not tf.distribute.has_strategy()
    learning_rate = schedules.make_learning_rate(
        config.schedule,
        config.learning_rate,
        steps_per_epoch(config, num_train_examples),
        config.stages,
    )
    model.compile(
        optimizer=schedules.make_optimizer(learning_rate),
        jit_compile=jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    return model


def train_and_evaluate(config: TrainConfig, workdir: str) -> dict[str, Any]:
    """Trains `config`'s model, estimates its test NLL and writes the results to `workdir`.

    Args:
      config: The run's settings.
      workdir: Output directory; must not hold a finished run.

    Returns:
      The metrics also written to workdir/metrics.json: test_nll (positive nats, mean over
      the test set of -log p(x) estimated with eval_k samples), test_nll_stderr,
      test_negative_elbo, the final training and test bounds at the training k, train_steps,
      train_seconds (wall time of fit only) and the config.
    """
    config.validate()
    # Created first: MultiWorkerMirroredStrategy must exist before other TensorFlow work.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    if not chief:
        # Workers other than the chief train in lockstep but keep their files to themselves.
        workdir = os.path.join(workdir, f"worker_{strategy.cluster_resolver.task_id}")
    check_workdir(workdir, config)
    export_dir = config.export_dir or os.path.join(
        EXPORT_ROOT, os.path.basename(workdir.rstrip("/"))
    )
    if chief and os.path.isdir(export_dir) and os.listdir(export_dir):
        raise FileExistsError(f"export dir {export_dir} is not empty; choose another --export_dir")
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    keras.utils.set_random_seed(config.seed)

    num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
    data_position = DataPosition()
    train_ds = data.train_dataset(
        config.dataset,
        config.batch_size,
        seed=config.seed,
        split=config.train_split,
        data_dir=config.data_dir,
        start_step=data_position.step,
    )
    test_ds = data.eval_dataset(
        config.dataset, config.test_split, config.eval_batch_size, data_dir=config.data_dir
    )
    if config.strategy == "multi_worker":
        train_ds, test_ds = (_shard_by_data(ds) for ds in (train_ds, test_ds))
    with strategy.scope():
        model = make_model(config, num_train)
    epochs = schedules.num_epochs(config.schedule, config.epochs, config.stages)
    logging.info(
        "Training %s (k=%d) on %s: %d examples, %d epochs of batch %d, %d replica(s).",
        config.model,
        config.k,
        config.dataset,
        num_train,
        epochs,
        config.batch_size,
        strategy.num_replicas_in_sync,
    )
    callbacks = [
        LearningRateLogger(),
        keras.callbacks.CSVLogger(os.path.join(workdir, HISTORY_FILE), append=True),
        keras.callbacks.BackupAndRestore(os.path.join(workdir, BACKUP_DIR)),
        data_position,  # After BackupAndRestore, which restores the step it reads.
    ]
    start = time.perf_counter()
    history = model.fit(
        train_ds,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch(config, num_train),
        validation_data=test_ds,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    train_seconds = time.perf_counter() - start
    train_steps = int(model.optimizer.iterations.numpy())
    model.save_weights(os.path.join(workdir, WEIGHTS_PREFIX))

    start = time.perf_counter()
    estimates = evaluation.estimate_log_likelihood(
        model, test_ds, num_samples=config.eval_k, seed=config.seed
    )
    eval_seconds = time.perf_counter() - start

    last = {name: values[-1] for name, values in history.history.items()}
    metrics = {
        "model": config.model,
        "dataset": config.dataset,
        "k": config.k,
        "epochs": epochs,
        "eval_k": config.eval_k,
        "layer_types": layer_types(config.model, config.uncertain_layer_kind),
        "test_nll": estimates.nll,
        "test_nll_stderr": estimates.nll_stderr,
        "test_negative_elbo": estimates.negative_elbo,
        "num_test_examples": int(len(estimates.log_px)),
        "train_loss": float(last.get("loss", float("nan"))),
        "train_iwae_bound": float(last.get("iwae_bound", float("nan"))),
        "test_iwae_bound": float(last.get("val_iwae_bound", float("nan"))),
        "train_steps": train_steps,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "config": dataclasses.asdict(config),
        "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__},
    }
    if chief:
        metrics["export_dir"] = export_dir
        export.export_saved_model(model, export_dir, export.export_metadata(config, metrics))
    # Written last: metrics.json marks the run as finished.
    with open(os.path.join(workdir, METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2)
    logging.info(
        "%s k=%d on %s: test NLL %.2f +- %.2f nats (eval_k=%d); %d steps in %.0f s.",
        config.model,
        config.k,
        config.dataset,
        estimates.nll,
        estimates.nll_stderr,
        config.eval_k,
        train_steps,
        train_seconds,
    )
    return metrics


def layer_types(variant: str, uncertain_layer_kind: str) -> dict[str, str]:
    """The `iwae_tf.layers` kind of the encoder's and the decoder's dense layers."""
    spec = VARIANTS[variant]
    return {
        "encoder": uncertain_layer_kind if spec.uncertain_encoder else "deterministic",
        "decoder": uncertain_layer_kind if spec.uncertain_decoder else "deterministic",
    }


class DataPosition(keras.callbacks.Callback):
    """Starts the training input at the optimizer's step when `fit` begins.

    `data.train_dataset(..., start_step=DataPosition().step)` reads `step` when `fit` makes its
    iterator, which happens after every callback's `on_train_begin`; placed after
    `BackupAndRestore`, this callback has by then set it to the restored step count. A run
    killed and resumed thus reads the batches, and (with the step-keyed noise of the train
    step) draws the noise, that the uninterrupted run would have.
    """

    def __init__(self) -> None:
        super().__init__()
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_position")

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.step.assign(tf.cast(self.model.optimizer.iterations, tf.int64))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to each epoch's logs (and history.csv)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(
                keras.backend.get_value(self.model.optimizer.learning_rate)
            )


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy called `name` (see `STRATEGIES`).

    "mirrored" replicates over the local devices (all GPUs, else the CPU); "multi_worker"
    over the workers named by the TF_CONFIG environment variable, see BUILD.md.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multi_worker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's results (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # The pipelines read few files, so per-file sharding would leave workers without data.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuilds a TrainConfig from its JSON form (lists back to tuples)."""
    values = dict(values)
    values["latent_sizes"] = tuple(values["latent_sizes"])
    values["hidden_sizes"] = tuple(tuple(h) for h in values["hidden_sizes"])
    return TrainConfig(**values)


def load_run(workdir: str) -> tuple[TrainConfig, ImportanceWeightedAutoencoder]:
    """The config and trained model of a finished run of `train_and_evaluate`.

    Raises:
      FileNotFoundError: `workdir` holds no finished run.
    """
    config_path = os.path.join(workdir, CONFIG_FILE)
    weights = os.path.join(workdir, WEIGHTS_PREFIX)
    if not os.path.exists(config_path) or not os.path.exists(weights + ".index"):
        raise FileNotFoundError(
            f"{workdir} holds no finished training run ({CONFIG_FILE}, weights)"
        )
    with open(config_path) as f:
        config = config_from_dict(json.load(f))
    num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
    model = make_model(config, num_train)
    model.load_weights(weights).expect_partial()
    return config, model
