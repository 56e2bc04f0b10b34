"""Tests of the Frey Face builder `frey_face` on a small generated frey_rawface.mat."""

import shutil

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds

from iwae_tf.data import frey_face
from iwae_tf.data.errors import DataUnavailableError

NUM_IMAGES = 300
NUM_TRAIN = 270  # int(0.9 * 300), as Li & Turner's code computes it.
NUM_TEST = NUM_IMAGES - NUM_TRAIN


def _fake_faces(num_images: int, offset: int = 0) -> np.ndarray:
    """[n, 28, 20] uint8 images: image j encodes j, over a row-major pixel numbering that any
    column-major (transposed) reading scrambles."""
    j = np.arange(num_images)[:, None, None] + offset
    r = np.arange(28)[None, :, None]
    c = np.arange(20)[None, None, :]
    images = (j + 20 * r + c) % 256  # Row-major pixel number, shifted by j.
    images[:, 0, 0] = j[:, 0, 0] % 256  # Image j names itself...
    images[:, 0, 1] = j[:, 0, 0] // 256  # ...in base 256.
    return images.astype(np.uint8)


def _as_ff(images: np.ndarray) -> np.ndarray:
    """The frey_rawface.mat layout: uint8 [560, n], column j = image j flattened row-major."""
    return np.ascontiguousarray(images.reshape(len(images), 560).T)


def _write_mat(path, ff: np.ndarray) -> None:
    scipy.io.savemat(path, {"ff": ff})


def _examples(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, 28, 20, 1] uint8, indices [n] int64) of a split, in stored order."""
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    return (
        np.stack([e["image"] for e in examples]),
        np.array([e["index"] for e in examples]),
    )


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A fake frey_rawface.mat of 300 images, prepared through IWAE_TF_FREY_MAT."""
    root = tmp_path_factory.mktemp("fake_frey")
    images = _fake_faces(NUM_IMAGES)
    ff = _as_ff(images)
    mat = root / "elsewhere" / "frey_rawface.mat"
    mat.parent.mkdir()
    _write_mat(mat, ff)
    data_dir = root / "tfds"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(frey_face.MAT_ENV_VAR, str(mat))
        builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(data_dir))
        frey_face.prepare(builder)
    return {
        "mat": mat,
        "ff": ff,
        "images": images,
        "builder": builder,
        "train": _examples(builder, "train"),
        "test": _examples(builder, "test"),
    }


def test_builder_info_and_split_sizes(fake):
    builder = fake["builder"]
    assert isinstance(builder, frey_face.FreyFace)
    assert builder.name == "frey_face" and str(builder.version) == "1.0.0"
    assert builder.info.splits["train"].num_examples == NUM_TRAIN
    assert builder.info.splits["test"].num_examples == NUM_TEST
    spec = builder.as_dataset(split="train").element_spec
    assert spec["image"].shape == (28, 20, 1) and spec["image"].dtype == tf.uint8
    assert spec["index"].shape == () and spec["index"].dtype == tf.int64
    assert len(fake["train"][1]) == NUM_TRAIN and len(fake["test"][1]) == NUM_TEST
    # The real file's sizes under the same rule.
    train, test = frey_face.split_order(1965)
    assert (len(train), len(test)) == (1768, 197)


def test_each_image_is_its_ff_column_read_row_major(fake):
    ff = fake["ff"]
    for images, indices in (fake["train"], fake["test"]):
        for image, index in zip(images, indices, strict=True):
            expected = ff[:, index].reshape(28, 20)
            np.testing.assert_array_equal(image[..., 0], expected)
            # Image j names itself in its first two pixels.
            assert int(image[0, 0, 0]) + 256 * int(image[0, 1, 0]) == index
            # Negative controls: the column-major readings give other pictures.
            assert not np.array_equal(image[..., 0], ff[:, index].reshape(28, 20, order="F"))
            assert not np.array_equal(image[..., 0], ff[:, index].reshape(20, 28).T)


def test_splits_are_disjoint_cover_all_and_are_li_turners(fake):
    train_images, train_idx = fake["train"]
    test_images, test_idx = fake["test"]
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(NUM_IMAGES))
    # Shuffled, not file order: the split is not a contiguous block.
    assert sorted(train_idx.tolist()) != train_idx.tolist()
    assert sorted(test_idx.tolist()) != list(range(NUM_TRAIN, NUM_IMAGES))
    # Li & Turner's load_data(ratio=0.9, seed=0), verbatim but for the global RNG's restore.
    saved = np.random.get_state()
    try:
        data = fake["ff"].T.copy()  # [N, 560], as their pickle.
        np.random.seed(0)
        np.random.shuffle(data)
        num_train = int(0.9 * data.shape[0])
        data_train, data_test = data[:num_train], data[num_train:]
    finally:
        np.random.set_state(saved)
    np.testing.assert_array_equal(train_images.reshape(NUM_TRAIN, 560), data_train)
    np.testing.assert_array_equal(test_images.reshape(NUM_TEST, 560), data_test)


def test_decode_reads_bytes_as_k_over_255(fake):
    images = fake["train"][0][:4]
    decoded = frey_face.decode(tf.constant(images[0])).numpy()
    assert decoded.shape == (28, 20, 1) and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, images[0].astype(np.float32) / 255.0)
    edge = tf.constant(np.array([0, 255] * 280, np.uint8).reshape(28, 20, 1))
    assert set(np.unique(frey_face.decode(edge).numpy())) == {0.0, 1.0}


