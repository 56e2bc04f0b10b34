"""Tests of iwae_tf.summaries' pieces (the event files are checked in test_train.py)."""

import numpy as np
import pytest
import tensorflow as tf

from iwae_tf import summaries
from iwae_tf.model import build_model


def test_image_grid_places_images_row_major():
    images = np.stack([np.full(784, i / 10.0) for i in range(5)])
    grid = summaries.image_grid(images, columns=3)
    assert grid.shape == (2 * 29 - 1, 3 * 29 - 1)
    assert grid[0, 0] == 0.0 and grid[0, 29] == pytest.approx(0.1)
    assert grid[29, 29 + 27] == pytest.approx(0.4)
    assert grid[28, 0] == 1.0  # The gap between rows.
    assert grid[29 + 5, 2 * 29 + 5] == 1.0  # The empty sixth cell.


def test_interleave_rows_pairs_each_row_with_its_reconstructions():
    top = np.stack([np.full(4, i, np.float32) for i in range(5)])
    bottom = -top
    rows = summaries.interleave_rows(top, bottom, columns=3)
    # Row 1: images 0-2; row 2: their partners; row 3: images 3-4 and a blank; row 4: partners.
    assert rows[:, 0].tolist() == [0, 1, 2, 0, -1, -2, 3, 4, 0, -3, -4, 0]


def test_uncertain_layers_are_found_by_path_in_uncertain_networks_only():
    model = build_model("iwaeu_rec", 2, latent_sizes=(3,), hidden_sizes=((8,),), data_shape=(784,))
    model(tf.zeros([1, 784]))
    found = summaries.uncertain_layers(model)
    assert sorted(found) == ["encoder/q_h1/gaussian_head", "encoder/q_h1/hidden_0"]
    assert all(layer.kernel_posterior is not None for layer in found.values())
    deterministic = build_model("iwae", 2, latent_sizes=(3,), hidden_sizes=((8,),))
    deterministic(tf.zeros([1, 784]))
    assert summaries.uncertain_layers(deterministic) == {}
