"""Figures of trained models, as PNG files: learning curves, samples, reconstructions, manifolds.

All drawing uses matplotlib's Agg canvas directly (no pyplot, no global backend state), so it
works headless and inside tests. The images are Bernoulli means, not binary draws:

* prior samples: ancestral sampling down the generative model (`Decoder.sample`), h_L ~ N(0, I),
  then for a 2-layer model h_1 ~ p(h_1 | h_2) (a draw, not its mean), and finally the pixel
  means sigmoid(logits of p(x | h_1)), as is usual for binarized-MNIST figures (Burda et al.
  2016, Kingma & Welling 2014);
* reconstructions: the pixel means of p(x | h_1 = E_q[h_1 | x]), the encoder's mean, with
  both networks' weights at their posterior means;
* the 2-D manifold (Kingma & Welling 2014, Fig. 4): for a model with one stochastic layer of 2
  latents, the pixel means of p(x | z) at z = (Phi^-1(u), Phi^-1(v)) on a grid of (u, v) in
  (0, 1), Phi the standard normal CDF, so the grid covers the prior's mass evenly;
* learning curves: -L_k per epoch from a run's history.csv, where L_k is the k-sample bound at
  the *training* k. The test curve (`val_iwae_bound`) is on the fixed test binarization; the
  train curve (`iwae_bound`) is the running mean over an epoch's dynamically binarized batches.
  Both are upper bounds on the NLL, looser than the final K = 5000 estimate.
"""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from iwae_tf import files
from iwae_tf.model import ImportanceWeightedAutoencoder
from iwae_tf.summaries import image_grid, interleave_rows


def read_history(path: str) -> dict[str, np.ndarray]:
    """The columns of a Keras CSVLogger file as float arrays, keyed by column name."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


def _save(fig: Figure, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    FigureCanvasAgg(fig)
    with files.atomic_write(path, "wb") as f:  # A killed run leaves no half-drawn PNG.
        fig.savefig(f, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
    return path


def plot_learning_curves(
    histories: Mapping[str, str], path: str, train_curves: bool = True, held_out: str = "test"
) -> str:
    """Plots -L_k (training k) against epoch for several runs in one figure.

    Args:
      histories: Run label -> path of its history.csv.
      path: Output PNG.
      train_curves: Also draw each run's training-batch curve (dashed).
      held_out: What the history's `val_` columns were computed on ("test", "validation").

    Returns:
      `path`.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    max_epoch = 1
    for label, history_path in histories.items():
        history = read_history(history_path)
        if "val_iwae_bound" not in history:
            continue
        epochs = history["epoch"] + 1
        max_epoch = max(max_epoch, int(epochs[-1]))
        (line,) = ax.plot(
            epochs, -history["val_iwae_bound"], marker=".", label=f"{label}: {held_out}"
        )
        if train_curves and "iwae_bound" in history:
            ax.plot(
                epochs,
                -history["iwae_bound"],
                linestyle="--",
                color=line.get_color(),
                label=f"{label}: train batches",
            )
    if max_epoch > 50:
        # The paper's schedule spans 1..3280 epochs in stages of 3^i: log scale shows each.
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("-L_k at the training k (nats)")
    ax.set_title("Bound at the training k per epoch (an upper bound on the NLL)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_seed_curves(
    histories: Mapping[str, Mapping[int, str]],
    path: str,
    held_out: str = "validation",
    skip_epochs: int = 5,
) -> str:
    """Plots the training and held-out -L_k per epoch of several presets over their seeds.

    Two panels (training batches, held-out split), one colour per preset and one line per
    seed, a linear epoch axis, and y-limits set from epoch `skip_epochs` on, so that a bound
    turning by a nat after a fall of thirty stays visible. A dot marks each seed's best
    held-out epoch (where `select_best` takes the weights).

    Args:
      histories: Preset -> seed -> path of the run's history.csv.
      path: Output PNG.
      held_out: What the history's `val_` columns were computed on.
      skip_epochs: Epochs left out of the y-limits (they are still drawn).

    Returns:
      `path`.
    """
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2, sharey=False)
    colors = [f"C{i}" for i in range(10)]
    limits: dict[int, list[float]] = {0: [], 1: []}
    for color, (preset, by_seed) in zip(colors, histories.items(), strict=False):
        for number, (_, history_path) in enumerate(sorted(by_seed.items())):
            history = read_history(history_path)
            if "val_iwae_bound" not in history:
                continue
            epochs = history["epoch"] + 1
            label = preset if number == 0 else None
            for panel, column in enumerate(("iwae_bound", "val_iwae_bound")):
                values = -history[column]
                axes[panel].plot(epochs, values, color=color, linewidth=1, label=label)
                limits[panel] += list(values[skip_epochs:])
            best = int(np.argmax(history["val_iwae_bound"]))
            axes[1].plot(epochs[best], -history["val_iwae_bound"][best], "o", color=color)
    for panel, title in enumerate(("training batches", held_out)):
        axes[panel].set_title(f"-L_k per epoch, {title}")
        axes[panel].set_xlabel("epoch")
        axes[panel].grid(alpha=0.3)
        if limits[panel]:
            low, high = min(limits[panel]), max(limits[panel])
            margin = 0.05 * (high - low) + 0.1
            axes[panel].set_ylim(low - margin, high + margin)
    axes[0].set_ylabel("-L_k at the training k (nats)")
    if axes[0].lines:
        axes[0].legend(fontsize="small")
    return _save(fig, path)


