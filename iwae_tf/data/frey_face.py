"""Brendan Frey's face images as a TFDS dataset (`frey_face`), built offline from a manual file.

The data: 1,965 grey-scale video frames of Brendan Frey's face with varying expression and pose,
28 rows x 20 columns each, 8-bit intensities. It is distributed by Sam Roweis as
`frey_rawface.mat` (`SOURCE_URL`, listed on https://cs.nyu.edu/~roweis/data.html).

Layout: the MATLAB variable `ff` is uint8 `[560, 1965]`, one image per column. Column `j`
holds image `j` row-major, i.e. the image is `ff[:, j].reshape(28, 20)` (C order), which is
what the usual loaders do with `ff.T.reshape((-1, 28, 20))` (e.g. DeepFried2's Frey Face
loader; anglepy's `ff.T` rows are the same flattened images). Read the other way
(`order="F"`, or a `(20, 28)` reshape then a transpose) gives a scrambled face; the tests pin
the C-order reading down.

Splits, after Li & Turner (2016), whose Frey Face numbers (IWAE / VR-max / VAE) come from the
code at github.com/YingzhenLi/VRbound (`vae_numpy/train_freyface.py` and
`vae_autograd/demo/train_freyface.py`, `load_data(ratio=0.9, seed=0)`). That code loads the
1,965 x 560 matrix of y0ast's `freyfaces.pkl` (github.com/y0ast/Variational-Autoencoder), then

    np.random.seed(seed); np.random.shuffle(data)
    num_train = int(ratio * data.shape[0])
    data_train, data_test = data[:num_train], data[num_train:]

with `seed=0` by default. Shuffling the rows with the seeded global generator is the
permutation `np.random.RandomState(0).permutation(1965)` (`split_order`), so:

    * `train`: the first `int(0.9 * 1965) = 1768` permuted images, in that permuted order;
    * `test`: the remaining 197, in permuted order.

Feature `index` is an image's column in `ff`. Two assumptions, neither checkable offline:
that `freyfaces.pkl`'s rows are `ff`'s columns in file order (it is a pickled float copy of
this file), and that one split is what the paper means: its text says "10-fold cross
validation" and reports means +- standard errors, while the code draws a fresh random 90/10
split per `--seed`; `seed=0` (the code's default) is the split stored here.

Likelihood: the intensities are continuous data, meant for a Gaussian (or other continuous)
likelihood, as in Kingma & Welling (2014) and Li & Turner (2016); they can also be binarized
like the other datasets. The builder stores the bytes `k`; `decode` reads them as `k / 255`.
Log-densities of continuous data depend on that scale: Kingma's anglepy loader divides by
256, and the scale of `freyfaces.pkl` is not known here; `k / 256` instead of `k / 255`
shifts a 560-pixel log-density by `560 * log(256 / 255) ~ 2.19` nats, so compare published
numbers with care.

Where `frey_rawface.mat` comes from, first match wins: the environment variable
`IWAE_TF_FREY_MAT` (a path), then the manual directory (by default
`<data_dir>/downloads/manual/frey_rawface.mat`). There is no download: a missing, unreadable
or malformed file raises `DataUnavailableError` saying what to do.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds

from iwae_tf.data.errors import DataUnavailableError

__all__ = [
    "BUILDER_NAME",
    "FILENAME",
    "IMAGE_SHAPE",
    "MAT_ENV_VAR",
    "NUM_PIXELS",
    "SOURCE_URL",
    "SPLIT_SEED",
    "TRAIN_FRACTION",
    "FreyFace",
    "decode",
    "find_mat",
    "load_faces",
    "prepare",
    "split_order",
]

BUILDER_NAME = "frey_face"
"""The TFDS builder name."""

MAT_ENV_VAR = "IWAE_TF_FREY_MAT"
"""Environment variable that, when set, is the path of `frey_rawface.mat` to build from."""

FILENAME = "frey_rawface.mat"

SOURCE_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"

IMAGE_SHAPE: tuple[int, int, int] = (28, 20, 1)
"""Rows, columns, channels of one face."""
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

SPLIT_SEED = 0
"""Seed of Li & Turner's shuffle (`load_data(seed=0)` in VRbound)."""
TRAIN_FRACTION = 0.9
"""Li & Turner's `ratio`: the first `int(0.9 * N)` shuffled images train, the rest test."""

