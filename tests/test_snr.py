"""Tests of iwae_tf.experiments.snr: the SNR arithmetic and a small measurement."""

import numpy as np
import pytest
import tensorflow as tf

from iwae_tf.bounds import Objective
from iwae_tf.experiments import snr
from iwae_tf.model import build_model


def test_signal_to_noise_is_mean_over_std_per_parameter():
    draws = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, -2.0], [2.0, 0.0, 0.0]])
    values = snr.signal_to_noise(draws)
    np.testing.assert_allclose(values[0], 2.0 / 1.0)
    assert np.isnan(values[1])  # No gradient at all.
    np.testing.assert_allclose(values[2], 0.0)


def test_fit_slope_recovers_a_power_law():
    ks = [1, 3, 10, 30, 100]
    assert snr.fit_slope(ks, [2.0 * k**-0.5 for k in ks]) == pytest.approx(-0.5)
    assert snr.fit_slope(ks, [0.1 * k**0.5 for k in ks]) == pytest.approx(0.5)


def test_snr_table_measures_every_estimator_k_and_network():
    model = build_model("iwae", 2, latent_sizes=(2,), hidden_sizes=((8,),), data_shape=(12,))
    model(tf.zeros([1, 12]))
    x = tf.constant(np.random.default_rng(0).random((6, 12)) < 0.4, tf.float32)
    rows = snr.snr_table(model, x, [1, 4], ["reparam", "dreg"], Objective("iwae"), 30)
    assert [(r["estimator"], r["k"], r["network"]) for r in rows] == [
        (e, k, n) for e in ("reparam", "dreg") for k in (1, 4) for n in ("encoder", "decoder")
    ]
    assert all(np.isfinite(r["median_snr"]) and r["median_snr"] > 0 for r in rows)
    # At k = 1 DReG is the path gradient of the ELBO, reparam adds the score term: they differ.
    at_one = {
        r["estimator"]: r["median_snr"] for r in rows if r["k"] == 1 and r["network"] == "encoder"
    }
    assert at_one["reparam"] != at_one["dreg"]
    fitted = snr.slopes(rows)
    assert set(fitted) == {"reparam", "dreg"} and set(fitted["dreg"]) == {"encoder", "decoder"}
