"""Gradient signal-to-noise ratios over repeated draws, against the number of samples k.

For a parameter theta_j and the gradient estimate g_j of one training step (a minibatch, one
draw of every latent and weight), the signal-to-noise ratio is

    SNR_j = |E[g_j]| / std(g_j),

estimated from `num_draws` independent draws at fixed parameters (Rainforth et al., ICML 2018).
Rainforth et al. show that under the IWAE bound the encoder's SNR falls like 1/sqrt(k) while
the decoder's grows like sqrt(k); Tucker et al. (ICLR 2019) show that the doubly
reparameterized estimator's encoder SNR grows with k instead. `snr_table` measures this for
any objective and estimator (`iwae_tf.estimators`), and `fit_slope` gives the log-log slope
of the median SNR over parameters against k.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from iwae_tf import bounds, estimators, files, rng
from iwae_tf.model import ImportanceWeightedAutoencoder

NETWORKS = ("encoder", "decoder")


def gradient_draws(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    k: int,
    estimator: str,
    objective: bounds.Objective,
    num_draws: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Flattened gradients of the minibatch loss, one row per draw, for each network.

    Draw d uses rng.fold_in(rng.from_int(seed), d): the same draws for every estimator, so
    that estimators compare on paired noise.

    Returns:
      {"encoder": [num_draws, encoder parameters], "decoder": [num_draws, decoder parameters]}.
    """
    estimators.check(estimator, objective)
    variables = {
        "encoder": model.encoder.trainable_variables,
        "decoder": model.decoder.trainable_variables,
    }
    base = rng.from_int(seed)
    with_score = estimators.separate_surrogates(objective, estimator)

    @tf.function
    def one_draw(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape(persistent=True) as tape:
            parts = model.log_weight_parts(x, k, rng.fold_in(base, index), with_score)
            surrogate = estimators.surrogates(parts, objective, estimator)
            losses = {name: -tf.reduce_mean(getattr(surrogate, name)) for name in NETWORKS}
        return tuple(
            tf.concat(
                [tf.reshape(g, [-1]) for g in tape.gradient(losses[name], variables[name])], 0
            )
            for name in NETWORKS
        )

    rows = [one_draw(tf.constant(d, tf.int64)) for d in range(num_draws)]
    return {name: np.stack([row[i].numpy() for row in rows]) for i, name in enumerate(NETWORKS)}


def signal_to_noise(draws: np.ndarray) -> np.ndarray:
    """|mean| / std over the draws (axis 0), per parameter; parameters with no gradient
    (std 0 and mean 0, such as kernel rows of pixels that are off in every example) are NaN."""
    draws = np.asarray(draws, np.float64)
    mean, std = np.abs(draws.mean(axis=0)), draws.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, mean / std, np.nan)


def snr_table(
    model: ImportanceWeightedAutoencoder,
    x: tf.Tensor,
    ks: Sequence[int],
    estimator_names: Sequence[str],
    objective: bounds.Objective,
    num_draws: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (estimator, k, network): the median and mean SNR over its parameters."""
    rows = []
    for estimator in estimator_names:
        for k in ks:
            draws = gradient_draws(model, x, k, estimator, objective, num_draws, seed)
            for network in NETWORKS:
                values = signal_to_noise(draws[network])
                rows.append(
                    {
                        "estimator": estimator,
                        "k": int(k),
                        "network": network,
                        "median_snr": float(np.nanmedian(values)),
                        "mean_snr": float(np.nanmean(values)),
                        "num_draws": int(num_draws),
                    }
                )
    return rows


def fit_slope(ks: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(values) against log(ks): SNR ~ k^slope."""
    slope, _ = np.polyfit(np.log(np.asarray(ks, float)), np.log(np.asarray(values, float)), 1)
    return float(slope)


def slopes(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{estimator: {network: slope of the median SNR against k}}."""
    result: dict[str, dict[str, float]] = {}
    for estimator in dict.fromkeys(row["estimator"] for row in rows):
        for network in NETWORKS:
            chosen = [r for r in rows if r["estimator"] == estimator and r["network"] == network]
            ks = [r["k"] for r in chosen]
            result.setdefault(estimator, {})[network] = fit_slope(
                ks, [r["median_snr"] for r in chosen]
            )
    return result


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
    """The table as CSV, written whole or not at all (`iwae_tf.files`)."""
    with files.atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: Sequence[dict[str, Any]], path: str) -> str:
    """Log-log plot of the median SNR against k, one line per estimator and network (the
    decoder's gradient does not depend on the encoder's estimator, so its lines coincide)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for estimator in dict.fromkeys(row["estimator"] for row in rows):
        for network, style in zip(NETWORKS, ("-", "--"), strict=True):
            chosen = [r for r in rows if r["estimator"] == estimator and r["network"] == network]
            ax.plot(
                [r["k"] for r in chosen],
                [r["median_snr"] for r in chosen],
                style,
                marker="o",
                label=f"{estimator}: {network}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("k (importance samples)")
    ax.set_ylabel("median over parameters of |E g| / std(g)")
    ax.set_title("Gradient SNR against k")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with files.atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
    return path
