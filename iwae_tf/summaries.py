"""TensorBoard summaries of a training run, beside Keras' own scalars.

`train_and_evaluate` writes to <workdir>/tensorboard:

* `train/`, `validation/` (the Keras `TensorBoard` callback): per epoch, `epoch_loss`,
  `epoch_iwae_bound`, `epoch_elbo` and `epoch_learning_rate`.
* `model/` (`ModelSummaries`): per epoch, for every uncertain layer, statistics of its kernel's
  posterior standard deviations sigma = softplus(rho), `posterior_scale/<layer>/{mean,min,max}`;
  every `image_epochs` epochs and at the last one, the image grids `prior_samples` (pixel means
  of `Decoder.sample`) and `reconstructions` (rows of data above rows of the pixel means of
  p(x | h_1 = E_q[h_1 | x]), weights at their posterior means).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from iwae_tf import layers

TENSORBOARD_DIR = "tensorboard"
MODEL_RUN = "model"
PRIOR_SAMPLES = 64
GRID_COLUMNS = 8


def image_grid(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Tiles images [n, H, W, C] (or square grey rows [n, H * H]) into one grid, row-major.

    Neighbouring images are separated by `pad` pixels of value 1, as are empty cells. A grey
    grid is [rows * (H + pad) - pad, columns * (W + pad) - pad]; a colour one has C channels.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        side = int(round(np.sqrt(images.shape[1])))
        images = images.reshape((-1, side, side, 1))
    _, height, width, channels = images.shape
    rows = -(-len(images) // columns)
    grid = np.ones(
        (rows * (height + pad) - pad, columns * (width + pad) - pad, channels), np.float32
    )
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        top, left = row * (height + pad), column * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid[..., 0] if channels == 1 else grid


def interleave_rows(top: np.ndarray, bottom: np.ndarray, columns: int) -> np.ndarray:
    """Rows of `columns` images of `top`, each followed by the matching row of `bottom`.

    Short last rows are padded with blank (0) images, so that pairs stay aligned.
    """
    top, bottom = np.asarray(top, np.float32), np.asarray(bottom, np.float32)
    pairs = []
    for start in range(0, len(top), columns):
        block = slice(start, start + columns)
        blank = np.zeros((columns - len(top[block]), *top.shape[1:]), np.float32)
        pairs += [np.concatenate([top[block], blank]), np.concatenate([bottom[block], blank])]
    return np.concatenate(pairs)


def uncertain_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The model's dense layers with a weight posterior, by a path such as encoder/q_h1/hidden_0."""
    found = {}
    for network in (model.encoder, model.decoder):
        for module in network.submodules:
            if getattr(module, "kernel_posterior", None) is not None:
                loc, _ = layers.kernel_posterior_variables(module)
                # The variable's name carries the layer's path: <model>/<network>/.../<var>:0.
                path = loc.name.split(":")[0].rsplit("/", 1)[0]
                found[path[path.find(network.name) :]] = module
    return found


class ModelSummaries(keras.callbacks.Callback):
    """Writes weight-posterior scale statistics and image grids to TensorBoard."""

    def __init__(self, log_dir: str, images: np.ndarray, image_epochs: int, seed: int) -> None:
        """Sets up the writer.

        Args:
          log_dir: The run's TensorBoard directory; summaries go to its `model/` run.
          images: [n, *data_shape] images to reconstruct (e.g. the first test batch).
          image_epochs: Epochs between image grids (the last epoch always gets one).
          seed: Seed of the prior samples, the same every time, so grids compare over epochs.
        """
        super().__init__()
        self.writer = tf.summary.create_file_writer(f"{log_dir}/{MODEL_RUN}")
        self.images = np.asarray(images, np.float32)
        self.image_epochs = image_epochs
        self.sample_seed = seed

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        last = epoch + 1 == self.params.get("epochs")
        with self.writer.as_default(step=epoch):
            for path, layer in uncertain_layers(self.model).items():
                scales = layers.posterior_scales(layer)
                tf.summary.scalar(f"posterior_scale/{path}/mean", tf.reduce_mean(scales))
                tf.summary.scalar(f"posterior_scale/{path}/min", tf.reduce_min(scales))
                tf.summary.scalar(f"posterior_scale/{path}/max", tf.reduce_max(scales))
            if (epoch + 1) % self.image_epochs == 0 or last:
                self._write_images()
        self.writer.flush()

    def _write_images(self) -> None:
        samples = self.model.sample_images(PRIOR_SAMPLES, self.sample_seed).mean.numpy()
        recon = self.model.reconstruct(self.images).numpy()
        grids = {
            "prior_samples": image_grid(samples, GRID_COLUMNS),
            "reconstructions": image_grid(
                interleave_rows(self.images, recon, GRID_COLUMNS), GRID_COLUMNS
            ),
        }
        for name, grid in grids.items():
            grid = grid[..., np.newaxis] if grid.ndim == 2 else grid
            tf.summary.image(name, np.clip(grid, 0.0, 1.0)[np.newaxis])