def save_image_grid(images: np.ndarray, path: str, columns: int, title: str) -> str:
    """Saves intensities in [0, 1] ([n, H, W, C] or square rows) as a grid PNG (grey: black = 1)."""
    grid = np.clip(image_grid(images, columns), 0.0, 1.0)
    width = 0.4 * columns + 0.5
    fig = Figure(figsize=(width, (width - 0.5) * grid.shape[0] / grid.shape[1] + 0.8))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize="small")
    return _save(fig, path)


def prior_samples(
    model: ImportanceWeightedAutoencoder, num_samples: int, seed: int = 0
) -> np.ndarray:
    """Means of p(x | h_1) for ancestral samples of the generative model (`sample_images`).

    Args:
      model: A trained model.
      num_samples: Images to draw.
      seed: Seed of the draws (the same images as the SavedModel's `sample` for this seed).

    Returns:
      [num_samples, *data_shape] intensities in [0, 1].
    """
    return model.sample_images(num_samples, seed).mean.numpy()


def reconstructions(model: ImportanceWeightedAutoencoder, x: np.ndarray | tf.Tensor) -> np.ndarray:
    """Means of p(x | h_1 = E_q[h_1 | x]) for a batch of images [batch, *data_shape].

    No draw: both networks use their posterior-mean weights.
    """
    return model.reconstruct(x).numpy()


def latent_manifold(model: ImportanceWeightedAutoencoder, points_per_axis: int = 20) -> np.ndarray:
    """Pixel means on a grid over a 2-D latent space, row-major from the top-left.

    z_1 = Phi^-1(u) varies along rows' columns, z_2 = Phi^-1(v) down the rows, with u, v evenly
    spaced in [0.05, 0.95].

    Raises:
      ValueError: The model does not have exactly one stochastic layer of 2 latents.
    """
    if tuple(model.decoder.latent_sizes) != (2,):
        raise ValueError(
            f"a latent manifold needs one stochastic layer of 2 latents, got "
            f"{tuple(model.decoder.latent_sizes)}"
        )
    normal = statistics.NormalDist()
    axis = [normal.inv_cdf(u) for u in np.linspace(0.05, 0.95, points_per_axis)]
    z = np.array([(z1, z2) for z2 in reversed(axis) for z1 in axis], np.float32)
    return model.decoder.decode(tf.constant(z)).numpy()


def plot_prior_samples(
    model: ImportanceWeightedAutoencoder, path: str, num_samples: int = 100, seed: int = 0
) -> str:
    """Saves a 10-column grid of `prior_samples` to `path`."""
    images = prior_samples(model, num_samples, seed)
    title = "Samples: pixel means of p(x|h1), h ~ p(h)"
    return save_image_grid(images, path, columns=10, title=title)


def plot_reconstructions(
    model: ImportanceWeightedAutoencoder, x: np.ndarray | tf.Tensor, path: str
) -> str:
    """Saves data (odd rows) above their reconstructions (even rows), 10 per row pair."""
    x = np.asarray(x, np.float32)
    columns = 10
    rows = interleave_rows(x, reconstructions(model, x), columns)
    title = "Data (rows 1, 3, ...) and reconstructions: p(x | h1 = E_q[h1|x])"
    return save_image_grid(rows, path, columns=columns, title=title)


def plot_latent_manifold(
    model: ImportanceWeightedAutoencoder, path: str, points_per_axis: int = 20
) -> str:
    """Saves `latent_manifold` as a square grid to `path`."""
    images = latent_manifold(model, points_per_axis)
    title = "Latent manifold: p(x|z) at z = Phi^-1 of an even grid in (0.05, 0.95)^2"
    return save_image_grid(images, path, columns=points_per_axis, title=title)
