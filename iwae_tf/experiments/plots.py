"""Figures of trained models, as PNG files: learning curves, samples, reconstructions, manifolds.

All drawing uses matplotlib's Agg canvas directly (no pyplot, no global backend state), so it
works headless and inside tests. The images are Bernoulli means, not binary draws:

* prior samples: ancestral sampling down the generative model, h_L ~ N(0, I), then for a
  2-layer model h_1 ~ p(h_1 | h_2) (a draw, not its mean), and finally the pixel means
  sigmoid(logits of p(x | h_1)), as is usual for binarized-MNIST figures (Burda et al. 2016,
  Kingma & Welling 2014);
* reconstructions: the pixel means of p(x | h_1 = E_q[h_1 | x]), the encoder's mean;
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
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from iwae_tf import rng
from iwae_tf.model import ImportanceWeightedAutoencoder

IMAGE_SHAPE = (28, 28)


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
    fig.savefig(path, dpi=100)
    return path


def plot_learning_curves(histories: Mapping[str, str], path: str, train_curves: bool = True) -> str:
    """Plots -L_k (training k) against epoch for several runs in one figure.

    Args:
      histories: Run label -> path of its history.csv.
      path: Output PNG.
      train_curves: Also draw each run's training-batch curve (dashed).

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
        (line,) = ax.plot(epochs, -history["val_iwae_bound"], marker=".", label=f"{label}: test")
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


def image_grid(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Tiles [n, 784] images into one [rows * 29 - 1, columns * 29 - 1] array, row-major.

    Neighbouring images are separated by `pad` pixels of value 1 (drawn black), as are empty
    cells.
    """
    images = np.asarray(images).reshape((-1, *IMAGE_SHAPE))
    rows = -(-len(images) // columns)
    height, width = IMAGE_SHAPE
    grid = np.ones((rows * (height + pad) - pad, columns * (width + pad) - pad), np.float32)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        top, left = row * (height + pad), column * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid


def save_image_grid(images: np.ndarray, path: str, columns: int, title: str) -> str:
    """Saves [n, 784] intensities in [0, 1] as a grey-scale grid PNG (black = 1)."""
    grid = image_grid(images, columns)
    fig = Figure(figsize=(0.4 * columns + 0.5, 0.4 * grid.shape[0] / 29 + 0.8))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize="small")
    return _save(fig, path)


def _decode_means(
    model: ImportanceWeightedAutoencoder, latents: Sequence[tf.Tensor], seed: tf.Tensor
) -> np.ndarray:
    logits, _ = model.decoder(list(latents), seed=seed)
    return tf.sigmoid(logits).numpy()


def prior_samples(
    model: ImportanceWeightedAutoencoder, num_samples: int, seed: int = 0
) -> np.ndarray:
    """Pixel means of ancestral samples from the generative model.

    h_L ~ N(0, I); each lower layer is drawn from p(h_l | h_{l+1}); the images are
    sigmoid(logits of p(x | h_1)).

    Args:
      model: A trained model.
      num_samples: Images to draw.
      seed: Seed of the latent draws.

    Returns:
      [num_samples, pixels] intensities in [0, 1].
    """
    sizes = model.decoder.latent_sizes
    *seeds, weight_seed = rng.split(rng.from_int(seed), len(sizes) + 1)
    latents = [tf.zeros([num_samples, size]) for size in sizes]
    latents[-1] = tf.random.stateless_normal([num_samples, sizes[-1]], seeds[-1])
    for layer in reversed(range(len(sizes) - 1)):
        # The decoder's p(h_l | h_{l+1}) depends only on h_{l+1}, already drawn; the zeros
        # standing in for the layers below do not affect it.
        _, conditionals = model.decoder(latents, seed=weight_seed)
        gaussian = conditionals[layer]
        noise = tf.random.stateless_normal(tf.shape(gaussian.mean), seeds[layer])
        latents[layer] = gaussian.mean + gaussian.std * noise
    return _decode_means(model, latents, weight_seed)


def reconstructions(model: ImportanceWeightedAutoencoder, x: np.ndarray | tf.Tensor) -> np.ndarray:
    """Pixel means of p(x | h_1 = E_q[h_1 | x]) for a batch of binary images [batch, pixels]."""
    x = tf.convert_to_tensor(x, tf.float32)
    seed = rng.from_int(0)
    posterior = model.encoder(x, num_samples=1, seed=seed)
    latents = [tf.reshape(q.mean, [-1, q.mean.shape[-1]]) for _, q in posterior]
    return _decode_means(model, latents, seed)


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
    return _decode_means(model, [tf.constant(z)], rng.from_int(0))


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
    recon = reconstructions(model, x)
    columns = 10
    pairs = []
    for start in range(0, len(x), columns):
        block = slice(start, start + columns)
        data_row, recon_row = x[block], recon[block]
        pad = columns - len(data_row)
        blank = np.zeros((pad, x.shape[1]), np.float32)
        pairs += [np.concatenate([data_row, blank]), np.concatenate([recon_row, blank])]
    title = "Data (rows 1, 3, ...) and reconstructions: p(x | h1 = E_q[h1|x])"
    return save_image_grid(np.concatenate(pairs), path, columns=columns, title=title)


def plot_latent_manifold(
    model: ImportanceWeightedAutoencoder, path: str, points_per_axis: int = 20
) -> str:
    """Saves `latent_manifold` as a square grid to `path`."""
    images = latent_manifold(model, points_per_axis)
    title = "Latent manifold: p(x|z) at z = Phi^-1 of an even grid in (0.05, 0.95)^2"
    return save_image_grid(images, path, columns=points_per_axis, title=title)
