"""Tests of the Omniglot builder `omniglot_iwae` on a small generated chardata.mat."""

import shutil
import time

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds

from iwae_tf.data import (
    DataUnavailableError,
    binarize,
    eval_dataset,
    load_chardata,
    load_images,
    mean_image,
    num_examples,
    omniglot,
    reachability,
    train_dataset,
)

NUM_TRAIN, NUM_TEST = 12, 5
# Every fake image is 1.0 on a wide block at the top left and 0.0 on the bottom rows, so a
# transposed image (wrong reshape order) is recognizable at a glance, and both regions must
# survive binarization unchanged.
ONES = (slice(0, 3), slice(0, 8))  # 3 rows x 8 columns.
ZEROS = (slice(24, 28), slice(None))


def _fake_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 28, 28] float64 images: random doubles (not multiples of 1/255) plus the markers."""
    images = rng.random((n, 28, 28))
    images[(slice(None), *ONES)] = 1.0
    images[(slice(None), *ZEROS)] = 0.0
    return images


def _as_columns(images: np.ndarray) -> np.ndarray:
    """The chardata.mat layout: [784, n], each column an image in column-major (MATLAB) order."""
    return np.stack([image.reshape(784, order="F") for image in images], axis=1)


def _write_chardata(path, train: np.ndarray, test: np.ndarray) -> None:
    # The real file also has one-hot alphabet targets; the loader must ignore them.
    scipy.io.savemat(
        path,
        {
            "data": _as_columns(train),
            "testdata": _as_columns(test),
            "target": np.eye(3)[:, np.arange(len(train)) % 3],
        },
    )


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A fake chardata.mat (12 train, 5 test) in a data_dir's manual directory, prepared."""
    rng = np.random.default_rng(0)
    train, test = _fake_images(rng, NUM_TRAIN), _fake_images(rng, NUM_TEST)
    root = tmp_path_factory.mktemp("fake_omniglot")
    mat = root / "chardata.mat"
    _write_chardata(mat, train, test)
    data_dir = root / "tfds"
    (data_dir / "downloads" / "manual").mkdir(parents=True)
    shutil.copy(mat, data_dir / "downloads" / "manual" / "chardata.mat")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(omniglot.MAT_ENV_VAR, raising=False)
        num_examples("omniglot", "train", str(data_dir))  # Prepares the dataset.
    return {
        "data_dir": str(data_dir),
        "mat": mat,
        # What the builder must store: row-major float32 images.
        "train": train.reshape(NUM_TRAIN, 784).astype(np.float32),
        "test": test.reshape(NUM_TEST, 784).astype(np.float32),
    }


def _images(ds: tf.data.Dataset) -> np.ndarray:
    """The images of `ds`, checked to be [28, 28, 1], flattened row-major to [n, 784]."""
    images = np.stack(list(ds.as_numpy_iterator()))
    assert images.shape[1:] == (28, 28, 1)
    return images.reshape(len(images), 784)


def test_reshape_columns_reads_each_column_in_fortran_order():
    columns = np.arange(784 * 3).reshape(784, 3)
    rows = omniglot.reshape_columns(columns)
    assert rows.shape == (3, 784)
    for n in range(3):
        for r, c in [(0, 1), (1, 0), (5, 27), (27, 5), (13, 14)]:
            # Pixel (row r, column c) is entry r + 28 c of the column (column-major).
            assert rows[n, 28 * r + c] == columns[r + 28 * c, n]
    with pytest.raises(ValueError, match="784"):
        omniglot.reshape_columns(columns.T)


def test_load_chardata_matches_authors_loader(fake):
    train, test = load_chardata(fake["mat"])
    assert train.dtype == np.float32 and train.shape == (NUM_TRAIN, 784)
    assert test.dtype == np.float32 and test.shape == (NUM_TEST, 784)
    np.testing.assert_array_equal(train, fake["train"])
    np.testing.assert_array_equal(test, fake["test"])
    # Upright, not transposed: the 3x8 block of ones is wide.
    first = train[0].reshape(28, 28)
    assert (first[ONES] == 1).all() and not (first[:8, :3] == 1).all()
    # The IWAE authors' code, verbatim but for numpy's spelling of order="fortran".
    raw = scipy.io.loadmat(fake["mat"])

    def reshape_data(data):
        return data.reshape((-1, 28, 28)).reshape((-1, 28 * 28), order="F")

    np.testing.assert_array_equal(train, reshape_data(raw["data"].T.astype("float32")))
    np.testing.assert_array_equal(test, reshape_data(raw["testdata"].T.astype("float32")))