def test_manual_dir_build_is_identical(fake, tmp_path, monkeypatch):
    monkeypatch.delenv(frey_face.MAT_ENV_VAR, raising=False)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    shutil.copy(fake["mat"], manual / "frey_rawface.mat")
    builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(tmp_path))
    frey_face.prepare(builder)
    # A second, independent build: same images, same indices, same order.
    for split in ("train", "test"):
        images, indices = _examples(builder, split)
        np.testing.assert_array_equal(indices, fake[split][1])
        np.testing.assert_array_equal(images, fake[split][0])


def test_env_var_wins_over_manual_dir(fake, tmp_path, monkeypatch):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    # Another file in the manual directory: other pixels, other count.
    _write_mat(manual / "frey_rawface.mat", _as_ff(_fake_faces(40, offset=7)))
    monkeypatch.setenv(frey_face.MAT_ENV_VAR, str(fake["mat"]))
    builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(tmp_path))
    frey_face.prepare(builder)
    assert builder.info.splits["test"].num_examples == NUM_TEST
    np.testing.assert_array_equal(_examples(builder, "test")[0], fake["test"][0])


def test_missing_file_raises_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv(frey_face.MAT_ENV_VAR, raising=False)
    builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(tmp_path))
    with pytest.raises(DataUnavailableError) as info:
        frey_face.prepare(builder)
    message = str(info.value)
    manual_path = tmp_path / "downloads" / "manual" / "frey_rawface.mat"
    assert "\n" not in message
    assert "IWAE_TF_FREY_MAT" in message
    assert str(manual_path) in message
    assert "https://cs.nyu.edu/~roweis/data/frey_rawface.mat" in message
    assert not builder.is_prepared()
    assert not (tmp_path / "frey_face" / "1.0.0").exists()


def test_empty_manual_dir_also_raises(tmp_path, monkeypatch):
    # TFDS' own `manual_dir` asserts on an empty directory; that must not leak out.
    monkeypatch.delenv(frey_face.MAT_ENV_VAR, raising=False)
    (tmp_path / "downloads" / "manual").mkdir(parents=True)
    builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(tmp_path))
    with pytest.raises(DataUnavailableError, match="IWAE_TF_FREY_MAT"):
        frey_face.prepare(builder)


def test_prepare_translates_tfds_missing_manual_dir_error(tmp_path, monkeypatch):
    builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(tmp_path))

    def tfds_complains():
        raise AssertionError(
            "Manual directory /x/manual does not exist or is empty. Create it and "
            "download/extract dataset artifacts in there using instructions:\n..."
        )

    monkeypatch.setattr(builder, "download_and_prepare", tfds_complains)
    with pytest.raises(DataUnavailableError) as info:
        frey_face.prepare(builder)
    assert "\n" not in str(info.value)
    assert "IWAE_TF_FREY_MAT" in str(info.value)
    assert str(tmp_path / "downloads" / "manual" / "frey_rawface.mat") in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__

    def unrelated():
        raise AssertionError("something else")

    monkeypatch.setattr(builder, "download_and_prepare", unrelated)
    with pytest.raises(AssertionError, match="something else"):
        frey_face.prepare(builder)


def test_env_var_to_missing_file_raises(tmp_path, monkeypatch):
    monkeypatch.setenv(frey_face.MAT_ENV_VAR, str(tmp_path / "absent.mat"))
    builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataUnavailableError, match="IWAE_TF_FREY_MAT points to .*absent.mat"):
        frey_face.prepare(builder)


def test_corrupt_file_fails_the_build(tmp_path, monkeypatch):
    junk = tmp_path / "frey_rawface.mat"
    junk.write_bytes(b"<!DOCTYPE html><html>404: Not Found</html>" * 10)
    monkeypatch.setenv(frey_face.MAT_ENV_VAR, str(junk))
    builder = tfds.builder(frey_face.BUILDER_NAME, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataUnavailableError, match="Cannot read .*frey_rawface.mat"):
        frey_face.prepare(builder)
    assert not builder.is_prepared()


@pytest.mark.parametrize(
    ("contents", "match"),
    [
        ({"faces": np.zeros((560, 5), np.uint8)}, "no variable 'ff'"),
        ({"ff": np.zeros((784, 5), np.uint8)}, r"uint8 \[784, 5\], expected uint8 \[560, N\]"),
        ({"ff": np.zeros((5, 560), np.uint8)}, r"uint8 \[5, 560\]"),
        ({"ff": np.zeros((560, 5))}, r"float64 \[560, 5\]"),
        ({"ff": np.zeros((560, 1), np.uint8)}, r"uint8 \[560, 1\]"),
    ],
)
def test_malformed_ff_is_rejected(tmp_path, contents, match):
    path = tmp_path / "frey_rawface.mat"
    scipy.io.savemat(path, contents)
    with pytest.raises(DataUnavailableError, match=match):
        frey_face.load_faces(path)


def test_load_faces_reads_columns_row_major(tmp_path):
    images = _fake_faces(6)
    path = tmp_path / "frey_rawface.mat"
    _write_mat(path, _as_ff(images))
    faces = frey_face.load_faces(path)
    assert faces.shape == (6, 28, 20, 1) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces[..., 0], images)
