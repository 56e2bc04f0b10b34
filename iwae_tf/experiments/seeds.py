r"""Comparisons across training seeds: paired differences of test NLL between presets.

Grids run with `scripts/reproduce.py --seed=s` (one output directory per seed) train every
preset with the same seed s, and so with the same initialization seed, data order and
evaluation draws. For a preset A and the reference R, each seed gives one paired difference

    d_s = NLL_A(s) - NLL_R(s),   s = 1..n,

and the comparison reports mean_s d_s with its standard error across seeds,
sd(d) / sqrt(n) (n - 1 degrees of freedom). Beside it stand each preset's mean NLL with its
standard error across seeds and the mean, over runs, of the standard error over test images,
the Monte Carlo and test-set part of one run's figure. A difference is resolved when it
exceeds about two to three of its standard errors. With n = 3 the t quantile for 95% is 4.30,
so a claim needs a mean difference beyond about 4.3 standard errors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from iwae_tf.experiments import reproduce

T_95: dict[int, float] = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36}
"""Two-sided 95% quantiles of Student's t by degrees of freedom (n - 1 seeds)."""


def _finished_runs(output_dirs: Sequence[str]) -> Iterator[tuple[str, int, str, dict[str, Any]]]:
    """(preset, seed, run_dir, metrics.json) of each finished run of grid output directories."""
    for output_dir in output_dirs:
        runs_dir = os.path.join(output_dir, reproduce.RUNS_DIR)
        found = 0
        for preset in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
            run_dir = os.path.join(runs_dir, preset)
            path = os.path.join(run_dir, "metrics.json")
            if not os.path.exists(path):
                continue  # Unfinished.
            with open(path) as f:
                metrics = json.load(f)
            analysis_path = os.path.join(run_dir, reproduce.EVALUATION_FILE)
            if os.path.exists(analysis_path):  # The grid's train NLL, for the gap.
                with open(analysis_path) as f:
                    metrics["train_nll"] = json.load(f).get("train_nll")
            found += 1
            yield preset, int(metrics["config"]["seed"]), run_dir, metrics
        if not found:
            raise ValueError(f"{output_dir} holds no finished run (looked in {runs_dir})")


