"""Runs a grid of presets under a stated budget and tabulates it against the published figures.

`run_grid(presets, output_dir, budget)` trains each preset (`iwae_tf.experiments.presets`) with
`iwae_tf.train.train_and_evaluate`, which also estimates the test NLL

    -log p(x) ~= -log (1/K) sum_{j=1..K} p(x, h_j) / q(h_j | x),   K = eval_k (5000 in the papers),

then evaluates the same estimate on a fixed subset of the training split (binarized once, like
the test set), so the train/test gap shows overfitting, and counts active units (Burda et al.
2016, Section 5.2: unit u is active if Cov_x(E_q[u | x]) > 1e-2). It writes

    output_dir/runs/<preset>/      the run (metrics.json, history.csv, weights, evaluation.json,
                                   export/ if train_and_evaluate exports a SavedModel)
    output_dir/results.csv         one row per preset: ours next to the published figure
    output_dir/results.md          the same as a Markdown table, with the budget stated
    output_dir/plots/              learning curves, and per run prior samples, reconstructions
                                   and (for 2 latents) the latent manifold

A budget is either `stages` of Burda et al.'s schedule (3^i passes at 0.001 * 10^(-i/7) for
i < stages; presets without that schedule train the same number of epochs, burda_epochs(stages),
at their constant rate) or a number of `epochs` at the preset's base rate, constant.

Resuming: a run whose metrics.json exists is not trained again, and its train-set NLL and
active units are read back from evaluation.json; an interrupted run continues from its last
epoch (Keras BackupAndRestore, in `train_and_evaluate`). A run directory holding a different
config is an error, so a table never mixes budgets.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging

from iwae_tf import data, evaluation, files, schedules, train
from iwae_tf.config import TrainConfig
from iwae_tf.experiments import presets
from iwae_tf.model import VARIANTS

RUNS_DIR = "runs"
PLOTS_DIR = "plots"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
EVALUATION_FILE = "evaluation.json"
EXPORT_DIR = "export"
DEFAULT_EVAL_K = 5000
DEFAULT_TRAIN_EVAL_SPLIT = "train[:10000]"
ACTIVE_UNITS_THRESHOLD = 1e-2
RECONSTRUCTION_IMAGES = 20
SCRIPT = "python scripts/reproduce.py"

OVERRIDABLE_FIELDS: tuple[str, ...] = (
    "seed",
    "train_split",
    "test_split",
    "data_dir",
    "eval_batch_size",
    "binarization",
    "validation_split",
    "select_best",
    "early_stopping_patience",
)
"""TrainConfig fields a grid may override for all its runs; each is a flag of the script."""

COLUMNS: tuple[str, ...] = (
    "preset",
    "dataset",
    "model",
    "objective",
    "estimator",
    "k",
    "layers",
    "budget",
    "epochs",
    "selected_epoch",
    "stopped_epoch",
    "train_steps",
    "eval_k",
    "train_nll",
    "train_nll_stderr",
    "test_nll",
    "test_nll_stderr",
    "gap",
    "published_nll",
    "difference",
    "active_units",
    "published_active_units",
    "wall_seconds",
    "status",
    "command",
)
"""results.csv columns. gap = test - train NLL; difference = ours - published (test NLL);
selected_epoch = the 0-based epoch whose weights were evaluated, under select_best;
stopped_epoch = the 0-based epoch at which early_stopping_patience ended training."""

ActiveUnitsFn = Callable[..., Sequence[int]]


def describe_objective(config: TrainConfig) -> str:
    """The trained objective with its parameter: "iwae", "vr(alpha=-inf)", "miwae(M=8)"..."""
    name = config.objective or VARIANTS[config.model].objective
    parameter = {
        "vr": f"alpha={config.alpha:g}",
        "miwae": f"M={config.num_groups}",
        "piwae": f"M={config.num_groups}",
        "ciwae": f"beta={config.beta:g}",
    }.get(name)
    return f"{name}({parameter})" if parameter else name


def describe_model(row: dict[str, Any]) -> str:
    """The results table's model cell: the networks, and what trained them if not their own."""
    extras = [row["objective"]] if row["objective"] != VARIANTS[row["model"]].objective else []
    if row["estimator"] != "reparam":
        extras.append(row["estimator"])
    return f"{row['model']}: {', '.join(extras)}" if extras else row["model"]


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long every run of a grid trains.

    Attributes:
      stages: Stages of Burda et al.'s schedule (8 = the paper's 3280 epochs).
      epochs: Epochs at the preset's base learning rate, constant.
      steps_per_epoch: Optional cap on the steps of an epoch (for smoke tests).
    """

    stages: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if (self.stages is None) == (self.epochs is None):
            raise ValueError("a budget needs exactly one of stages and epochs")
        for name in ("stages", "epochs", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"budget {name} must be >= 1, got {value}")

    def overrides(self, preset: str) -> dict[str, Any]:
        """The TrainConfig overrides that impose this budget on `preset`."""
        values: dict[str, Any] = {"steps_per_epoch": self.steps_per_epoch}
        if self.epochs is not None:
            values.update(schedule="constant", epochs=self.epochs)
        elif presets.preset_overrides(preset).get("schedule") == "burda":
            values["stages"] = self.stages
        else:
            values["epochs"] = schedules.burda_epochs(self.stages)
        return values

    def flags(self) -> list[str]:
        """The script flags that state this budget."""
        flags = [f"--stages={self.stages}" if self.stages else f"--epochs={self.epochs}"]
        if self.steps_per_epoch:
            flags.append(f"--steps_per_epoch={self.steps_per_epoch}")
        return flags


def describe_budget(config: TrainConfig) -> str:
    """The training budget of a config in words, e.g. "burda 3 stages = 13 epochs"."""
    if config.schedule == "burda":
        text = f"burda {config.stages} stages = {config.epochs} epochs"
    else:
        text = f"{config.epochs} epochs at lr {config.learning_rate:g}"
    if config.steps_per_epoch:
        text += f" x {config.steps_per_epoch} steps"
    return text


def run_config(
    preset: str,
    budget: Budget,
    eval_k: int,
    overrides: dict[str, Any] | None = None,
    run_dir: str | None = None,
) -> TrainConfig:
    """The TrainConfig of one grid cell: the preset, under the budget, with the overrides.

    With `run_dir`, the run's SavedModel export goes inside it (run_dir/export), so a grid
    keeps everything it makes under its output directory.
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(OVERRIDABLE_FIELDS)
    if unknown:
        raise ValueError(f"grid overrides may only set {OVERRIDABLE_FIELDS}, got {sorted(unknown)}")
    if run_dir is not None:
        overrides["export_dir"] = os.path.join(run_dir, EXPORT_DIR)
    return presets.apply_preset(preset, **budget.overrides(preset), eval_k=eval_k, **overrides)


