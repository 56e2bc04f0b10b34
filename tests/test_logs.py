"""Tests of iwae_tf.logs: the verbosity read off the command line before absl parses it."""

import pytest

from iwae_tf import logs


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train.py"], 0),
        (["train.py", "--k=5"], 0),
        (["train.py", "--verbosity=1"], 1),
        (["train.py", "--verbosity", "2", "--k=5"], 2),
        (["train.py", "-v", "1"], 1),
        (["train.py", "-v=-1"], -1),
        (["train.py", "--verbosity=loud"], 0),  # absl reports the bad value itself.
        (["train.py", "--", "--verbosity=1"], 0),  # After --, not a flag.
        (["train.py", "--verbosity_extra=3"], 0),  # Another flag's name.
    ],
)
def test_requested_verbosity(argv, expected):
    assert logs.requested_verbosity(argv) == expected
