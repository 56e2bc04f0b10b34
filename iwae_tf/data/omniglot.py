"""Omniglot 28x28 as used by the IWAE paper, as a TFDS dataset (`omniglot_iwae`).

The source is `chardata.mat` from the IWAE authors' repository (yburda/iwae,
`datasets/OMNIGLOT/chardata.mat`): a MATLAB file whose `data` is `[784, 24345]` and `testdata`
`[784, 8070]`, one grey image per column with values in `[0, 1]`. The authors' loader
(`datasets.py`, `binarized_shuffled_omniglot`) turns them into row-major images with

    def reshape_data(data):
        return data.reshape((-1, 28, 28)).reshape((-1, 28*28), order='fortran')
    train_data = reshape_data(omni_raw['data'].T.astype('float32'))

i.e. each column holds its image in MATLAB's column-major order; `load_chardata` does exactly
this. The builder does not quantize: the file's doubles are not known to be multiples of 1/255,
so images are stored as the float32 values the authors' loader trains on.

Splits:
    * `train`: the 24,345 `data` images, in the authors' training order: permuted with
      `np.random.RandomState(123).permutation(24345)` as their loader does, so that
      `train[:23000]` is exactly their training set and `train[23000:]` (1,345 images) their
      validation set.
    * `test`: the 8,070 `testdata` images, in file order.

Feature `index` is an image's column in `data` / `testdata`. The images are binarized
dynamically by `iwae_tf.data.pipeline`, as in the paper.

Where `chardata.mat` comes from, first match wins: the environment variable
`IWAE_TF_OMNIGLOT_MAT` (a path), the manual directory (by default
`<data_dir>/downloads/manual/chardata.mat`), else a download from `CHARDATA_URL`. Offline with
no file, a `DataUnavailableError` says where to put it, after a probe of a few seconds instead
of TFDS' minutes of download retries.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from iwae_tf.data import reachability
from iwae_tf.data.errors import DataUnavailableError
from iwae_tf.data.images import IMAGE_SHAPE

NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

MAT_ENV_VAR = "IWAE_TF_OMNIGLOT_MAT"
"""Environment variable that, when set, is the path of `chardata.mat` to build from."""

FILENAME = "chardata.mat"

CHARDATA_URL = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat"
"""The authors' file (`https://raw.github.com/yburda/iwae/...` redirects here)."""

IMAGE_SIDE = 28
NUM_TRAIN = 24_345
NUM_TEST = 8_070
SHUFFLE_SEED = 123
"""Seed of the authors' permutation of the training images."""
NUM_VALIDATION = 1_345
"""The authors hold out the last 1,345 permuted training images for validation."""

_CITATION = r"""@article{lake2015human,
  title={Human-level concept learning through probabilistic program induction},
  author={Lake, Brenden M. and Salakhutdinov, Ruslan and Tenenbaum, Joshua B.},
  journal={Science},
  volume={350},
  number={6266},
  pages={1332--1338},
  year={2015}
}
@inproceedings{burda2016importance,
  title={Importance Weighted Autoencoders},
  author={Burda, Yuri and Grosse, Roger and Salakhutdinov, Ruslan},
  booktitle={International Conference on Learning Representations},
  year={2016}
}"""

_DESCRIPTION = """\
Omniglot handwritten characters (Lake et al.) downsampled to 28x28, as used by Burda et al.'s
importance-weighted autoencoders: `chardata.mat` from github.com/yburda/iwae, 24,345 training
and 8,070 test images of grey values in [0, 1], flattened row-major to 784 float32 pixels.
`train` is in the authors' shuffled order (RandomState(123)), so that `train[:23000]` is their
training set and `train[23000:]` their validation set; `test` is in file order. `index` is an
image's column in the file's `data` or `testdata` matrix.
"""

_MANUAL_INSTRUCTIONS = f"""\
Download {CHARDATA_URL} and put it in the manual directory as `{FILENAME}`, or set
{MAT_ENV_VAR} to its path.
"""


def reshape_columns(columns: np.ndarray) -> np.ndarray:
    """Turns a `chardata.mat` matrix of image columns into row-major images.

    This is the authors' `reshape_data(data.T)`: transpose to one image per row, then read
    each row as a 28x28 array stored in Fortran (column-major) order.

    Args:
        columns: `[784, N]` array, one image per column.

    Returns:
        `[N, 784]` array of the same dtype, each row an image flattened row-major.

    Raises:
        ValueError: If `columns` does not have 784 rows.
    """
    columns = np.asarray(columns)
    if columns.ndim != 2 or columns.shape[0] != NUM_PIXELS:
        raise ValueError(f"Expected a [{NUM_PIXELS}, N] matrix, got shape {columns.shape}.")
    rows = columns.T.reshape((-1, IMAGE_SIDE, IMAGE_SIDE))
    return rows.reshape((-1, NUM_PIXELS), order="F")


