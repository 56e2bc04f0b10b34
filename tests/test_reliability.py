"""The reliability census: every entry point against every class of bad input (issue #15).

Each `Case` is one bad input at one entry point and the message it must get. A case passes when
the entry point fails with that message on one line, and leaves nothing behind that looks
finished:

* a script (run as a user runs it, in a fresh process): exit status 1 (absl's flag errors: 1
  too), the message on the last line of stderr, and no traceback;
* the library: the documented exception type, whose message is one line.

Inputs that can be converted without loss are converted, not rejected (`CONVERSIONS`), and
the kills, the full disk and the history pruning have tests of their own below. The census in
docs/reliability.md is generated from these tables (`python tests/test_reliability.py`) and
`test_census_document_is_current` keeps it current.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CENSUS = os.path.join(REPO, "docs", "reliability.md")
BEGIN, END = "<!-- census:begin -->", "<!-- census:end -->"
PIXELS = 784


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input at one entry point.

    Attributes:
      entry: The entry point, e.g. "scripts/score.py" or "ExportedModel.score".
      kind: The class of bad input (the issue's list).
      what: The bad input, in words.
      message: Text the error line must contain.
      args: A script's arguments; "{model}", "{run}", "{tmp}", "{data_dir}" and "{npy:NAME}"
        are filled in from the fixture.
      call: For a library entry point: called with the fixture, must raise `error`.
      error: The exception type a library entry point raises.
      absent: Paths (same placeholders) that must not exist afterwards.
    """

    entry: str
    kind: str
    what: str
    message: str
    args: tuple[str, ...] = ()
    call: Callable[[Any], Any] | None = None
    error: type[BaseException] = ValueError
    absent: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.entry}: {self.what}"


# ---------------------------------------------------------------------------------- fixture


@dataclasses.dataclass
class Setup:
    tmp: str
    data_dir: str
    run: str  # A finished training run of a tiny IWAE.
    model: str  # Its SavedModel.
    images: np.ndarray  # 5 binary test images [5, 28, 28, 1].

    def fill(self, text: str) -> str:
        text = re.sub(r"\{npy:(\w+)\}", lambda m: os.path.join(self.tmp, m.group(1) + ".npy"), text)
        return text.format(model=self.model, run=self.run, tmp=self.tmp, data_dir=self.data_dir)


TINY = {
    "latent_sizes": (4,),
    "hidden_sizes": ((16,),),
    "train_split": "train[:400]",
    "test_split": "test[:50]",
    "eval_batch_size": 50,
    "epochs": 1,
    "steps_per_epoch": 10,
    "eval_k": 2,
    "tensorboard": False,
}


def tiny_flags(**overrides: Any) -> list[str]:
    values = {**TINY, **overrides}
    flags = []
    for name, value in values.items():
        if name in ("latent_sizes",):
            value = ",".join(str(v) for v in value)
        elif name == "hidden_sizes":
            value = "/".join(",".join(str(v) for v in sizes) for sizes in value)
        elif isinstance(value, bool):
            value = str(value).lower()
        flags.append(f"--{name}={value}")
    return flags


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mnist_data_dir):
    from iwae_tf import data, train
    from iwae_tf.config import TrainConfig

    tmp = str(tmp_path_factory.mktemp("reliability"))
    run, model = os.path.join(tmp, "run"), os.path.join(tmp, "export")
    config = TrainConfig(**TINY, data_dir=mnist_data_dir, export_dir=model)
    train.train_and_evaluate(config, run)
    images = np.concatenate(
        [b.numpy() for b in data.eval_dataset("mnist", "test[:5]", 5, data_dir=mnist_data_dir)]
    )
    s = Setup(tmp, mnist_data_dir, run, model, images)
    write_bad_files(s)
    return s


