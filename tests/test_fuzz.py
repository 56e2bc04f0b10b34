"""Property-based fuzzing of the exported `score` signature and `ExportedModel.score` (#15).

hypothesis draws inputs of every shape, dtype and value the checks distinguish (zero images,
wrong ranks and sizes, float16/32/64, bool, int, uint8, NaN, +-inf, negative, above 1, grey,
binary). `expected_error` below is an independent statement of the documented contract
(iwae_tf/serving.py): the first defect in the order rank, shape, dtype, finiteness, range,
binarity names the error; an input without defects gets a score. Every draw must get exactly
that, never another exception. For valid input the scores have one entry per image, are
finite, are <= 0 (a Bernoulli model's log p(x) is; the estimates sit nats below 0 for this
model, far beyond their Monte Carlo error) and repeat under the same seed.

Profiles (tests/conftest.py): `ci` (the default) draws few examples; run many more with
`HYPOTHESIS_PROFILE=local python -m pytest -n 0 tests/test_fuzz.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from iwae_tf import export, serving
from iwae_tf.model import build_model

SHAPE = (4, 3, 1)  # Small images: the checks, not the network, are under test.
SIZE = 12
SPECIAL = [0.0, 1.0, 0.5, 1e-7, -1.0, 2.0, np.nan, np.inf, -np.inf, 1e30]
DTYPES = [np.float32, np.float64, np.float16, np.bool_, np.int32, np.uint8]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_model(
        "iwae", 2, latent_sizes=(2,), hidden_sizes=((8,),), data_shape=SHAPE, output_bias=-1.0
    )
    model(tf.zeros([1, *SHAPE]))
    path = str(tmp_path_factory.mktemp("fuzz") / "model")
    export.export_saved_model(model, path, {"dataset": "fuzz"})
    return serving.load_exported(path)


@st.composite
def arrays(draw: st.DrawFn, dtypes: list = DTYPES) -> np.ndarray:
    """Arrays shaped like the model's input, like its near misses, or unlike it at all."""
    n = draw(st.integers(0, 3))
    shape = draw(
        st.sampled_from(
            [(n, *SHAPE), (n, 4, 3), (n, SIZE), (n, 4, 3, 2), (n, 5), SHAPE, (n,), (n, 4, 3, 1, 1)]
        )
    )
    dtype = draw(st.sampled_from(dtypes))
    if np.issubdtype(dtype, np.floating):
        binary = draw(st.booleans())
        values = st.sampled_from([0.0, 1.0] if binary else SPECIAL)
        with np.errstate(over="ignore"):  # 1e30 in float16 is inf: also a fine input.
            return draw(hnp.arrays(np.float64, shape, elements=values)).astype(dtype)
    if dtype == np.bool_:
        return draw(hnp.arrays(dtype, shape))
    return draw(hnp.arrays(dtype, shape, elements=st.integers(0, 2)))


def expected_error(x: np.ndarray, convert: bool = True) -> str | None:
    """The documented message for x's first defect, or None for a valid input.

    `convert`: the host's lossless conversions (rows and [N, H, W] images reshaped, bool to
    float) apply; the signature makes none.
    """
    if convert and x.ndim == 2 and x.shape[1] == SIZE:
        x = x.reshape(len(x), *SHAPE)
    elif convert and x.ndim == 3 and x.shape[1:] == SHAPE[:2]:
        x = x[..., None]
    if x.ndim != 4:
        return "x must have rank 4, [N, 4, 3, 1]"
    if x.shape[1:] != SHAPE:
        return "x must have shape [N, 4, 3, 1]"
    if x.dtype == np.bool_:
        return None
    if not np.issubdtype(x.dtype, np.floating):
        return "x must be a float array"
    values = x.astype(np.float64)
    if not np.isfinite(values).all():
        return "x contains NaN or inf"
    if ((values < 0) | (values > 1)).any():
        return "x has values outside [0, 1]"
    if ((values != 0) & (values != 1)).any():
        return "x is not binary"
    return None


def check_scores(log_px: np.ndarray, elbo: np.ndarray, n: int) -> None:
    assert log_px.shape == (n,) and elbo.shape == (n,)
    assert np.isfinite(log_px).all() and np.isfinite(elbo).all()
    assert (log_px <= 0).all(), log_px
    assert (elbo <= log_px + 1e-4).all()  # Jensen: the ELBO of the same draws is lower.


@given(x=arrays(), k=st.integers(1, 4), seed=st.integers(-(2**63), 2**63 - 1))
def test_exported_model_scores_or_names_the_first_defect(exported, x, k, seed):
    expected = expected_error(x)
    if expected is not None:
        with pytest.raises(ValueError) as info:
            exported.score(x, k=k, seed=seed)
        message = str(info.value)
        assert message.startswith(expected), (message, expected)
        assert "\n" not in message
        return
    first = exported.score(x, k=k, seed=seed)
    check_scores(first["log_px"], first["elbo"], len(x))
    again = exported.score(x, k=k, seed=seed)
    np.testing.assert_allclose(again["log_px"], first["log_px"], rtol=1e-6)


@given(
    x=arrays(dtypes=[np.float32]),
    k=st.sampled_from([-1, 0, 1, 3, 2**31, 2**40]),
    seed=st.integers(-(2**63), 2**63 - 1),
)
def test_score_signature_scores_or_fails_its_assertion(exported, x, k, seed):
    score = exported._signatures["score"]
    x_error = expected_error(x, convert=False)
    k_error = None if 1 <= k <= serving.MAX_COUNT else "k must be in [1, 2^31 - 1]"
    arguments = {
        "x": tf.constant(x),
        "k": tf.constant(k, tf.int64),
        "seed": tf.constant(seed, tf.int64),
    }
    if x_error is None and k_error is None:
        out = score(**arguments)
        check_scores(out["log_px"].numpy(), out["elbo"].numpy(), len(x))
        again = score(**arguments)
        np.testing.assert_allclose(again["log_px"].numpy(), out["log_px"].numpy(), rtol=1e-6)
        return
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        score(**arguments)
    line = next(line for line in info.value.message.splitlines() if "assertion failed" in line)
    # The x and k checks are independent ops: with both wrong, either may fail first.
    allowed = [error for error in (x_error, k_error) if error is not None]
    assert any(f"assertion failed: [{error}" in line for error in allowed), (line, allowed)


def test_the_oracle_catches_a_wrong_contract():
    """Negative control: an implementation that skipped the binarity check (or converted
    integers) would disagree with the oracle on these inputs."""
    grey = np.full((1, *SHAPE), 0.5, np.float32)
    assert expected_error(grey) == "x is not binary"
    assert serving.check_images(grey, SHAPE, binary=False) is not None  # Passes unchecked.
    assert expected_error(np.ones((1, *SHAPE), np.uint8)) == "x must be a float array"
    assert expected_error(np.ones((2, SIZE), np.float64)) is None
