"""Training and evaluation of one run: config in, metrics.json and history.csv out.

`train_and_evaluate(config, workdir)` is the whole job behind `scripts/train.py`: it builds
the input pipeline and the model, fits with Adam (epsilon 1e-4, as in Burda et al. 2016),
estimates the test NLL with `config.eval_k` importance samples, and writes

    workdir/metrics.json   the final figures (see `train_and_evaluate`); written last, it
                           marks the run as finished
    workdir/history.csv    per-epoch training and test-set metrics (Keras CSVLogger)
    workdir/backup/        the last epoch's checkpoint, so a killed run resumes (BackupAndRestore)
    workdir/weights/, workdir/training.json
                           the trained weights and fit's figures, written when training ends,
                           so that a run killed later (evaluating, exporting) resumes there
    workdir/tensorboard/   TensorBoard summaries (`iwae_tf.summaries`), unless config.tensorboard
                           is off: `tensorboard --logdir workdir/tensorboard`

**Kills and reruns.** Every file is written whole or not at all (`iwae_tf.files`), and the
SavedModel is staged and renamed (`iwae_tf.export`). Rerunning a killed run with the same
config resumes it: from the last finished epoch while training, and from the saved weights
once training has ended (evaluation and export are redone). history.csv drops the rows of
epochs the backup did not keep, so a resumed run lists each epoch once.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import tensorflow as tf
import tf_keras as keras
from absl import logging

from iwae_tf import data, evaluation, export, files, likelihoods, schedules, serving, summaries
from iwae_tf.config import STRATEGIES, TrainConfig
from iwae_tf.model import VARIANTS, ImportanceWeightedAutoencoder, build_model

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
CONFIG_FILE = "config.json"
TRAINING_FILE = "training.json"
BEST_PREFIX = os.path.join("best", "model")
EXPORT_ROOT = "exported"
WEIGHTS_PREFIX = os.path.join("weights", "model")


def check_workdir(workdir: str, config: TrainConfig | None = None) -> None:
    """Fails early, before any training, if results cannot be written to `workdir`.

    A workdir holding an unfinished run of the same config is fine: training resumes there.

    Raises:
      FileExistsError: `workdir` holds a finished run, which must not be overwritten, or an
        unfinished run of a different config, which must not be resumed with this one.
      PermissionError: `workdir` cannot be created or written.
    """
    if os.path.exists(os.path.join(workdir, METRICS_FILE)):
        raise FileExistsError(
            f"{workdir} already holds a finished run ({METRICS_FILE}); choose another output dir"
        )
    config_path = os.path.join(workdir, CONFIG_FILE)
    if config is not None and os.path.exists(config_path):
        with open(config_path) as f:
            previous = TrainConfig.from_dict(json.load(f))
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


def make_model(
    config: TrainConfig, num_train_examples: int | None = None
) -> ImportanceWeightedAutoencoder:
    """Builds and compiles the model of `config`, its output bias set from the training data.

    The one way to get a model for a dataset: its data shape comes from the dataset's image
    feature, the decoder's output bias starts at the logit of the training split's mean image,
    as in Burda et al., and the optimizer, schedule and XLA setting are those `config` trains
    with. Call it inside a distribution strategy's
    scope, so that variables are mirrored.

    Args:
      config: The run's settings (dataset, train_split, architecture, k, ...).
      num_train_examples: Size of the training split, if known (it scales the weight KL and
        the schedule's epochs); counted from the data otherwise.

    Returns:
      A built, compiled model, ready for `model.fit`.
    """
    if num_train_examples is None:
        num_train_examples = data.num_examples(config.dataset, config.train_split, config.data_dir)
    mean_image = data.mean_image(config.dataset, config.data_dir, split=config.train_split)
    likelihood = likelihoods.get(config.likelihood, config.min_std)
    model = build_model(
        config.model,
        num_importance_samples=config.k,
        latent_sizes=config.latent_sizes,
        hidden_sizes=config.hidden_sizes,
        data_shape=mean_image.shape,
        output_bias=likelihood.output_bias(mean_image),
        likelihood=likelihood,
        conv_filters=config.network_conv_filters(),
        uncertain_layer_kind=config.uncertain_layer_kind,
        init_scale=config.init_scale,
        kl_weight=config.kl_weight,
        prior_scale=config.prior_scale,
        num_train_examples=num_train_examples,
        seed=config.seed,
        objective=config.training_objective(),
        estimator=config.estimator,
    )
    # Built before fit, so that BackupAndRestore can restore into existing variables.
    model(tf.zeros([1, *mean_image.shape]))
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
    # An unknown dataset, or tensors too large for it, fail before any write.
    config.check_tensor_sizes(data.image_shape(config.dataset, config.data_dir))
    # Created first: MultiWorkerMirroredStrategy must exist before other TensorFlow work.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    if not chief:
        # Workers other than the chief train in lockstep but keep their files to themselves.
        workdir = os.path.join(workdir, f"worker_{strategy.cluster_resolver.task_id}")
    # Split names with typos, and empty splits, fail before any write.
    num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
    counts = {config.train_split: num_train}
    for split in filter(None, [config.test_split, config.validation_split]):
        counts[split] = data.num_examples(config.dataset, split, config.data_dir)
    for split, count in counts.items():
        if count == 0:
            raise ValueError(f"split {split!r} of {config.dataset!r} holds no examples")
    check_workdir(workdir, config)
    export_dir = config.export_dir or os.path.join(
        EXPORT_ROOT, os.path.basename(workdir.rstrip("/"))
    )
    if chief:
        files.check_creatable_dir(export_dir, "export dir")
        if (
            os.path.isdir(export_dir)
            and os.listdir(export_dir)
            and not _exported_by(export_dir, config)
        ):
            raise FileExistsError(
                f"export dir {export_dir} is not empty; choose another --export_dir"
            )
    files.write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())
    keras.utils.set_random_seed(config.seed)

    data_position = DataPosition()
    train_ds = data.train_dataset(
        config.dataset,
        config.batch_size,
        seed=config.seed,
        split=config.train_split,
        data_dir=config.data_dir,
        start_step=data_position.step,
        binarization=config.binarization,
    )
    test_ds = eval_data(config, config.test_split)
    validation_ds = (
        eval_data(config, config.validation_split) if config.validation_split else test_ds
    )
    if config.strategy == "multi_worker":
        train_ds, test_ds, validation_ds = (
            _shard_by_data(ds) for ds in (train_ds, test_ds, validation_ds)
        )
    with strategy.scope():
        model = make_model(config, num_train)
    epochs = schedules.num_epochs(config.schedule, config.epochs, config.stages)
    training_path = os.path.join(workdir, TRAINING_FILE)
    if os.path.exists(training_path):  # Killed after training: evaluate the saved weights.
        with open(training_path) as f:
            training = json.load(f)
        model.load_weights(os.path.join(workdir, WEIGHTS_PREFIX)).expect_partial()
        logging.info("Training had finished in %s; evaluating its weights.", workdir)
    else:
        training = fit(
            model, config, workdir, train_ds, validation_ds, test_ds, num_train, data_position
        )
        model.save_weights(os.path.join(workdir, WEIGHTS_PREFIX))
        if chief:
            files.write_json(training_path, training)
    start = time.perf_counter()
    estimates = evaluation.estimate_log_likelihood(
        model, test_ds, num_samples=config.eval_k, seed=config.seed
    )
    eval_seconds = time.perf_counter() - start

    # The figures of the evaluated weights: the selected epoch's (the last, unless select_best).
    last = training["selected_epoch_logs"]
    validation_bound = float(last.get("val_iwae_bound", float("nan")))
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
        # The per-epoch validation ran on the test split unless a validation split was given.
        "test_iwae_bound": None if config.validation_split else validation_bound,
        "validation_iwae_bound": validation_bound,
        "selected_epoch": training["selected_epoch"],
        # 0-based epoch at which early_stopping_patience ended training; None: it trained all.
        "stopped_epoch": training.get("stopped_epoch"),
        "train_steps": training["train_steps"],
        "train_seconds": training["train_seconds"],
        "eval_seconds": eval_seconds,
        "config": config.to_dict(),
        "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__},
    }
    if chief:
        metrics["export_dir"] = export_dir
        export.export_saved_model(
            model, export_dir, export.export_metadata(config, metrics), overwrite=True
        )
    # Written last: metrics.json marks the run as finished.
    files.write_json(os.path.join(workdir, METRICS_FILE), metrics)
    logging.info(
        "%s k=%d on %s: test NLL %.2f +- %.2f nats (eval_k=%d); %d steps in %.0f s.",
        config.model,
        config.k,
        config.dataset,
        estimates.nll,
        estimates.nll_stderr,
        config.eval_k,
        training["train_steps"],
        training["train_seconds"],
    )
    return metrics


class TrainingDivergedError(ValueError):
    """The training loss became NaN or infinite; the message says when and what to change."""


def fit(
    model: ImportanceWeightedAutoencoder,
    config: TrainConfig,
    workdir: str,
    train_ds: tf.data.Dataset,
    validation_ds: tf.data.Dataset,
    test_ds: tf.data.Dataset,
    num_train: int,
    data_position: DataPosition,
) -> dict[str, Any]:
    """`model.fit` with the run's callbacks; returns what metrics.json reports of it.

    With `config.select_best`, the model leaves holding the weights of the epoch with the best
    validation bound (`BestWeights`).

    Returns:
      {"train_steps", "train_seconds" (wall time of fit), "last_epoch" (the last epoch's logs),
      "selected_epoch" (0-based; the last one unless select_best), "selected_epoch_logs"}.

    Raises:
      TrainingDivergedError: The loss became NaN or infinite (Keras' TerminateOnNaN stopped
        fit); nothing is saved, since a NaN model has no test NLL worth reporting.
    """
    epochs = schedules.num_epochs(config.schedule, config.epochs, config.stages)
    per_epoch = steps_per_epoch(config, num_train)
    logging.info(
        "Training %s (k=%d) on %s: %d examples, %d epochs of batch %d, %d replica(s).",
        config.model,
        config.k,
        config.dataset,
        num_train,
        epochs,
        config.batch_size,
        model.distribute_strategy.num_replicas_in_sync,
    )
    best = BestWeights(os.path.join(workdir, BEST_PREFIX)) if config.select_best else None
    stopper = (
        ResumableEarlyStopping(best, config.early_stopping_patience, per_epoch)
        if best and config.early_stopping_patience
        else None
    )
    callbacks = [
        LearningRateLogger(),  # First: the callbacks below see the rate it adds to the logs.
        keras.callbacks.TerminateOnNaN(),
        # Before the backup: a kill between the two repeats the epoch, so no best is lost.
        *([best] if best else []),
        keras.callbacks.BackupAndRestore(os.path.join(workdir, BACKUP_DIR)),
        data_position,  # After BackupAndRestore, which restores the step it reads.
        HistoryLogger(os.path.join(workdir, HISTORY_FILE), per_epoch),  # Likewise.
        *([stopper] if stopper else []),  # Likewise.
    ]
    if config.tensorboard:
        callbacks += tensorboard_callbacks(config, workdir, test_ds)
    start = time.perf_counter()
    history = model.fit(
        train_ds,
        epochs=epochs,
        steps_per_epoch=per_epoch,
        validation_data=validation_ds,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    train_seconds = time.perf_counter() - start
    train_steps = int(model.optimizer.iterations.numpy())
    losses = history.history.get("loss", [])
    stopped_early = bool(stopper and stopper.stopped_epoch)
    if (model.stop_training and not stopped_early) or (losses and not math.isfinite(losses[-1])):
        raise TrainingDivergedError(
            f"training diverged: the loss became NaN or infinite by step {train_steps}; lower "
            f"--learning_rate (was {config.learning_rate:g}) or check the data"
        )
    last_epoch = {name: float(values[-1]) for name, values in history.history.items()}
    selected = {"epoch": epochs - 1, "logs": last_epoch}
    if best is not None:
        selected = best.restore()
    return {
        "train_steps": train_steps,
        "train_seconds": train_seconds,
        "last_epoch": last_epoch,
        "selected_epoch": selected["epoch"],
        "selected_epoch_logs": selected["logs"],
        "stopped_epoch": stopper.stopped_epoch if stopped_early else None,
    }


def _exported_by(export_dir: str, config: TrainConfig) -> bool:
    """Whether export_dir holds the export of a run with `config` (a killed run's rerun may
    replace it: the weights it was exported from are the run's own)."""
    try:
        metadata = serving.read_metadata(export_dir)
    except OSError:
        return False
    return metadata.get("config") == json.loads(json.dumps(config.to_dict()))


def eval_data(config: TrainConfig, split: str, batch_size: int | None = None) -> tf.data.Dataset:
    """A split of the run's dataset as evaluation sees it: `data.eval_dataset` with the run's
    data_dir and binarization (binarized once with the fixed seed, or intensities for none)."""
    return data.eval_dataset(
        config.dataset,
        split,
        batch_size or config.eval_batch_size,
        data_dir=config.data_dir,
        binarization=config.binarization,
    )


def training_data(
    config: TrainConfig, num_examples: int | None = None, batch_size: int | None = None
) -> tf.data.Dataset:
    """The run's training split as it trained on it (`data.training_set`): a static run's own
    binarization, so that a training-set NLL measures the fit to the images it saw; the first
    `num_examples` of them, or all."""
    return data.training_set(
        config.dataset,
        config.train_split,
        batch_size or config.eval_batch_size,
        config.seed,
        data_dir=config.data_dir,
        binarization=config.binarization,
        num_examples=num_examples,
    )


def layer_types(variant: str, uncertain_layer_kind: str) -> dict[str, str]:
    """The `iwae_tf.layers` kind of the encoder's and the decoder's dense layers."""
    spec = VARIANTS[variant]
    return {
        "encoder": uncertain_layer_kind if spec.uncertain_encoder else "deterministic",
        "decoder": uncertain_layer_kind if spec.uncertain_decoder else "deterministic",
    }


def tensorboard_callbacks(
    config: TrainConfig, workdir: str, test_ds: tf.data.Dataset
) -> list[keras.callbacks.Callback]:
    """Keras' TensorBoard scalars and our `summaries.ModelSummaries`, to workdir/tensorboard."""
    log_dir = os.path.join(workdir, summaries.TENSORBOARD_DIR)
    images = next(iter(test_ds.unbatch().batch(32).take(1))).numpy()
    return [
        keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0),
        summaries.ModelSummaries(log_dir, images, config.image_summary_epochs, config.seed),
    ]


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


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger in append mode that, when a run resumes, first drops the rows of the
    epochs the backup did not keep.

    A run killed after an epoch's row was written but before its backup was saved repeats that
    epoch when it resumes; without the pruning, history.csv would list it twice. Place it after
    `BackupAndRestore`, whose restored step count it reads in `on_train_begin`.
    """

    def __init__(self, filename: str, steps_per_epoch: int) -> None:
        super().__init__(filename, append=True)
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        kept_epochs = int(self.model.optimizer.iterations.numpy()) // self.steps_per_epoch
        if os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                header, body = rows[0], rows[1:]
                kept = [row for row in body if row and int(float(row[0])) < kept_epochs]
                if len(kept) != len(body):
                    with files.atomic_write(self.filename, newline="") as f:
                        csv.writer(f).writerows([header, *kept])
        super().on_train_begin(logs)


class BestWeights(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint of the best val_iwae_bound, whose best survives a resume.

    ModelCheckpoint keeps its best value in memory; a resumed run would start again from -inf
    and overwrite the best weights with a worse epoch's. This one also writes the best epoch,
    value and logs to PREFIX.json (after the weights) and starts from them.
    """

    def __init__(self, prefix: str) -> None:
        self.state_path = prefix + ".json"
        state = self.recorded()
        super().__init__(
            prefix,
            monitor="val_iwae_bound",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=state["logs"]["val_iwae_bound"] if state else None,
        )

    def recorded(self) -> dict[str, Any] | None:
        """{"epoch", "logs"} of the best epoch so far, this process's or a killed one's."""
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path) as f:
            return json.load(f)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        previous = self.best
        super().on_epoch_end(epoch, logs)
        if self.best != previous:
            values = {name: float(value) for name, value in (logs or {}).items()}
            files.write_json(self.state_path, {"epoch": epoch, "logs": values})

    def restore(self) -> dict[str, Any]:
        """Loads the best weights into the model; returns {"epoch", "logs"} of that epoch."""
        state = self.recorded()
        if state is None:
            raise ValueError("no epoch reported a finite val_iwae_bound; nothing to select")
        self.model.load_weights(self.filepath).expect_partial()
        return state


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping on val_iwae_bound whose count survives a resume.

    EarlyStopping counts the epochs since its best in memory; a resumed run would start again
    from zero and train up to `patience` epochs longer than an uninterrupted one. This one
    takes the best epoch from `BestWeights`' record and the finished epochs from the restored
    step count, so it stops at the epoch an uninterrupted run stops at: the first epoch e with
    e - argmax_{e' <= e} val_iwae_bound(e') = patience. Place it after `BackupAndRestore`.
    """

    def __init__(self, best: BestWeights, patience: int, steps_per_epoch: int) -> None:
        super().__init__(monitor="val_iwae_bound", mode="max", patience=patience)
        self.best_weights_record = best
        self.steps_per_epoch = steps_per_epoch

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        state = self.best_weights_record.recorded()
        if state is not None:
            finished_epochs = int(self.model.optimizer.iterations.numpy()) // self.steps_per_epoch
            self.best = state["logs"]["val_iwae_bound"]
            self.best_epoch = state["epoch"]
            self.wait = finished_epochs - 1 - state["epoch"]


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
        config = TrainConfig.from_dict(json.load(f))
    num_train = data.num_examples(config.dataset, config.train_split, config.data_dir)
    model = make_model(config, num_train)
    model.load_weights(weights).expect_partial()
    return config, model
