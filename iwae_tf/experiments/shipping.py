"""Shipped models: a finished run's SavedModel in `exported/NAME`, with its figures and command.

`ship(run_dir, name, command)` copies the run's export (`config.export_dir`, the weights the run
evaluated: the selected epoch's under `select_best`) to `exported/NAME` and adds

    metrics.json   the run's metrics.json, with the grid's train NLL (evaluation.json) if any
    shipped.json   the check figure: the mean NLL of the first `num_check_images` test images
                   at K = `check_k`, estimated by the library (`estimate_log_likelihood`) with
                   seeds 0 and 1, so that a fresh process scoring the export knows what to find
                   and how far Monte Carlo error alone moves it
    README.md      what the model is, its figures, and the command that trained it

so that the test suite can score every shipped model in a process without model code and
compare. The shipped models stay under `MAX_TOTAL_BYTES` in all, so the repository stays small.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from iwae_tf import evaluation, files, train
from iwae_tf.config import TrainConfig
from iwae_tf.experiments import reproduce

MAX_TOTAL_BYTES = 50 * 1024 * 1024
"""The budget of every shipped model together (issue #16: about 50 MB)."""

SHIPPED_FILE = "shipped.json"
CHECK_SEEDS = (0, 1)
CHECK_FLOOR_NATS = 0.25
"""The least disagreement a check allows. Other draws than the library's move the mean NLL of
500 images at K = 1000 by about a tenth of a nat (0.12 between seeds 0 and 1 for the regime A
IWAE), a wrong reading of the images (byte/256 for byte/255) by about 1.3 nats."""


def check_tolerance(check: dict[str, Any]) -> float:
    """How far a fresh score of the check split may sit from the check figure, in nats:
    max(CHECK_FLOOR_NATS, 3 x the spread between the two seeds' estimates)."""
    return max(CHECK_FLOOR_NATS, 3 * float(check["monte_carlo_spread"]))


def directory_bytes(path: str) -> int:
    """The bytes of the files under `path`."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def check_figure(run_dir: str, num_check_images: int = 500, check_k: int = 1000) -> dict[str, Any]:
    """The NLL of the run's first `num_check_images` test images at K = `check_k`, per seed.

    Returns:
      {"split", "k", "nll" (seed 0), "nll_by_seed" {seed: nll}, "monte_carlo_spread"
      (|difference| between the two seeds)}.
    """
    config, model = train.load_run(run_dir)
    if "[" in config.test_split:
        raise ValueError(f"the run's test split {config.test_split!r} is already sliced")
    split = f"{config.test_split}[:{num_check_images}]"
    images = train.eval_data(config, split)
    by_seed = {
        seed: evaluation.estimate_log_likelihood(model, images, check_k, seed=seed).nll
        for seed in CHECK_SEEDS
    }
    spread = abs(by_seed[CHECK_SEEDS[0]] - by_seed[CHECK_SEEDS[1]])
    return {
        "split": split,
        "k": check_k,
        "nll": by_seed[CHECK_SEEDS[0]],
        "nll_by_seed": {str(seed): nll for seed, nll in by_seed.items()},
        "monte_carlo_spread": spread,
    }


def _readme(name: str, metrics: dict[str, Any], check: dict[str, Any], command: str) -> str:
    config = metrics["config"]
    selected = (
        f"the weights of epoch {metrics['selected_epoch'] + 1} of {config['epochs']}, the best "
        f"bound on `{config['validation_split']}`"
        if config.get("select_best")
        else f"the weights after {config['epochs']} epochs"
    )
    train_nll = metrics.get("train_nll")
    lines = [
        f"# {name}",
        "",
        f"`{config['model']}` on `{config['dataset']}` ({config['binarization']} binarization, "
        f"training split `{config['train_split']}`), latents {config['latent_sizes']}, hidden "
        f"{config['hidden_sizes']}, k = {config['k']}, objective "
        f"{reproduce.describe_objective(TrainConfig.from_dict(config))}, seed "
        f"{config['seed']}: {selected}.",
        "",
        f"Test NLL: {metrics['test_nll']:.2f} ± {metrics['test_nll_stderr']:.2f} nats "
        f"(K = {config['eval_k']}, {metrics['num_test_examples']} test images)"
        + (f"; train NLL {train_nll:.2f}." if train_nll is not None else "."),
        f"Check figure (`shipped.json`): {check['nll']:.2f} nats on `{check['split']}` at "
        f"K = {check['k']}, what `scripts/score.py --input=tfds:{check['split']} "
        f"--k={check['k']}` should print up to Monte Carlo error "
        f"({check['monte_carlo_spread']:.2f} nats between seeds 0 and 1).",
        "",
        "Trained by:",
        "",
        f"    {command}",
        "",
        "Full figures in `metrics.json`; signatures and inputs in the project README.",
    ]
    return "\n".join(lines) + "\n"


def ship(
    run_dir: str,
    name: str,
    command: str,
    export_root: str = "exported",
    num_check_images: int = 500,
    check_k: int = 1000,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> str:
    """Copies a finished run's export to `export_root/name` with its figures and command.

    Args:
      run_dir: A finished run of `train.train_and_evaluate` that exported a SavedModel.
      name: The shipped model's directory name.
      command: The shell command that trained the run.
      export_root: Where shipped models live.
      num_check_images: Test images of the check figure.
      check_k: Importance samples of the check figure.
      max_total_bytes: Refuse when the shipped models would exceed this, all together.

    Returns:
      The shipped model's directory.

    Raises:
      ValueError: `name` is taken, the run has no metrics or export, or the budget is exceeded.
    """
    destination = os.path.join(export_root, name)
    if os.path.exists(destination):
        raise ValueError(f"{destination} exists; ship under another name or remove it first")
    metrics_path = os.path.join(run_dir, train.METRICS_FILE)
    if not os.path.exists(metrics_path):
        raise ValueError(f"{run_dir} holds no finished run (no {train.METRICS_FILE})")
    with open(metrics_path) as f:
        metrics = json.load(f)
    export_dir = metrics["config"].get("export_dir")
    if not export_dir or not os.path.isdir(export_dir):
        raise ValueError(f"{run_dir} has no SavedModel export (looked for {export_dir!r})")
    total = directory_bytes(export_dir) + (
        directory_bytes(export_root) if os.path.isdir(export_root) else 0
    )
    if total > max_total_bytes:
        raise ValueError(
            f"shipping {name} would make {export_root} {total / 2**20:.1f} MiB, over the "
            f"{max_total_bytes / 2**20:.0f} MiB budget; remove a shipped model first"
        )
    analysis_path = os.path.join(run_dir, reproduce.EVALUATION_FILE)
    if os.path.exists(analysis_path):
        with open(analysis_path) as f:
            analysis = json.load(f)
        metrics = {
            **metrics,
            "train_nll": analysis.get("train_nll"),
            "train_nll_stderr": analysis.get("train_nll_stderr"),
            "train_eval_split": analysis.get("train_eval_split"),
            "active_units": analysis.get("active_units"),
        }
    check = check_figure(run_dir, num_check_images, check_k)
    staging = os.path.join(export_root, f".{name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(export_dir, staging)
    files.write_json(os.path.join(staging, "metrics.json"), metrics)
    files.write_json(os.path.join(staging, SHIPPED_FILE), {**check, "command": command})
    with files.atomic_write(os.path.join(staging, "README.md")) as f:
        f.write(_readme(name, metrics, check, command))
    os.replace(staging, destination)  # Whole or absent.
    return destination