def reproduce_command(
    preset: str,
    budget: Budget,
    eval_k: int,
    train_eval_split: str,
    output_dir: str,
    overrides: dict[str, Any] | None = None,
) -> str:
    """The shell command that reproduces one row of the results."""
    args = [f"--presets={preset}", *budget.flags(), f"--eval_k={eval_k}"]
    if train_eval_split != DEFAULT_TRAIN_EVAL_SPLIT:
        args.append(f"--train_eval_split={train_eval_split}")
    args += [f"--{key}={value}" for key, value in sorted((overrides or {}).items())]
    args.append(f"--output_dir={output_dir}")
    return SCRIPT + " " + shlex.join(args)


def default_active_units_fn() -> ActiveUnitsFn | None:
    """`iwae_tf.evaluation.active_units` if this version of the package has it, else None."""
    return getattr(evaluation, "active_units", None)


def _check_resumable(run_dir: str, config: TrainConfig) -> None:
    path = os.path.join(run_dir, train.CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        stored = TrainConfig.from_dict(json.load(f))
    if stored != config:
        wanted, found = config.to_dict(), stored.to_dict()
        differing = sorted(name for name in wanted if wanted[name] != found[name])
        raise ValueError(
            f"{run_dir} holds a run with another config (differs in {', '.join(differing)}); "
            "use another output_dir for another budget or setting"
        )


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, values: dict[str, Any]) -> None:
    # Whole or not at all: a resumed grid must never trust half a file.
    files.write_json(path, values)


def _plot_paths(plot_dir: str, config: TrainConfig) -> dict[str, str]:
    paths = {
        "prior_samples": os.path.join(plot_dir, "prior_samples.png"),
        "reconstructions": os.path.join(plot_dir, "reconstructions.png"),
    }
    if tuple(config.latent_sizes) == (2,):
        paths["latent_manifold"] = os.path.join(plot_dir, "latent_manifold.png")
    return paths