_CITATION = r"""@misc{roweis_frey_face,
  author={Frey, Brendan J. and Roweis, Sam},
  title={Frey Face dataset (frey\_rawface.mat)},
  howpublished={\url{https://cs.nyu.edu/~roweis/data.html}}
}
@inproceedings{li2016renyi,
  title={R{\'e}nyi Divergence Variational Inference},
  author={Li, Yingzhen and Turner, Richard E.},
  booktitle={Advances in Neural Information Processing Systems},
  volume={29},
  year={2016}
}"""

_DESCRIPTION = """\
Brendan Frey's face: 1,965 grey-scale 28x20 video frames, from Sam Roweis' frey_rawface.mat
(variable `ff`, uint8 [560, 1965], image j = ff[:, j].reshape(28, 20)). Splits follow Li &
Turner (2016, github.com/YingzhenLi/VRbound): rows shuffled with np.random.seed(0), the first
int(0.9 * N) = 1768 for `train` and the other 197 for `test`, both in shuffled order. `image`
holds the original bytes k (read as k/255); `index` is the image's column in `ff`.
Continuous data, meant for a Gaussian likelihood (or to be binarized).
"""

_MANUAL_INSTRUCTIONS = f"""\
Download {SOURCE_URL} and put it in the manual directory as `{FILENAME}`, or set
{MAT_ENV_VAR} to its path.
"""


def _default_manual_dir(data_dir_root: str | os.PathLike) -> Path:
    # TFDS' default for download_and_prepare() without a DownloadConfig, as the pipeline calls it.
    return Path(data_dir_root) / "downloads" / "manual"


def _missing_message(manual_path: Path) -> str:
    # One line: the pipeline prefixes it and users read it in a log.
    return (
        f"Frey Face needs {FILENAME} and there is no download: set {MAT_ENV_VAR} to its path, "
        f"or put it at {manual_path}; get it from {SOURCE_URL}."
    )