def test_builder_splits_features_and_order(fake):
    data_dir = fake["data_dir"]
    assert num_examples("omniglot", "train", data_dir) == NUM_TRAIN
    assert num_examples("omniglot", "test", data_dir) == NUM_TEST
    builder = tfds.builder("omniglot_iwae", data_dir=data_dir)
    assert str(builder.version) == "1.0.0"
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    test = list(tfds.as_numpy(builder.as_dataset(split="test")))
    spec = builder.as_dataset(split="train").element_spec
    assert spec["image"].shape == (784,) and spec["image"].dtype == tf.float32
    assert spec["index"].dtype == tf.int64
    # Train: the authors' permutation of the file's columns; test: file order.
    order = np.random.RandomState(123).permutation(NUM_TRAIN)
    assert sorted(order) != list(order)
    np.testing.assert_array_equal([e["index"] for e in train], order)
    np.testing.assert_array_equal(np.stack([e["image"] for e in train]), fake["train"][order])
    np.testing.assert_array_equal([e["index"] for e in test], np.arange(NUM_TEST))
    np.testing.assert_array_equal(np.stack([e["image"] for e in test]), fake["test"])


def test_train_slices_are_authors_train_and_validation_sets(fake):
    # The authors' loader: permute with RandomState(123), hold out the last n for validation.
    n_valid = 3
    permuted = fake["train"][np.random.RandomState(123).permutation(NUM_TRAIN)]
    head = _images(load_images("omniglot", f"train[:-{n_valid}]", fake["data_dir"]))
    tail = _images(load_images("omniglot", f"train[-{n_valid}:]", fake["data_dir"]))
    np.testing.assert_array_equal(head, permuted[:-n_valid])
    np.testing.assert_array_equal(tail, permuted[-n_valid:])


def test_mean_image_is_exact_mean(fake):
    np.testing.assert_allclose(
        mean_image("omniglot", fake["data_dir"]).reshape(784),
        fake["train"].astype(np.float64).mean(axis=0),
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        mean_image("omniglot", fake["data_dir"], split="test").reshape(784),
        fake["test"].astype(np.float64).mean(axis=0),
        rtol=0,
        atol=1e-12,
    )


def test_train_dataset_binarizes_dynamically_with_intensities_as_probabilities(fake):
    epochs = 300
    ds = train_dataset("omniglot", NUM_TRAIN, seed=1, data_dir=fake["data_dir"])
    assert ds.element_spec.shape == (NUM_TRAIN, 28, 28, 1)
    # One batch of NUM_TRAIN images per pass over the split.
    draws = np.concatenate(list(ds.take(epochs).as_numpy_iterator())).reshape(-1, 784)
    assert draws.shape == (epochs * NUM_TRAIN, 784) and draws.dtype == np.float32
    assert set(np.unique(draws)) == {0.0, 1.0}
    images = draws.reshape(-1, 28, 28)
    assert (images[(slice(None), *ONES)] == 1).all()
    assert (images[(slice(None), *ZEROS)] == 0).all()
    # Every epoch sees every image once, so the draws average to the mean intensity;
    # standard error <= 0.5 / sqrt(3600) ~ 0.008. A fixed binarization would not redraw.
    np.testing.assert_allclose(draws.mean(axis=0), fake["train"].mean(axis=0), atol=0.05)
    assert not np.array_equal(draws[:NUM_TRAIN], draws[NUM_TRAIN : 2 * NUM_TRAIN])


def test_eval_dataset_binarizes_test_split_once(fake):
    ds = eval_dataset("omniglot", "test", batch_size=2, seed=3, data_dir=fake["data_dir"])
    first = np.concatenate(list(ds.as_numpy_iterator()))
    second = np.concatenate(list(ds.as_numpy_iterator()))
    assert first.shape == (NUM_TEST, 28, 28, 1)
    first, second = first.reshape(NUM_TEST, 784), second.reshape(NUM_TEST, 784)
    np.testing.assert_array_equal(first, second)
    for i in range(NUM_TEST):
        want = binarize(tf.constant(fake["test"][i]), tf.constant([3, i], tf.int64))
        np.testing.assert_array_equal(first[i], want)