def analyse_run(
    run_dir: str,
    eval_k: int,
    train_eval_split: str,
    active_units_fn: ActiveUnitsFn | None,
    plot_dir: str | None,
) -> dict[str, Any]:
    """Train-set NLL, active units and per-run plots of a finished run, cached in the run dir.

    Args:
      run_dir: A finished run of `train.train_and_evaluate`.
      eval_k: Importance samples of the train-set NLL.
      train_eval_split: The training examples it is estimated on, binarized once with a
        fixed seed (like the test set). For a statically binarized run only its size counts:
        the NLL is of as many images from the start of the run's training split, in the
        run's own binarization (`train.training_data`).
      active_units_fn: (model, dataset, threshold) -> active units per stochastic layer (a
        sequence of counts, or an object with `.counts`), on the test split; None: none.
      plot_dir: Where the model's plots go; None draws none.

    Returns:
      The contents of run_dir/evaluation.json: train_nll, train_nll_stderr, active_units
      (list or None), eval_k, train_eval_split, seconds (compute time of this analysis).
    """
    path = os.path.join(run_dir, EVALUATION_FILE)
    cached = _read_json(path)
    if cached.get("eval_k") != eval_k or cached.get("train_eval_split") != train_eval_split:
        cached = {}
    need_nll = "train_nll" not in cached
    need_active = cached.get("active_units") is None and active_units_fn is not None
    with open(os.path.join(run_dir, train.CONFIG_FILE)) as f:
        config = TrainConfig.from_dict(json.load(f))
    plots = _plot_paths(plot_dir, config) if plot_dir else {}
    missing_plots = {name: p for name, p in plots.items() if not os.path.exists(p)}
    if not (need_nll or need_active or missing_plots):
        return cached

    start = time.perf_counter()
    config, model = train.load_run(run_dir)
    result = dict(cached, eval_k=eval_k, train_eval_split=train_eval_split)
    result.setdefault("active_units", None)
    if need_nll:
        if config.binarization == "static":
            # The images it trained on, in its own draw; a fresh draw of the same pixels would
            # understate the overfitting.
            size = data.num_examples(config.dataset, train_eval_split, config.data_dir)
            train_ds = train.training_data(config, size)
        else:
            train_ds = train.eval_data(config, train_eval_split)
        estimates = evaluation.estimate_log_likelihood(
            model, train_ds, num_samples=eval_k, seed=config.seed
        )
        result.update(train_nll=estimates.nll, train_nll_stderr=estimates.nll_stderr)
    test_ds = train.eval_data(config, config.test_split)
    if need_active:
        units = active_units_fn(model, test_ds, threshold=ACTIVE_UNITS_THRESHOLD)
        # evaluation.active_units returns an ActiveUnits whose .counts are per layer; a plain
        # callable may return the counts themselves.
        result["active_units"] = [int(c) for c in getattr(units, "counts", units)]
    result["seconds"] = result.get("seconds", 0.0) + time.perf_counter() - start
    _write_json(path, result)

    if missing_plots:
        from iwae_tf.experiments import plots  # matplotlib is only needed when plotting.

        if "prior_samples" in missing_plots:
            plots.plot_prior_samples(model, missing_plots["prior_samples"], seed=config.seed)
        if "reconstructions" in missing_plots:
            images = next(iter(test_ds.unbatch().batch(RECONSTRUCTION_IMAGES)))
            plots.plot_reconstructions(model, images.numpy(), missing_plots["reconstructions"])
        if "latent_manifold" in missing_plots:
            plots.plot_latent_manifold(model, missing_plots["latent_manifold"])
    return result


def _format_units(units: Sequence[int] | None) -> str:
    return "" if units is None else "+".join(str(int(u)) for u in units)


def _row(
    preset: str,
    config: TrainConfig,
    metrics: dict[str, Any],
    analysis: dict[str, Any],
    command: str,
    status: str,
) -> dict[str, Any]:
    figures = presets.published(preset)
    test_nll = metrics.get("test_nll")
    train_nll = analysis.get("train_nll")
    published_nll = figures.nll if figures else None
    wall = metrics.get("train_seconds", 0.0) + metrics.get("eval_seconds", 0.0)
    return {
        "preset": preset,
        "dataset": config.dataset,
        "model": config.model,
        "objective": describe_objective(config),
        "estimator": config.estimator,
        "k": config.k,
        "layers": len(config.latent_sizes),
        "budget": describe_budget(config),
        "epochs": config.epochs,
        "selected_epoch": metrics.get("selected_epoch") if config.select_best else None,
        "stopped_epoch": metrics.get("stopped_epoch"),
        "train_steps": metrics.get("train_steps"),
        "eval_k": config.eval_k,
        "train_nll": train_nll,
        "train_nll_stderr": analysis.get("train_nll_stderr"),
        "test_nll": test_nll,
        "test_nll_stderr": metrics.get("test_nll_stderr"),
        "gap": None if test_nll is None or train_nll is None else test_nll - train_nll,
        "published_nll": published_nll,
        "difference": (
            None if test_nll is None or published_nll is None else test_nll - published_nll
        ),
        "active_units": _format_units(analysis.get("active_units")),
        "published_active_units": _format_units(figures.active_units if figures else None),
        "wall_seconds": (wall + analysis.get("seconds", 0.0)) if metrics else None,
        "status": status,
        "command": command,
    }