def find_mat(manual_dir: str | os.PathLike) -> Path:
    """Finds `frey_rawface.mat`: the environment variable first, then the manual directory.

    Args:
        manual_dir: Directory where a manually downloaded `frey_rawface.mat` is looked for.

    Returns:
        Path of an existing file.

    Raises:
        DataUnavailableError: If `IWAE_TF_FREY_MAT` names a missing file, or it is unset and
            the manual directory has no `frey_rawface.mat`. The message names both places
            and `SOURCE_URL`.
    """
    manual_path = Path(manual_dir) / FILENAME
    override = os.environ.get(MAT_ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            # Not falling back to the manual directory: a set variable that points nowhere is
            # a mistake the user should hear about, not paper over.
            raise DataUnavailableError(
                f"{MAT_ENV_VAR} points to {path}, which is not a file. Point it at {FILENAME} "
                f"(from {SOURCE_URL}), or unset it and put the file at {manual_path}."
            )
        return path
    if manual_path.is_file():
        return manual_path
    raise DataUnavailableError(_missing_message(manual_path))


def load_faces(path: str | os.PathLike) -> np.ndarray:
    """Reads `frey_rawface.mat` into row-major images.

    Args:
        path: Path of a MATLAB file whose `ff` is a uint8 `[560, N]` matrix, one image per
            column, `N >= 2`.

    Returns:
        uint8 `[N, 28, 20, 1]` array; image `j` is `ff[:, j].reshape(28, 20)`.

    Raises:
        DataUnavailableError: If the file is not MATLAB data, has no `ff`, or `ff` has the wrong
            dtype or shape; the message names the problem and where to get the real file.
    """
    try:
        raw = scipy.io.loadmat(os.fspath(path), variable_names=["ff"])
    except (OSError, ValueError, NotImplementedError, scipy.io.matlab.MatReadError) as e:
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
        raise DataUnavailableError(
            f"Cannot read {path} as a MATLAB file ({reason}); replace it with {SOURCE_URL}."
        ) from None
    if "ff" not in raw:
        raise DataUnavailableError(
            f"{path} has no variable 'ff'; is it {FILENAME}? Replace it with {SOURCE_URL}."
        )
    ff = raw["ff"]
    # uint8 only: the stored bytes are the data, and a float matrix (e.g. already divided by
    # 255 or 256) would be silently rescaled by `decode`.
    if ff.dtype != np.uint8 or ff.ndim != 2 or ff.shape[0] != NUM_PIXELS or ff.shape[1] < 2:
        raise DataUnavailableError(
            f"{path}: 'ff' is {ff.dtype} {list(ff.shape)}, expected uint8 [{NUM_PIXELS}, N] "
            f"(N = 1965 images of 28x20, one per column); replace it with {SOURCE_URL}."
        )
    # Each column is one image in row-major (C) order: ff.T.reshape(-1, 28, 20).
    return np.ascontiguousarray(ff.T).reshape((-1, *IMAGE_SHAPE))


def split_order(num_images: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Li & Turner's train/test split of the images, as column indices of `ff`.

    `np.random.seed(seed); np.random.shuffle(data)` on the `[N, 560]` data matrix permutes its
    rows exactly as `np.random.RandomState(seed).permutation(N)` permutes `range(N)` (same
    legacy Mersenne-Twister draws, same Fisher-Yates swaps); the first `int(0.9 * N)` rows train.

    Args:
        num_images: Number of images `N` (1,965 for the real file).
        seed: Shuffle seed; 0 is the split this builder stores.

    Returns:
        `(train, test)`: int64 arrays of column indices, in shuffled order; together a
        permutation of `range(num_images)`, of sizes `int(0.9 * N)` and the rest.
    """
    order = np.random.RandomState(seed).permutation(num_images).astype(np.int64)
    # The authors' float expression, not round(): int(0.9 * 1965) = int(1768.5) = 1768.
    num_train = int(TRAIN_FRACTION * num_images)
    return order[:num_train], order[num_train:]


def decode(image: tf.Tensor) -> tf.Tensor:
    """Maps a stored face to float32 `[28, 20, 1]` intensities in `[0, 1]`.

    Args:
        image: uint8 `(28, 20, 1)` image as the builder stores it (decoded by TFDS).

    Returns:
        The intensities `k / 255`, float32 `[28, 20, 1]`.
    """
    return tf.ensure_shape(tf.cast(image, tf.float32) / 255.0, IMAGE_SHAPE)


def _is_missing_manual_dir_error(error: BaseException) -> bool:
    # TFDS 4.9 raises a bare AssertionError from `dl_manager.manual_dir` when the directory is
    # absent or empty; matching its text keeps unrelated assertion failures visible.
    return isinstance(error, AssertionError) and "Manual directory" in str(error)


def prepare(builder: tfds.core.DatasetBuilder) -> None:
    """Prepares `frey_face`, with one clear error if `frey_rawface.mat` is missing.

    Already prepared data is used as it is. Otherwise the builder reads the file (see
    `find_mat`); if TFDS itself complains about a missing manual directory before the builder
    gets to look, that complaint becomes the same `DataUnavailableError`.

    Args:
        builder: The `frey_face` builder, for the data_dir to prepare in.

    Raises:
        DataUnavailableError: If the file is missing or malformed; the message says how to fix
            it.
    """
    if builder.is_prepared():
        return
    try:
        builder.download_and_prepare()
    except AssertionError as e:
        if not _is_missing_manual_dir_error(e):
            raise
        manual_path = _default_manual_dir(builder.data_dir_root) / FILENAME
        raise DataUnavailableError(_missing_message(manual_path)) from None


class FreyFace(tfds.core.GeneratorBasedBuilder):
    """Frey Face from Roweis' frey_rawface.mat: Li & Turner's 1,768 train / 197 test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: frey_rawface.mat bytes as 28x20x1 uint8 images, split as "
        "in Li & Turner (2016): RandomState(0) permutation, first 90% train.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=IMAGE_SHAPE,
                        dtype=np.uint8,
                        doc="The original bytes k (0..255) of the 28x20 face, read as k/255.",
                    ),
                    "index": tfds.features.Scalar(
                        dtype=np.int64, doc="The image's column in frey_rawface.mat's ff."
                    ),
                }
            ),
            # Keep the authors' shuffled order: train[i] is their data_train[i].
            disable_shuffling=True,
            homepage="https://cs.nyu.edu/~roweis/data.html",
            citation=_CITATION,
        )

    def _manual_dir(self, dl_manager: tfds.download.DownloadManager) -> Path:
        try:
            return Path(dl_manager.manual_dir)
        except AssertionError:  # TFDS raises it when the directory is missing or empty.
            pass
        # Not public in TFDS 4.9: the directory configured, even if it does not exist yet.
        configured = getattr(dl_manager, "_manual_dir", None)
        return Path(configured) if configured else _default_manual_dir(self.data_dir_root)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        images = load_faces(find_mat(self._manual_dir(dl_manager)))
        train, test = split_order(len(images))
        return {
            "train": self._generate_examples(images, train),
            "test": self._generate_examples(images, test),
        }

    def _generate_examples(
        self, images: np.ndarray, order: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for position, index in enumerate(order):
            yield position, {"image": images[index], "index": int(index)}