def load_runs(output_dirs: Sequence[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """The finished runs of grid output directories: preset -> seed -> metrics.json.

    Raises:
      ValueError: Two directories hold the same preset with the same seed, or a directory
        holds no finished run.
    """
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for preset, seed, run_dir, metrics in _finished_runs(output_dirs):
        if seed in runs.setdefault(preset, {}):
            raise ValueError(f"{preset} with seed {seed} appears twice (again in {run_dir})")
        runs[preset][seed] = metrics
    return runs


def history_paths(output_dirs: Sequence[str]) -> dict[str, dict[int, str]]:
    """preset -> seed -> history.csv of the finished runs of grid output directories."""
    paths: dict[str, dict[int, str]] = {}
    for preset, seed, run_dir, _ in _finished_runs(output_dirs):
        paths.setdefault(preset, {})[seed] = os.path.join(run_dir, "history.csv")
    return paths


def _mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(values.mean()), stderr


def _resolved(mean: float, stderr: float, n: int) -> bool:
    """Whether a paired t-test over n seeds rejects a zero difference at 5%, two-sided."""
    if n < 2 or not math.isfinite(stderr) or n - 1 not in T_95:
        return False
    return abs(mean) > T_95[n - 1] * stderr


def _gap(metrics: dict[str, Any]) -> float | None:
    """test - train NLL of a run, or None without a train NLL."""
    train_nll = metrics.get("train_nll")
    return None if train_nll is None else metrics["test_nll"] - train_nll


def paired_table(
    runs: dict[str, dict[int, dict[str, Any]]], reference: str, presets: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per preset: its NLL per seed, their mean, and the difference from `reference`.

    Only seeds with a finished run of both the preset and the reference enter a difference.
    Where every run of a preset has a train NLL (the grid's evaluation.json), the row also
    has its train-test gaps (`gaps`, `mean_gap`, `gap_stderr`) and their paired difference
    from the reference's (`gap_difference`, `gap_difference_stderr`), None otherwise: does
    the gap account for the difference in test NLL?

    Raises:
      ValueError: `reference` or a preset has no finished run.
    """
    for name in (reference, *presets):
        if name not in runs:
            raise ValueError(f"no finished run of {name!r}; have {sorted(runs)}")
    rows = []
    for preset in presets:
        by_seed = runs[preset]
        seeds = sorted(by_seed)
        nlls = [by_seed[s]["test_nll"] for s in seeds]
        mean, stderr = _mean_and_stderr(nlls)
        paired = sorted(set(seeds) & set(runs[reference]))
        differences = [by_seed[s]["test_nll"] - runs[reference][s]["test_nll"] for s in paired]
        difference, difference_stderr = (
            _mean_and_stderr(differences) if differences else (math.nan, math.nan)
        )
        gaps = [_gap(by_seed[s]) for s in seeds]
        row = {
            "preset": preset,
            "seeds": seeds,
            "test_nll": nlls,
            "mean_test_nll": mean,
            "seed_stderr": stderr,
            "image_stderr": float(np.mean([by_seed[s]["test_nll_stderr"] for s in seeds])),
            "paired_seeds": paired,
            "difference": difference,
            "difference_stderr": difference_stderr,
            "differences": differences,
            "resolved_95": _resolved(difference, difference_stderr, len(differences)),
            "gaps": None,
            "mean_gap": None,
            "gap_stderr": None,
            "gap_difference": None,
            "gap_difference_stderr": None,
        }
        if None not in gaps:
            row["gaps"] = gaps
            row["mean_gap"], row["gap_stderr"] = _mean_and_stderr(gaps)
            reference_gaps = [_gap(runs[reference][s]) for s in paired]
            if paired and None not in reference_gaps:
                gap_differences = [
                    _gap(by_seed[s]) - g for s, g in zip(paired, reference_gaps, strict=True)
                ]
                row["gap_difference"], row["gap_difference_stderr"] = _mean_and_stderr(
                    gap_differences
                )
        rows.append(row)
    return rows


def _plus_minus(mean: float, stderr: float, signed: bool = False) -> str:
    value = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return f"{value} ± {stderr:.2f}" if math.isfinite(stderr) else f"{value} ± –"


def format_markdown(rows: Sequence[dict[str, Any]], reference: str) -> str:
    """The rows as a Markdown table, NLLs in nats, differences against `reference`; with two
    more columns, the train-test gap and its paired difference, when any row has gaps."""
    with_gaps = any(row.get("gaps") for row in rows)
    header = (
        f"| preset | test NLL per seed | mean ± se (seeds) | se over images | − {reference} "
        "± se (paired seeds) |"
    )
    rule = "|---|---|---|---|---|"
    if with_gaps:
        header += f" test − train ± se (seeds) | gap − {reference}'s ± se (paired) |"
        rule += "---|---|"
    lines = [header, rule]
    for row in rows:
        per_seed = ", ".join(f"{v:.2f}" for v in row["test_nll"])
        if row["preset"] == reference:
            difference = "reference"
        elif row["paired_seeds"]:
            difference = _plus_minus(row["difference"], row["difference_stderr"], signed=True)
            difference += f" (n = {len(row['paired_seeds'])}"
            difference += ", resolved at 95%)" if row["resolved_95"] else ", not resolved)"
        else:
            difference = "no common seed"
        line = (
            f"| {row['preset']} | {per_seed} | "
            f"{_plus_minus(row['mean_test_nll'], row['seed_stderr'])} | "
            f"{row['image_stderr']:.2f} | {difference} |"
        )
        if with_gaps:
            gap = (
                "–" if row["mean_gap"] is None else _plus_minus(row["mean_gap"], row["gap_stderr"])
            )
            if row["preset"] == reference:
                gap_difference = "reference"
            elif row["gap_difference"] is None:
                gap_difference = "–"
            else:
                gap_difference = _plus_minus(
                    row["gap_difference"], row["gap_difference_stderr"], signed=True
                )
            line += f" {gap} | {gap_difference} |"
        lines.append(line)
    return "\n".join(lines) + "\n"