def test_env_var_overrides_manual_dir(fake, tmp_path, monkeypatch):
    monkeypatch.setenv(omniglot.MAT_ENV_VAR, str(fake["mat"]))
    monkeypatch.setattr(reachability, "unreachable_reason", _no_network_allowed)
    data_dir = str(tmp_path / "tfds")
    assert num_examples("omniglot", "test", data_dir) == NUM_TEST
    np.testing.assert_array_equal(_images(load_images("omniglot", "test", data_dir)), fake["test"])


def _no_network_allowed(url: str) -> str:
    raise AssertionError(f"must not go to the network for {url}")


def test_offline_without_file_raises_one_clear_error_fast(tmp_path, monkeypatch):
    monkeypatch.delenv(omniglot.MAT_ENV_VAR, raising=False)
    probed = []
    monkeypatch.setattr(
        reachability, "unreachable_reason", lambda url: probed.append(url) or "no network (test)"
    )
    monkeypatch.setattr(tfds.download.DownloadManager, "download", _no_download_allowed)
    data_dir = tmp_path / "tfds"
    start = time.monotonic()
    with pytest.raises(DataUnavailableError) as info:
        load_images("omniglot", "train", str(data_dir))
    assert time.monotonic() - start < 20
    assert probed == [omniglot.CHARDATA_URL]
    message = str(info.value)
    manual_path = data_dir / "downloads" / "manual" / "chardata.mat"
    assert message == (
        "Cannot prepare dataset 'omniglot': Omniglot needs chardata.mat, which is not at "
        f"{manual_path} and could not be downloaded from "
        "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat "
        "(no network (test)). Download it on a machine with network access and put it at "
        f"{manual_path}, or set IWAE_TF_OMNIGLOT_MAT to its path."
    )
    assert info.value.__suppress_context__ and info.value.__cause__ is None
    assert not (data_dir / "omniglot_iwae" / "1.0.0").exists()


def _no_download_allowed(self, url_or_urls):
    raise AssertionError(f"must not download {url_or_urls}")


def test_failed_download_raises_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.delenv(omniglot.MAT_ENV_VAR, raising=False)
    monkeypatch.setattr(reachability, "unreachable_reason", lambda url: None)  # "Online".

    def fail(self, url_or_urls):
        raise tfds.download.DownloadError(f"Failed to get url {url_or_urls}. HTTP code: 404.")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fail)
    with pytest.raises(DataUnavailableError, match="DownloadError: Failed to get url .* 404"):
        num_examples("omniglot", "train", str(tmp_path / "tfds"))


def test_env_var_to_missing_file_raises(tmp_path, monkeypatch):
    monkeypatch.setenv(omniglot.MAT_ENV_VAR, str(tmp_path / "absent.mat"))
    with pytest.raises(DataUnavailableError, match="IWAE_TF_OMNIGLOT_MAT points to .*absent.mat"):
        num_examples("omniglot", "train", str(tmp_path / "tfds"))


def test_unreadable_or_bad_files_are_rejected(tmp_path):
    (tmp_path / "junk.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(DataUnavailableError, match="Cannot read .*junk.mat"):
        load_chardata(tmp_path / "junk.mat")
    # What a captive portal or proxy may serve instead of the file.
    (tmp_path / "page.mat").write_bytes(b"<!DOCTYPE html><html>404: Not Found</html>" * 10)
    with pytest.raises(DataUnavailableError, match="Cannot read .*page.mat"):
        load_chardata(tmp_path / "page.mat")
    scipy.io.savemat(tmp_path / "nodata.mat", {"testdata": np.zeros((784, 2))})
    with pytest.raises(ValueError, match="no matrix 'data'"):
        load_chardata(tmp_path / "nodata.mat")
    scipy.io.savemat(tmp_path / "wide.mat", {"data": np.zeros((2, 784)), "testdata": 0})
    with pytest.raises(ValueError, match=r"\[784, N\]"):
        load_chardata(tmp_path / "wide.mat")
    grey = np.zeros((784, 2))
    grey[5, 1] = 255.0  # 0..255 levels instead of [0, 1].
    scipy.io.savemat(tmp_path / "levels.mat", {"data": grey, "testdata": grey})
    with pytest.raises(ValueError, match="data image 1 pixel 140 is 255.0"):
        load_chardata(tmp_path / "levels.mat")