def _describe_selection(row: dict[str, Any]) -> str:
    """The evaluated epoch, 1-based: "last", "40 of 150", or "40 of 150, stopped at 70"."""
    if row["selected_epoch"] is None:
        return "last"
    text = f"{row['selected_epoch'] + 1} of {row['epochs']}"
    if row.get("stopped_epoch") is not None:
        text += f", stopped at {row['stopped_epoch'] + 1}"
    return text


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_results(
    rows: Sequence[dict[str, Any]],
    output_dir: str,
    header: str = "",
    plot_files: Sequence[str] = (),
) -> tuple[str, str]:
    """Writes results.csv and results.md for the rows of `run_grid`.

    Args:
      rows: One dict per preset, keyed by `COLUMNS`.
      output_dir: Where the files go.
      header: Markdown text put before the table (what was run, with which budget).
      plot_files: PNG paths to list after the table, relative to output_dir.

    Returns:
      (csv path, markdown path).
    """
    csv_path = os.path.join(output_dir, RESULTS_CSV)
    with files.atomic_write(csv_path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS})

    lines = [header.rstrip(), ""] if header else []
    lines += [
        "| preset | model | k | layers | dataset | budget | selected epoch | train NLL | "
        "test NLL ± se | test − train | published | ours − published | "
        "active units (ours / published) | wall time | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        test = (
            f"{_fmt(row['test_nll'])} ± {_fmt(row['test_nll_stderr'])}"
            if row["test_nll"] is not None
            else ""
        )
        difference = "" if row["difference"] is None else f"{row['difference']:+.2f}"
        active = f"{row['active_units'] or '–'} / {row['published_active_units'] or '–'}"
        wall = "" if row["wall_seconds"] is None else f"{row['wall_seconds']:.0f} s"
        cells = [
            row["preset"],
            describe_model(row),
            row["k"],
            row["layers"],
            row["dataset"],
            row["budget"],
            _describe_selection(row),
            _fmt(row["train_nll"]),
            test,
            _fmt(row["gap"]),
            _fmt(row["published_nll"]),
            difference,
            active,
            wall,
            row["status"].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Commands that reproduce each row:", ""]
    lines += [f"- {row['preset']}: `{row['command']}`" for row in rows]
    if plot_files:
        lines += ["", "Plots:", ""] + [f"- [{p}]({p})" for p in plot_files]
    md_path = os.path.join(output_dir, RESULTS_MD)
    with files.atomic_write(md_path) as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def _header(
    budget: Budget,
    eval_k: int,
    train_eval_split: str,
    names: Sequence[str],
    overrides: dict[str, Any] | None = None,
) -> str:
    date = datetime.date.today().isoformat()
    budget_text = (
        f"Burda et al.'s schedule truncated to {budget.stages} stages "
        f"({schedules.burda_epochs(budget.stages)} epochs; the paper runs 8 stages, 3280 epochs)"
        if budget.stages
        else f"{budget.epochs} epochs at each preset's base learning rate, held constant"
    )
    if budget.steps_per_epoch:
        budget_text += f", each epoch capped at {budget.steps_per_epoch} steps"
    return "\n".join(
        [
            "# Reproduction results",
            "",
            f"{len(names)} runs, {date}. Budget: {budget_text}.",
            f"NLL in nats, estimated with K = {eval_k} importance samples (the papers use "
            f"5000); train NLL on `{train_eval_split}`, binarized once like the test set "
            "(a statically binarized run: as many images from the start of its training split, "
            "in its own binarization). "
            "Published figures come from `iwae_tf/experiments/paper_results.json`; "
            "ours − published > 0 means ours is worse. Active units: Cov_x(E_q[h|x]) > 1e-2 "
            "on the test split, per stochastic layer.",
        ]
        + (
            [
                "",
                "Every run also sets: "
                + ", ".join(f"`{key}={value}`" for key, value in sorted(overrides.items()))
                + ".",
            ]
            if overrides
            else []
        )
    )


def run_grid(
    preset_names: Sequence[str],
    output_dir: str,
    budget: Budget,
    eval_k: int = DEFAULT_EVAL_K,
    train_eval_split: str = DEFAULT_TRAIN_EVAL_SPLIT,
    overrides: dict[str, Any] | None = None,
    active_units_fn: ActiveUnitsFn | None = None,
    make_plots: bool = True,
) -> list[dict[str, Any]]:
    """Trains, evaluates and tabulates a grid of presets; resumes a previous call's work.

    Args:
      preset_names: Presets to run, in table order (e.g. `presets.grid_presets("quick")`).
      output_dir: Where runs, results and plots go.
      budget: How long each run trains.
      eval_k: Importance samples of the test and train NLL estimates.
      train_eval_split: Training examples the train NLL is estimated on.
      overrides: TrainConfig fields set for every run (`OVERRIDABLE_FIELDS`).
      active_units_fn: Counts active units per layer, (model, dataset, threshold) -> ints;
        default `evaluation.active_units` when the package has it.
      make_plots: Draw the PNGs (needs matplotlib).

    Returns:
      The rows written to results.csv, one per preset; a failed run's row has status
      "failed: <error>" and the other runs still go ahead.

    Raises:
      ValueError: Unknown preset or override, or a run directory holding another config
        (checked for every run before any training starts).
    """
    if not preset_names:
        raise ValueError("no presets to run")
    if len(set(preset_names)) != len(preset_names):
        raise ValueError(f"presets listed twice: {list(preset_names)}")
    if make_plots:
        from iwae_tf.experiments import plots  # noqa: F401  (fails now rather than after training)
    if active_units_fn is None:
        active_units_fn = default_active_units_fn()
        if active_units_fn is None:
            logging.warning("iwae_tf.evaluation has no active_units: none are reported.")
    run_dirs = {name: os.path.join(output_dir, RUNS_DIR, name) for name in preset_names}
    configs = {
        name: run_config(name, budget, eval_k, overrides, run_dirs[name]) for name in preset_names
    }
    for name in preset_names:
        _check_resumable(run_dirs[name], configs[name])
    os.makedirs(output_dir, exist_ok=True)
    header = _header(budget, eval_k, train_eval_split, preset_names, overrides)
    plot_root = os.path.join(output_dir, PLOTS_DIR)

    rows: list[dict[str, Any]] = []
    for name in preset_names:
        config, run_dir = configs[name], run_dirs[name]
        command = reproduce_command(name, budget, eval_k, train_eval_split, output_dir, overrides)
        metrics_path = os.path.join(run_dir, train.METRICS_FILE)
        metrics: dict[str, Any] = {}
        analysis: dict[str, Any] = {}
        try:
            if os.path.exists(metrics_path):
                logging.info("%s: finished run found in %s, not retrained.", name, run_dir)
            else:
                logging.info("%s: training (%s).", name, describe_budget(config))
                train.train_and_evaluate(config, run_dir)
            metrics = _read_json(metrics_path)
            plot_dir = os.path.join(plot_root, name) if make_plots else None
            analysis = analyse_run(run_dir, eval_k, train_eval_split, active_units_fn, plot_dir)
            status = "ok"
        except Exception as e:  # One failed cell must not lose the others' results.
            logging.exception("%s failed", name)
            status = f"failed: {type(e).__name__}: {e}".splitlines()[0]
        rows.append(_row(name, config, metrics, analysis, command, status))
        # Rewritten after every run, so an interrupted grid still leaves a table.
        write_results(rows, output_dir, header)

    plot_files: list[str] = []
    if make_plots:
        from iwae_tf.experiments import plots

        histories = {
            name: os.path.join(run_dirs[name], train.HISTORY_FILE)
            for name in preset_names
            if os.path.exists(os.path.join(run_dirs[name], train.HISTORY_FILE))
        }
        if histories:
            held_out = "validation" if (overrides or {}).get("validation_split") else "test"
            for name, history in histories.items():
                plots.plot_learning_curves(
                    {name: history},
                    os.path.join(plot_root, name, "learning_curves.png"),
                    held_out=held_out,
                )
            plots.plot_learning_curves(
                histories,
                os.path.join(plot_root, "learning_curves.png"),
                train_curves=False,
                held_out=held_out,
            )
        for root, _, files in os.walk(plot_root):
            plot_files += [
                os.path.relpath(os.path.join(root, f), output_dir)
                for f in sorted(files)
                if f.endswith(".png")
            ]
    write_results(rows, output_dir, header, sorted(plot_files))
    return rows