def load_chardata(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads `chardata.mat` the way the IWAE authors' loader does.

    Args:
        path: Path of a MATLAB file with `[784, N]` matrices `data` and `testdata`.

    Returns:
        `(train, test)`: float32 `[N, 784]` row-major images in file order, values in `[0, 1]`.

    Raises:
        DataUnavailableError: If the file cannot be read as MATLAB data.
        ValueError: If `data` or `testdata` is missing, misshapen, or has values outside
            `[0, 1]`.
    """
    try:
        raw = scipy.io.loadmat(os.fspath(path), variable_names=["data", "testdata"])
    except (OSError, ValueError, NotImplementedError, scipy.io.matlab.MatReadError) as e:
        raise DataUnavailableError(
            f"Cannot read {path} as a MATLAB file ({type(e).__name__}: {e}); replace it with "
            f"{CHARDATA_URL}."
        ) from None
    splits = []
    for key in ("data", "testdata"):
        if key not in raw:
            raise ValueError(f"{path} has no matrix {key!r}; is it the IWAE chardata.mat?")
        images = reshape_columns(raw[key].astype(np.float32))
        bad = ~((images >= 0) & (images <= 1))  # Also catches NaN.
        if bad.any():
            n, pixel = np.unravel_index(np.argmax(bad), bad.shape)
            raise ValueError(
                f"{path}: {key} image {n} pixel {pixel} is {images[n, pixel]!r}, not in [0, 1]."
            )
        splits.append(images)
    return splits[0], splits[1]


def authors_train_order(num_train: int) -> np.ndarray:
    """The order in which the authors' loader arranges the training images.

    Args:
        num_train: Number of training images (24,345 for the real file).

    Returns:
        int64 permutation of `range(num_train)`: position `j` holds image `order[j]`.
    """
    return np.random.RandomState(SHUFFLE_SEED).permutation(num_train).astype(np.int64)


def find_chardata(manual_dir: Path, download: Callable[[str], os.PathLike] | None) -> Path:
    """Finds `chardata.mat`: environment variable, manual directory, else a download.

    Args:
        manual_dir: Directory where a manually downloaded `chardata.mat` is looked for.
        download: Downloads a URL and returns the local path; `None` to never download.

    Returns:
        Path of an existing file.

    Raises:
        DataUnavailableError: If `IWAE_TF_OMNIGLOT_MAT` names a missing file, or there is no
            file in `manual_dir` and the download host is unreachable or the download fails.
            The message names `manual_dir / "chardata.mat"` and `CHARDATA_URL`.
    """
    override = os.environ.get(MAT_ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise DataUnavailableError(
                f"{MAT_ENV_VAR} points to {path}, which is not a file. Point it at "
                f"{FILENAME} (from {CHARDATA_URL}), or unset it to use {manual_dir / FILENAME}."
            )
        return path
    manual_path = manual_dir / FILENAME
    if manual_path.is_file():
        return manual_path
    if download is None:
        reason = "downloads disabled"
    else:
        reason = reachability.unreachable_reason(CHARDATA_URL)
        if reason is None:
            try:
                return Path(download(CHARDATA_URL))
            except (OSError, tfds.download.DownloadError) as e:
                reason = f"{type(e).__name__}: {e}".splitlines()[0]
    raise DataUnavailableError(
        f"Omniglot needs {FILENAME}, which is not at {manual_path} and could not be downloaded "
        f"from {CHARDATA_URL} ({reason}). Download it on a machine with network access and put "
        f"it at {manual_path}, or set {MAT_ENV_VAR} to its path."
    )


class OmniglotIwae(tfds.core.GeneratorBasedBuilder):
    """Omniglot 28x28 from the IWAE authors' chardata.mat: 24,345 train / 8,070 test images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: chardata.mat of yburda/iwae, float32 pixels, train in the "
        "authors' RandomState(123) order.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(NUM_PIXELS,),
                        dtype=np.float32,
                        # Mostly-blank images: zlib stores them in a fraction of 3136 B.
                        encoding=tfds.features.Encoding.ZLIB,
                        doc="Grey values in [0, 1], row-major 28x28.",
                    ),
                    "index": tfds.features.Scalar(
                        dtype=np.int64,
                        doc="The image's column in chardata.mat's data (train) or testdata.",
                    ),
                }
            ),
            # Keep the authors' order so that train[:23000] is their training set.
            disable_shuffling=True,
            homepage="https://github.com/yburda/iwae",
            citation=_CITATION,
        )

    def _manual_dir(self, dl_manager: tfds.download.DownloadManager) -> Path:
        try:
            return Path(dl_manager.manual_dir)
        except AssertionError:  # TFDS raises it when the directory is missing or empty.
            pass
        # Not public in TFDS 4.9: the directory configured, even if it does not exist yet.
        configured = getattr(dl_manager, "_manual_dir", None)
        return Path(configured or Path(self.data_dir_root) / "downloads" / "manual")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        path = find_chardata(self._manual_dir(dl_manager), dl_manager.download)
        train, test = load_chardata(path)
        return {
            "train": self._generate_examples(train, authors_train_order(len(train))),
            "test": self._generate_examples(test, np.arange(len(test), dtype=np.int64)),
        }

    def _generate_examples(
        self, images: np.ndarray, order: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for position, index in enumerate(order):
            yield position, {"image": images[index], "index": int(index)}