def write_bad_files(s: Setup) -> None:
    x = s.images
    arrays = {
        "good": x,
        "empty": x[:0],
        "float64": x.astype(np.float64),
        "float16": x.astype(np.float16),
        "bool": x.astype(bool),
        "hw": x[..., 0],
        "uint8": (x * 255).astype(np.uint8),
        "int64": x.astype(np.int64),
        "nan": np.where(x > 0, np.nan, 0.0).astype(np.float32),
        "range": x * 3,
        "grey": x * 0.5,
        "rank": x[0],
    }
    for name, array in arrays.items():
        np.save(os.path.join(s.tmp, name + ".npy"), array)
    np.save(os.path.join(s.tmp, "object.npy"), np.array([x[0], None], object), allow_pickle=True)
    with open(os.path.join(s.tmp, "text.npy"), "w") as f:
        f.write("0,1,0\n")
    good = open(os.path.join(s.tmp, "float64.npy"), "rb").read()
    with open(os.path.join(s.tmp, "truncated.npy"), "wb") as f:
        f.write(good[: len(good) // 2])
    for name, pattern in [("bad_pb", "saved_model.pb"), ("bad_vars", "variables/*.data*")]:
        copy = os.path.join(s.tmp, name)
        shutil.copytree(s.model, copy)
        for path in glob.glob(os.path.join(copy, pattern)):
            content = open(path, "rb").read()
            with open(path, "wb") as f:
                f.write(content[: len(content) // 3])
    copy = os.path.join(s.tmp, "bad_metadata")
    shutil.copytree(s.model, copy)
    with open(os.path.join(copy, "assets", "metadata.json"), "w") as f:
        f.write('{"format_version": 4, "architecture": {')
    with open(os.path.join(s.tmp, "a_file"), "w") as f:
        f.write("not a directory\n")


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return subprocess.run(
        [sys.executable, os.path.join("scripts", script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    # absl's flag errors add a hint line after the error.
    if lines and lines[-1].startswith("Pass --helpshort"):
        lines = lines[:-1]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------ the census

OUT = "--output={tmp}/out.csv"
SCORE = ("--saved_model={model}", "--k=2")


def score_case(kind: str, what: str, message: str, *args: str, absent: tuple = ()) -> Case:
    return Case("scripts/score.py", kind, what, message, (*args,), absent=absent)


SCRIPT_CASES = [
    # scripts/score.py
    score_case(
        "empty input",
        "a .npy of zero images",
        "the input holds no examples",
        *SCORE,
        "--input={npy:empty}",
        OUT,
        absent=("{tmp}/out.csv",),
    ),
    score_case(
        "empty input",
        "an empty split, tfds:test[:0]",
        "corresponds to no data",
        *SCORE,
        "--input=tfds:test[:0]",
        "--data_dir={data_dir}",
        OUT,
    ),
    score_case(
        "sample counts",
        "--k=0",
        "flag --k=0: 0 is not a positive integer",
        "--saved_model={model}",
        "--k=0",
        "--input={npy:good}",
        OUT,
    ),
    score_case(
        "sample counts",
        "--k=3000000000 (beyond int32)",
        "--k must be an integer in [1, 2^31 - 1]; got 3000000000",
        "--saved_model={model}",
        "--k=3000000000",
        "--input={npy:good}",
        OUT,
    ),
    score_case(
        "shapes and types",
        "uint8 images",
        "x must be a float array",
        *SCORE,
        "--input={npy:uint8}",
        OUT,
    ),
    score_case(
        "shapes and types",
        "int64 images",
        "got dtype int64; convert it yourself",
        *SCORE,
        "--input={npy:int64}",
        OUT,
    ),
    score_case(
        "shapes and types",
        "one image without the batch axis [28, 28, 1]",
        "x must have rank 4, [N, 28, 28, 1]",
        *SCORE,
        "--input={npy:rank}",
        OUT,
    ),
    score_case("values", "NaN pixels", "x contains NaN or inf", *SCORE, "--input={npy:nan}", OUT),
    score_case(
        "values",
        "values above 1",
        "x has values outside [0, 1]",
        *SCORE,
        "--input={npy:range}",
        OUT,
    ),
    score_case(
        "values",
        "grey values for a Bernoulli model",
        "x is not binary",
        *SCORE,
        "--input={npy:grey}",
        OUT,
    ),
    score_case(
        "broken files",
        "a missing input file",
        "input file {tmp}/missing.npy does not exist",
        *SCORE,
        "--input={tmp}/missing.npy",
        OUT,
    ),
    score_case(
        "broken files",
        "a text file named .npy",
        "is not a .npy file",
        *SCORE,
        "--input={npy:text}",
        OUT,
    ),
    score_case(
        "broken files",
        "an object array (needs pickle)",
        "only pickle can load",
        *SCORE,
        "--input={npy:object}",
        OUT,
    ),
    score_case(
        "broken files",
        "a truncated .npy",
        "is truncated or corrupt",
        *SCORE,
        "--input={npy:truncated}",
        OUT,
    ),
    score_case(
        "broken files",
        "an input that is not .npy or tfds:",
        "--input must be a .npy file or tfds:SPLIT",
        *SCORE,
        "--input={tmp}/a_file",
        OUT,
    ),
    score_case(
        "broken files",
        "a directory without a SavedModel",
        "holds no SavedModel",
        "--saved_model={tmp}",
        "--k=2",
        "--input={npy:good}",
        OUT,
    ),
    score_case(
        "broken files",
        "a truncated saved_model.pb",
        "cannot load the SavedModel in {tmp}/bad_pb: it is truncated or corrupt",
        "--saved_model={tmp}/bad_pb",
        "--k=2",
        "--input={npy:good}",
        OUT,
    ),
    score_case(
        "broken files",
        "a truncated variables file",
        "cannot load the SavedModel in {tmp}/bad_vars: it is truncated or corrupt",
        "--saved_model={tmp}/bad_vars",
        "--k=2",
        "--input={npy:good}",
        OUT,
    ),
    score_case(
        "broken files",
        "a corrupt assets/metadata.json",
        "cannot read {tmp}/bad_metadata/assets/metadata.json",
        "--saved_model={tmp}/bad_metadata",
        "--k=2",
        "--input={npy:good}",
        OUT,
    ),
    score_case(
        "destinations",
        "--output in a missing directory",
        "cannot write --output {tmp}/nowhere/out.csv: directory {tmp}/nowhere does not exist",
        *SCORE,
        "--input={npy:good}",
        "--output={tmp}/nowhere/out.csv",
    ),
    score_case(
        "destinations",
        "--output is a directory",
        "is a directory; give a file name",
        *SCORE,
        "--input={npy:good}",
        "--output={tmp}",
    ),
    score_case(
        "destinations",
        "a split name with a typo, tfds:tset",
        "Unknown split 'tset'",
        *SCORE,
        "--input=tfds:tset",
        "--data_dir={data_dir}",
        OUT,
    ),
    # scripts/ship.py
    Case(
        "scripts/ship.py",
        "broken files",
        "a directory without a finished run",
        "{tmp} holds no finished run (no metrics.json)",
        ("--run_dir={tmp}", "--name=x", "--command=c", "--export_root={tmp}/shipped"),
        absent=("{tmp}/shipped",),
    ),
    Case(
        "scripts/ship.py",
        "destinations",
        "a name already shipped",
        "{tmp}/export exists; ship under another name or remove it first",
        ("--run_dir={run}", "--name=export", "--command=c", "--export_root={tmp}"),
    ),
    Case(
        "scripts/ship.py",
        "sample counts",
        "--check_k=3000000000 (beyond int32)",
        "--check_k must be an integer in [1, 2^31 - 1]; got 3000000000",
        (
            "--run_dir={run}",
            "--name=x",
            "--command=c",
            "--export_root={tmp}/shipped2",
            "--check_k=3000000000",
        ),
        absent=("{tmp}/shipped2",),
    ),
    # scripts/evaluate.py
    Case(
        "scripts/evaluate.py",
        "sample counts",
        "--k=0",
        "flag --k=0: 0 is not a positive integer",
        ("--run_dir={run}", "--k=0"),
    ),
    Case(
        "scripts/evaluate.py",
        "sample counts",
        "--k=3000000000 (beyond int32)",
        "--k must be an integer in [1, 2^31 - 1]; got 3000000000",
        ("--run_dir={run}", "--k=3000000000", "--output={tmp}/eval.json"),
        absent=("{tmp}/eval.json",),
    ),
    Case(
        "scripts/evaluate.py",
        "flags",
        "--max_rows=0",
        "flag --max_rows=0: 0 is not a positive integer",
        ("--run_dir={run}", "--max_rows=0"),
    ),
    Case(
        "scripts/evaluate.py",
        "flags",
        "--as_trained with a --split",
        "--as_trained evaluates the run's training split; drop --split",
        ("--run_dir={run}", "--k=2", "--as_trained", "--split=test", "--output={tmp}/eval.json"),
        absent=("{tmp}/eval.json",),
    ),
    Case(
        "scripts/evaluate.py",
        "empty input",
        "an empty split, --split=test[:0]",
        "corresponds to no data",
        ("--run_dir={run}", "--k=2", "--split=test[:0]", "--output={tmp}/eval.json"),
        absent=("{tmp}/eval.json",),
    ),
    Case(
        "scripts/evaluate.py",
        "destinations",
        "a split name with a typo, --split=tset",
        "Unknown split 'tset'",
        ("--run_dir={run}", "--k=2", "--split=tset", "--output={tmp}/eval.json"),
        absent=("{tmp}/eval.json",),
    ),
    Case(
        "scripts/evaluate.py",
        "broken files",
        "a directory without a finished run",
        "holds no finished training run",
        ("--run_dir={tmp}", "--k=2"),
    ),
    Case(
        "scripts/evaluate.py",
        "destinations",
        "--output in a missing directory",
        "cannot write --output {tmp}/nowhere/eval.json: directory {tmp}/nowhere does not exist",
        ("--run_dir={run}", "--k=2", "--output={tmp}/nowhere/eval.json"),
    ),
    Case(
        "scripts/evaluate.py",
        "destinations",
        "--per_example_csv in a missing directory",
        "cannot write --per_example_csv {tmp}/nowhere/x.csv",
        (
            "--run_dir={run}",
            "--k=2",
            "--output={tmp}/eval.json",
            "--per_example_csv={tmp}/nowhere/x.csv",
        ),
        absent=("{tmp}/eval.json",),
    ),
    # scripts/train.py
    *[
        Case(
            "scripts/train.py",
            "flags",
            what,
            message,
            (
                f"--output_dir={{tmp}}/train_{i}",
                f"--export_dir={{tmp}}/train_export_{i}",
                "--data_dir={data_dir}",
                *flags,
            ),
            absent=(
                f"{{tmp}}/train_{i}/{'metrics' if 'diverges' in what else 'config'}.json",
                f"{{tmp}}/train_export_{i}",
            ),
        )
        for i, (what, message, flags) in enumerate(
            [
                ("--learning_rate=0", "--learning_rate must be > 0", ["--learning_rate=0"]),
                ("--learning_rate=nan", "--learning_rate must be > 0", ["--learning_rate=nan"]),
                (
                    "--learning_rate=inf",
                    "learning_rate must be a finite number, got inf",
                    ["--learning_rate=inf"],
                ),
                ("--init_scale=0", "--init_scale must be > 0", ["--init_scale=0"]),
                ("--prior_scale=0", "--prior_scale must be > 0", ["--prior_scale=0"]),
                (
                    "--kl_weight for a model without uncertain weights",
                    "model iwae has none; use an iwaeu model or drop --kl_weight",
                    ["--model=iwae", "--kl_weight=1"],
                ),
                (
                    "--kl_weight=nan",
                    "kl_weight must be a finite number, got nan",
                    ["--model=iwaeu", "--kl_weight=nan"],
                ),
                (
                    "--strategy=multi_worker without TF_CONFIG",
                    "strategy multi_worker needs the TF_CONFIG environment variable",
                    ["--strategy=multi_worker"],
                ),
                (
                    "latent and hidden size lists of different lengths",
                    "got 2 latent sizes and 1 hidden size lists",
                    ["--latent_sizes=10,5", "--hidden_sizes=20"],
                ),
                (
                    "a size list that is not integers",
                    "expected comma-separated integers",
                    ["--latent_sizes=10,x"],
                ),
                (
                    "--min_std=2 (a Gaussian floor above 1)",
                    "min_std must be in (0, 1)",
                    ["--likelihood=gaussian", "--binarization=none", "--min_std=2"],
                ),
                (
                    "--k=3000000000 (beyond int32)",
                    "k must be an integer in [1, 2^31 - 1]",
                    ["--k=3000000000"],
                ),
                (
                    "--k=100000000 (tensors beyond int32)",
                    "more than TensorFlow's int32 limit (2^31 - 1); lower k or the batch sizes",
                    ["--k=100000000"],
                ),
                ("a positional argument", "unexpected arguments: extra", ["extra"]),
                (
                    "--select_best without --validation_split",
                    "must not be the test set's: give --validation_split",
                    ["--select_best"],
                ),
                (
                    "--early_stopping_patience without --select_best",
                    "early_stopping_patience stops on the validation bound",
                    ["--early_stopping_patience=10"],
                ),
                (
                    "a --validation_split with a typo",
                    "Unknown split 'valid'",
                    ["--validation_split=valid", "--select_best"],
                ),
                (
                    "--learning_rate=1e30 (training diverges)",
                    "training diverged: the loss became NaN or infinite",
                    ["--learning_rate=1e30", *tiny_flags()],
                ),
            ]
        )
    ],
    Case(
        "scripts/train.py",
        "destinations",
        "a --train_split with a typo",
        "Unknown split 'tarin'",
        (
            "--output_dir={tmp}/train_t",
            "--export_dir={tmp}/train_t_export",
            "--train_split=tarin",
            "--data_dir={data_dir}",
        ),
        absent=("{tmp}/train_t/config.json",),
    ),
    Case(
        "scripts/train.py",
        "destinations",
        "a --test_split with a typo",
        "Unknown split 'tset'",
        (
            "--output_dir={tmp}/train_u",
            "--export_dir={tmp}/train_u_export",
            "--test_split=tset",
            "--data_dir={data_dir}",
        ),
        absent=("{tmp}/train_u/config.json",),
    ),
    Case(
        "scripts/train.py",
        "empty input",
        "an empty training split, train[:0]",
        "split 'train[:0]' of 'mnist' holds no examples",
        (
            "--output_dir={tmp}/train_v",
            "--export_dir={tmp}/train_v_export",
            "--train_split=train[:0]",
            "--data_dir={data_dir}",
        ),
        absent=("{tmp}/train_v/config.json",),
    ),
    Case(
        "scripts/train.py",
        "empty input",
        "a training split smaller than one batch",
        "has 10 examples, fewer than one batch of 20",
        (
            "--output_dir={tmp}/train_w",
            "--export_dir={tmp}/train_w_export",
            "--train_split=train[:10]",
            "--data_dir={data_dir}",
        ),
        absent=("{tmp}/train_w/metrics.json",),
    ),
    Case(
        "scripts/train.py",
        "destinations",
        "--output_dir under a file",
        "cannot create output dir {tmp}/a_file/run",
        ("--output_dir={tmp}/a_file/run",),
    ),
    Case(
        "scripts/train.py",
        "destinations",
        "--export_dir under a file",
        "cannot create export dir {tmp}/a_file/export: {tmp}/a_file is not a directory",
        ("--output_dir={tmp}/train_x", "--export_dir={tmp}/a_file/export"),
        absent=("{tmp}/train_x/config.json",),
    ),
    Case(
        "scripts/train.py",
        "destinations",
        "--output_dir holding a finished run",
        "already holds a finished run",
        ("--output_dir={run}",),
    ),
    # The harness scripts.
    Case(
        "scripts/evaluate.py",
        "flags",
        "no --run_dir",
        "Flag --run_dir must have a value other than None",
        (),
    ),
    Case(
        "scripts/reproduce.py",
        "destinations",
        "--output_dir under a file",
        "cannot create --output_dir {tmp}/a_file/grid",
        ("--presets=burda_mnist_1l_iwae_k5", "--epochs=1", "--output_dir={tmp}/a_file/grid"),
    ),
    Case(
        "scripts/reproduce.py",
        "flags",
        "no budget",
        "state a budget",
        ("--presets=burda_mnist_1l_iwae_k5", "--output_dir={tmp}/grid"),
    ),
    Case(
        "scripts/compare_seeds.py",
        "destinations",
        "--output in a missing directory",
        "cannot write --output {tmp}/nowhere/seeds.json",
        ("--output_dirs={tmp}", "--reference=x", "--output={tmp}/nowhere/seeds.json"),
    ),
    Case(
        "scripts/snr.py",
        "broken files",
        "a directory without a finished run",
        "holds no finished training run",
        ("--run_dir={tmp}", "--output_dir={tmp}/snr"),
    ),
    Case(
        "scripts/benchmark.py",
        "destinations",
        "--output in a missing directory",
        "cannot write --output {tmp}/nowhere/bench.json",
        ("--variants=iwae", "--output={tmp}/nowhere/bench.json"),
    ),
    Case(
        "scripts/benchmark_noise.py",
        "flags",
        "--repeats=0",
        "flag --repeats=0: 0 is not a positive integer",
        ("--repeats=0",),
    ),
    Case(
        "scripts/benchmark_evaluation.py",
        "destinations",
        "--output in a missing directory",
        "cannot write --output {tmp}/nowhere/bench.json",
        ("--output={tmp}/nowhere/bench.json",),
    ),
]


# Library entry points: each call gets the fixture and must raise `error` with `message`.


def _exported(s):
    from iwae_tf import serving

    return serving.load_exported(s.model)


def _model(s):
    from iwae_tf import train

    return train.load_run(s.run)[1]


def _estimate(s, x=None, **kwargs):
    import tensorflow as tf

    from iwae_tf import evaluation

    x = s.images if x is None else x
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(5)
    return evaluation.estimate_log_likelihood(_model(s), dataset, **{"num_samples": 2, **kwargs})


def _signature(s, x=None, k=2):
    import tensorflow as tf

    from iwae_tf import serving

    x = s.images if x is None else x
    score = serving.load_saved_model(s.model).signatures["score"]
    return score(x=tf.constant(x), k=tf.constant(k, tf.int64), seed=tf.constant(0, tf.int64))


def _in_memory_score(s, num_samples, **kwargs):
    import tensorflow as tf

    from iwae_tf import evaluation, rng

    seed = rng.from_int(0)
    return evaluation.score(_model(s), tf.constant(s.images), num_samples, seed, **kwargs)


def _config(**fields):
    from iwae_tf.config import TrainConfig

    return TrainConfig(**fields).validate()


def _build(**kwargs):
    from iwae_tf.model import build_model

    return build_model(**{"variant": "iwae", "num_importance_samples": 2, **kwargs})


def _export(s, directory, **kwargs):
    from iwae_tf import export

    return export.export_saved_model(_model(s), os.path.join(s.tmp, directory), **kwargs)


def _tf_error():
    import tensorflow as tf

    return tf.errors.InvalidArgumentError


LIBRARY_CASES = [
    # The exported `score` signature (in-graph checks).
    *[
        Case("score signature", kind, what, message, call=call, error=Exception)
        for kind, what, message, call in [
            ("sample counts", "k=0", "k must be in [1, 2^31 - 1]", lambda s: _signature(s, k=0)),
            (
                "sample counts",
                "k=2^31 (int32 would wrap)",
                "k must be in [1, 2^31 - 1]",
                lambda s: _signature(s, k=2**31),
            ),
            (
                "values",
                "NaN pixels",
                "x contains NaN or inf",
                lambda s: _signature(s, np.where(s.images > 0, np.nan, 0).astype(np.float32)),
            ),
            ("values", "grey pixels", "x is not binary", lambda s: _signature(s, s.images * 0.5)),
            (
                "shapes and types",
                "rows [N, 784] for a model of images",
                "x must have rank 4, [N, 28, 28, 1]",
                lambda s: _signature(s, s.images.reshape(5, PIXELS)),
            ),
            (
                "shapes and types",
                "float64 tensor",
                "expected to be a float tensor",
                lambda s: _signature(s, s.images.astype(np.float64)),
            ),
        ]
    ],
    # ExportedModel (host checks first).
    *[
        Case("ExportedModel", kind, what, message, call=call, error=error)
        for kind, what, message, call, error in [
            (
                "sample counts",
                "score(k=0)",
                "k must be an integer in [1, 2^31 - 1]; got 0",
                lambda s: _exported(s).score(s.images, k=0),
                ValueError,
            ),
            (
                "sample counts",
                "score(k=2**31)",
                "k must be an integer in [1, 2^31 - 1]",
                lambda s: _exported(s).score(s.images, k=2**31),
                ValueError,
            ),
            (
                "sample counts",
                "score(k=2.5)",
                "k must be an integer in [1, 2^31 - 1]; got 2.5",
                lambda s: _exported(s).score(s.images, k=2.5),
                ValueError,
            ),
            (
                "sample counts",
                "score(k=True)",
                "k must be an integer",
                lambda s: _exported(s).score(s.images, k=True),
                ValueError,
            ),
            (
                "sample counts",
                "score(seed=2**64)",
                "seed must be an integer in [-2^63, 2^63 - 1]",
                lambda s: _exported(s).score(s.images, k=2, seed=2**64),
                ValueError,
            ),
            (
                "sample counts",
                "sample(n=-1)",
                "n must be an integer in [0, 2^31 - 1]",
                lambda s: _exported(s).sample(-1),
                ValueError,
            ),
            (
                "shapes and types",
                "uint8 images",
                "got dtype uint8; convert it yourself",
                lambda s: _exported(s).score((s.images * 255).astype(np.uint8), k=2),
                ValueError,
            ),
            (
                "shapes and types",
                "a ragged nested list",
                "x must be a float array of one shape",
                lambda s: _exported(s).score([[0.0, 1.0], [1.0]], k=2),
                ValueError,
            ),
            (
                "shapes and types",
                "images of the wrong size [N, 28, 20, 1]",
                "x must have shape [N, 28, 28, 1]",
                lambda s: _exported(s).score(s.images[:, :, :20], k=2),
                ValueError,
            ),
            (
                "values",
                "-inf pixels",
                "x contains NaN or inf",
                lambda s: _exported(s).score(-np.inf * s.images, k=2),
                ValueError,
            ),
            (
                "values",
                "negative pixels",
                "x has values outside [0, 1]",
                lambda s: _exported(s).score(-s.images, k=2),
                ValueError,
            ),
            (
                "values",
                "grey pixels",
                "x is not binary",
                lambda s: _exported(s).score(0.5 * s.images, k=2),
                ValueError,
            ),
            (
                "values",
                "decode(z) with NaN",
                "z contains NaN or inf",
                lambda s: _exported(s).decode(np.full((1, 4), np.nan)),
                ValueError,
            ),
            (
                "broken files",
                "load_exported of a truncated saved_model.pb",
                "it is truncated or corrupt",
                lambda s: _load(s, "bad_pb"),
                OSError,
            ),
            (
                "broken files",
                "load_exported of a truncated variables file",
                "it is truncated or corrupt",
                lambda s: _load(s, "bad_vars"),
                OSError,
            ),
            (
                "broken files",
                "load_exported of a corrupt metadata.json",
                "export the model again",
                lambda s: _load(s, "bad_metadata"),
                OSError,
            ),
            (
                "broken files",
                "load_exported of a directory without a SavedModel",
                "holds no SavedModel",
                lambda s: _load(s, "."),
                FileNotFoundError,
            ),
        ]
    ],
    # estimate_log_likelihood.
    *[
        Case("estimate_log_likelihood", kind, what, message, call=call)
        for kind, what, message, call in [
            (
                "sample counts",
                "num_samples=0",
                "num_samples must be an integer in [1, 2^31 - 1]",
                lambda s: _estimate(s, num_samples=0),
            ),
            (
                "sample counts",
                "num_samples=2**31",
                "num_samples must be an integer",
                lambda s: _estimate(s, num_samples=2**31),
            ),
            (
                "flags",
                "max_rows=0",
                "max_rows must be an integer in [1, 2^31 - 1]",
                lambda s: _estimate(s, max_rows=0),
            ),
            (
                "empty input",
                "an empty dataset",
                "The dataset is empty",
                lambda s: _estimate(s, s.images[:0]),
            ),
            (
                "values",
                "a batch with NaN",
                "batch 0 of the dataset: x contains NaN or inf",
                lambda s: _estimate(s, np.where(s.images > 0, np.nan, 0).astype(np.float32)),
            ),
            (
                "values",
                "grey data for a Bernoulli model",
                "batch 0 of the dataset: x is not binary",
                lambda s: _estimate(s, s.images * 0.5),
            ),
            (
                "shapes and types",
                "batches of the wrong shape [N, 28, 20, 1]",
                "x must have shape [N, 28, 28, 1]",
                lambda s: _estimate(s, s.images[:, :, :20]),
            ),
        ]
    ],
    # evaluation.score, what the exported `score` computes, called in memory.
    *[
        Case("evaluation.score", "sample counts", what, message, call=call)
        for what, message, call in [
            (
                "num_samples=0",
                "num_samples must be an integer in [1, 2^31 - 1]; got 0",
                lambda s: _in_memory_score(s, 0),
            ),
            (
                "num_samples=2**31",
                "num_samples must be an integer in [1, 2^31 - 1]",
                lambda s: _in_memory_score(s, 2**31),
            ),
            (
                "max_rows=0",
                "max_rows must be an integer in [1, 2^31 - 1]; got 0",
                lambda s: _in_memory_score(s, 2, max_rows=0),
            ),
        ]
    ],
    # export_saved_model.
    Case(
        "export_saved_model",
        "flags",
        "max_rows=0",
        "max_rows must be >= 1",
        call=lambda s: _export(s, "e1", max_rows=0),
    ),
    Case(
        "export_saved_model",
        "destinations",
        "a non-empty export_dir",
        "exists and is not empty; pass overwrite=True",
        call=lambda s: _export(s, "export"),
        error=FileExistsError,
    ),
    # TrainConfig.validate.
    *[
        Case("TrainConfig", kind, what, message, call=lambda s, f=fields: _config(**f))
        for kind, what, message, fields in [
            ("flags", "learning_rate=0", "learning_rate must be > 0", {"learning_rate": 0.0}),
            (
                "flags",
                "learning_rate=nan",
                "learning_rate must be a finite number",
                {"learning_rate": float("nan")},
            ),
            (
                "flags",
                "learning_rate=inf",
                "learning_rate must be a finite number",
                {"learning_rate": float("inf")},
            ),
            ("flags", "init_scale=0", "init_scale must be > 0", {"init_scale": 0.0}),
            ("flags", "prior_scale=0", "prior_scale must be > 0", {"prior_scale": 0.0}),
            (
                "flags",
                "kl_weight with iwae",
                "use an iwaeu model or drop --kl_weight",
                {"model": "iwae", "kl_weight": 1.0},
            ),
            (
                "flags",
                "kl_weight=-1",
                "kl_weight must be >= 0",
                {"model": "iwaeu", "kl_weight": -1.0},
            ),
            (
                "flags",
                "mismatched size lists",
                "need one entry per stochastic layer",
                {"latent_sizes": (10, 5), "hidden_sizes": ((20,),)},
            ),
            ("flags", "a zero layer size", "hidden_sizes must be >= 1", {"hidden_sizes": ((0,),)}),
            (
                "flags",
                "alpha=nan",
                "alpha must be a real number or -inf",
                {"objective": "vr", "alpha": float("nan")},
            ),
            ("flags", "beta=2", "ciwae needs beta in [0, 1]", {"objective": "ciwae", "beta": 2.0}),
            (
                "flags",
                "num_groups not dividing k",
                "dividing k = 5, got 2",
                {"objective": "miwae", "num_groups": 2, "k": 5},
            ),
            ("sample counts", "k=0", "k must be >= 1", {"k": 0}),
            ("sample counts", "k=2**31", "k must be an integer in [1, 2^31 - 1]", {"k": 2**31}),
            (
                "sample counts",
                "eval_k=2**31",
                "eval_k must be an integer in [1, 2^31 - 1]",
                {"eval_k": 2**31},
            ),
            ("flags", "an unknown model", "unknown model 'iwea'", {"model": "iwea"}),
            (
                "flags",
                "select_best validated on the test split",
                "select_best picks an epoch by its validation bound",
                {"select_best": True},
            ),
        ]
    ],
    # build_model.
    *[
        Case("build_model", kind, what, message, call=lambda s, a=args: _build(**a))
        for kind, what, message, args in [
            (
                "sample counts",
                "num_importance_samples=0",
                "num_importance_samples must be an integer in [1, 2^31 - 1]",
                {"num_importance_samples": 0},
            ),
            (
                "sample counts",
                "num_importance_samples=2**31",
                "num_importance_samples must be an integer in [1, 2^31 - 1]",
                {"num_importance_samples": 2**31},
            ),
            (
                "flags",
                "mismatched size lists",
                "need one entry per stochastic layer",
                {"latent_sizes": (10, 5), "hidden_sizes": ((20,),)},
            ),
            ("flags", "a zero latent size", "layer sizes must be >= 1", {"latent_sizes": (0,)}),
            (
                "flags",
                "kl_weight with iwae",
                "kl_weight > 0 needs uncertain weights",
                {"kl_weight": 1.0},
            ),
            (
                "flags",
                "init_scale=0",
                "init_scale must be a finite number > 0",
                {"variant": "iwaeu", "init_scale": 0.0},
            ),
            (
                "flags",
                "prior_scale=0",
                "prior_scale must be a finite number > 0",
                {"variant": "iwaeu", "kl_weight": 1.0, "prior_scale": 0.0},
            ),
            ("flags", "an unknown variant", "Unknown model variant 'iwea'", {"variant": "iwea"}),
        ]
    ],
]


def _load(s, name):
    from iwae_tf import serving

    return serving.load_exported(os.path.join(s.tmp, name))


CASES = SCRIPT_CASES + LIBRARY_CASES


@pytest.mark.parametrize("case", SCRIPT_CASES, ids=lambda c: c.id)
def test_script_rejects_bad_input_in_one_line(setup, case):
    script = case.entry.split("/")[1]
    result = run_script(script, *(setup.fill(a) for a in case.args))
    line = error_line(result.stderr)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert setup.fill(case.message) in line, (line, result.stderr[-2000:])
    for path in case.absent:
        assert not os.path.exists(setup.fill(path)), path


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.id)
def test_library_rejects_bad_input_in_one_line(setup, case):
    error = _tf_error() if case.entry == "score signature" else case.error
    with pytest.raises(error) as info:
        case.call(setup)
    text = str(getattr(info.value, "message", info.value))
    if case.entry == "score signature":
        text = next(
            (
                line
                for line in text.splitlines()
                if "assertion failed" in line or "expected" in line
            ),
            text,
        )
    else:
        assert "\n" not in text.strip(), text
    assert setup.fill(case.message) in text, text


def test_every_entry_point_meets_every_class():
    """The census covers each class of the issue at each entry point it applies to."""
    covered = {(c.entry, c.kind) for c in CASES}
    required = {
        "scripts/score.py": {
            "empty input",
            "sample counts",
            "shapes and types",
            "values",
            "broken files",
            "destinations",
        },
        "scripts/evaluate.py": {
            "empty input",
            "sample counts",
            "flags",
            "broken files",
            "destinations",
        },
        "scripts/train.py": {"empty input", "flags", "destinations"},
        "scripts/ship.py": {"sample counts", "broken files", "destinations"},
        "ExportedModel": {"sample counts", "shapes and types", "values", "broken files"},
        "score signature": {"sample counts", "shapes and types", "values"},
        "estimate_log_likelihood": {
            "empty input",
            "sample counts",
            "values",
            "shapes and types",
            "flags",
        },
        "TrainConfig": {"flags", "sample counts"},
        "evaluation.score": {"sample counts"},
        "build_model": {"flags", "sample counts"},
    }
    missing = [
        (entry, kind)
        for entry, kinds in required.items()
        for kind in kinds
        if (entry, kind) not in covered
    ]
    assert not missing, missing


# ----------------------------------------------------------------------------- conversions

CONVERSIONS = [
    ("ExportedModel, scripts/score.py", "float64 images", "converted to float32"),
    ("ExportedModel, scripts/score.py", "float16 images", "converted to float32"),
    ("ExportedModel, scripts/score.py", "bool images", "converted to 0.0 / 1.0"),
    ("ExportedModel, scripts/score.py", "[N, 28, 28] images", "the channel axis is added"),
    ("ExportedModel", "rows [N, 784] for a model of images", "reshaped row-major"),
    ("ExportedModel", "zero images", "scored: empty log_px and elbo"),
    ("score signature", "zero images", "scored: empty log_px and elbo"),
    ("estimate_log_likelihood", "float64 batches", "converted to float32"),
]


def test_lossless_conversions_give_the_scores_of_float32_images(setup):
    exported = _exported(setup)
    x = setup.images
    expected = exported.score(x, k=3, seed=1)["log_px"]
    variants = {
        "float64": x.astype(np.float64),
        "float16": x.astype(np.float16),
        "bool": x.astype(bool),
        "[N, 28, 28]": x[..., 0],
        "rows": x.reshape(len(x), PIXELS),
    }
    for name, variant in variants.items():
        got = exported.score(variant, k=3, seed=1)["log_px"]
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)
    # Negative control: the conversion is not a no-op that would pass anything. A flipped
    # pixel changes the score.
    flipped = x.copy()
    flipped[0, 10, 10, 0] = 1 - flipped[0, 10, 10, 0]
    assert exported.score(flipped, k=3, seed=1)["log_px"][0] != expected[0]
    empty = exported.score(x[:0], k=3)
    assert empty["log_px"].shape == (0,) and empty["elbo"].shape == (0,)
    assert _signature(setup, x[:0])["log_px"].shape == (0,)
    from_float64 = _estimate(setup, x.astype(np.float64), seed=2).log_px
    np.testing.assert_allclose(from_float64, _estimate(setup, x, seed=2).log_px, rtol=1e-6)


def test_score_script_converts_like_the_library(setup):
    scores = {}
    for name in ("good", "float64", "bool", "hw"):
        out = os.path.join(setup.tmp, f"converted_{name}.csv")
        result = run_script(
            "score.py",
            *(setup.fill(a) for a in SCORE),
            f"--input={setup.fill('{npy:' + name + '}')}",
            "--seed=3",
            f"--output={out}",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        with open(out) as f:
            scores[name] = np.array([float(row["log_px"]) for row in csv.DictReader(f)])
    for name in ("float64", "bool", "hw"):
        np.testing.assert_allclose(scores[name], scores["good"], rtol=1e-6, err_msg=name)


# ------------------------------------------------------------------------- kills and faults


def _train_command(workdir: str, export_dir: str, data_dir: str) -> list[str]:
    return [
        f"--output_dir={workdir}",
        f"--export_dir={export_dir}",
        f"--data_dir={data_dir}",
        *tiny_flags(test_split="test[:1000]", eval_batch_size=100, eval_k=20000, epochs=2),
    ]


def _start_train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, os.path.join("scripts", "train.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_when(process: subprocess.Popen, condition: Callable[[], bool], delay: float) -> None:
    deadline = time.monotonic() + 600
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.05)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def _history_epochs(workdir: str) -> list[int]:
    with open(os.path.join(workdir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_a_run_killed_in_evaluation_then_in_export_completes_on_rerun(setup):
    workdir = os.path.join(setup.tmp, "killed_run")
    export_dir = os.path.join(setup.tmp, "killed_export")
    args = _train_command(workdir, export_dir, setup.data_dir)
    training_file = os.path.join(workdir, "training.json")
    weights = os.path.join(workdir, "weights", "model.index")
    staging = os.path.join(setup.tmp, ".killed_export.staging-*")

    # 1. Killed while evaluating: training has ended (training.json), no export has begun.
    process = _start_train(args)
    _kill_when(process, lambda: os.path.exists(training_file), delay=1.0)
    assert not glob.glob(staging) and not os.path.exists(export_dir), "killed too late"
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    with open(training_file) as f:
        training = json.load(f)  # Whole: it parses.
    weights_written = os.path.getmtime(weights)

    # 2. The rerun skips training, and is killed while exporting.
    process = _start_train(args)
    _kill_when(process, lambda: bool(glob.glob(staging)), delay=0.0)
    assert not os.path.exists(export_dir), "the export was visible before it was complete"
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))

    # 3. The second rerun completes: metrics, a loadable export, no staging left.
    result = run_script("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["train_steps"] == training["train_steps"] == 2 * TINY["steps_per_epoch"]
    assert os.path.getmtime(weights) == weights_written, "the rerun trained again"
    assert _history_epochs(workdir) == [0, 1]
    assert not glob.glob(staging)
    from iwae_tf import serving

    scores = serving.load_exported(export_dir).score(setup.images, k=2)["log_px"]
    assert np.all(np.isfinite(scores)) and np.all(scores < 0)


def test_history_drops_the_epochs_a_resumed_run_repeats(tmp_path):
    import tensorflow as tf

    from iwae_tf import train

    path = str(tmp_path / "history.csv")
    rows = [["epoch", "loss"], ["0", "3.0"], ["1", "2.0"], ["2", "1.0"]]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)

    class Model:  # What the callback reads: the restored step counter.
        optimizer = type("Optimizer", (), {"iterations": tf.Variable(20, dtype=tf.int64)})()

    logger = train.HistoryLogger(path, steps_per_epoch=10)
    logger.set_model(Model())
    logger.on_train_begin()
    logger.csv_file.close()
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == rows[:3]  # Epoch 2 was not in the backup.
    # Negative control: a plain CSVLogger keeps the row a resumed run writes again.
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    plain = train.keras.callbacks.CSVLogger(path, append=True)
    plain.set_model(Model())
    plain.on_train_begin()
    plain.csv_file.close()
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == rows


DISK_FULL = """
import resource, signal, sys
import numpy as np
import tf_keras as keras
from iwae_tf import export
from iwae_tf.model import build_model
model = build_model("iwae", 2, latent_sizes=(4,), hidden_sizes=((16,),))
model(np.zeros([1, 784], np.float32))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Writes past the limit fail with EFBIG.
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    export.export_saved_model(model, sys.argv[1])
except OSError as e:
    print("ERROR:", e)
"""


def test_a_full_disk_during_export_leaves_no_export_and_says_so(tmp_path):
    export_dir = str(tmp_path / "full")
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL, export_dir],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"ERROR: cannot write the SavedModel to {export_dir}"), line
    assert not os.path.exists(export_dir)
    assert not glob.glob(str(tmp_path / ".full.staging-*"))


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    from iwae_tf import files

    path = str(tmp_path / "metrics.json")
    files.write_json(path, {"nll": 1.0})
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            f.write('{"nll": 2.')
            raise RuntimeError("killed")
    with open(path) as f:
        assert json.load(f) == {"nll": 1.0}
    assert os.listdir(tmp_path) == ["metrics.json"]  # No temporary file left.
    # Negative control: writing in place, as before, leaves the half-written file.
    with pytest.raises(RuntimeError):
        with open(path, "w") as f:
            f.write('{"nll": 2.')
            raise RuntimeError("killed")
    with pytest.raises(json.JSONDecodeError):
        with open(path) as f:
            json.load(f)


# ---------------------------------------------------------------------------------- census


def census_markdown() -> str:
    """The census tables of docs/reliability.md, generated from CASES and CONVERSIONS."""
    lines = [
        f"{len(CASES)} bad inputs at {len({c.entry for c in CASES})} entry points, each "
        "rejected in one line (tests/test_reliability.py); "
        f"{len(CONVERSIONS)} inputs converted instead.",
        "",
        "| # | entry point | class | bad input | the error line contains | test |",
        "|---|---|---|---|---|---|",
    ]
    for i, case in enumerate(CASES, 1):
        test = (
            "test_script_rejects_bad_input_in_one_line"
            if case in SCRIPT_CASES
            else "test_library_rejects_bad_input_in_one_line"
        )
        message = case.message.replace("|", "\\|").replace("{tmp}", "DIR")
        lines.append(
            f"| {i} | `{case.entry}` | {case.kind} | {case.what.replace('|', '/')} | "
            f"`{message}` | `{test}` |"
        )
    lines += [
        "",
        "| entry point | input | what happens | test |",
        "|---|---|---|---|",
    ]
    for entry, what, result in CONVERSIONS:
        lines.append(
            f"| {entry} | {what} | {result} | "
            "`test_lossless_conversions_give_the_scores_of_float32_images`, "
            "`test_score_script_converts_like_the_library` |"
        )
    return "\n".join(lines)


def test_census_document_is_current():
    with open(CENSUS) as f:
        text = f.read()
    assert BEGIN in text and END in text
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == census_markdown(), "regenerate: python tests/test_reliability.py"


if __name__ == "__main__":  # Rewrites the generated part of docs/reliability.md.
    with open(CENSUS) as f:
        text = f.read()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(CENSUS, "w") as f:
        f.write(f"{head}{BEGIN}\n{census_markdown()}\n{END}{tail}")
