r"""Where a short training run's one-off seconds go (BENCHMARKS.md, "One-off costs per run").

Stamps Python's clock at every Keras callback hook and around `fit`,
`evaluation.estimate_log_likelihood` and `export.export_saved_model` of one
`train.train_and_evaluate` run: IWAE, batch 20, k = 50, `train[:3000]` for 1 epoch (150 steps),
validation on `test[:100]`, `eval_k=10`. A measurement script, not part of the package: it
patches the package's functions to time them.

  python docs/benchmarks/one_off_costs.py /tmp/run1
  export TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=/tmp/xla
  python docs/benchmarks/one_off_costs.py /tmp/run2  # and again, /tmp/run3: warm
"""

import sys
import time

T0 = time.perf_counter()
from iwae_tf import logs  # noqa: E402

logs.quiet_tensorflow(sys.argv)
import tf_keras as keras  # noqa: E402

from iwae_tf import config, evaluation, export, train  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - T0
STAMPS: list[tuple[str, float]] = []


def stamp(name: str) -> None:
    STAMPS.append((name, time.perf_counter() - T0))


class Probe(train.LearningRateLogger):
    def on_train_begin(self, logs: dict | None = None) -> None:
        stamp("train_begin")
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        stamp(f"epoch{epoch}_begin")
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch in (0, 99, 199):
            stamp(f"batch{batch}_end")

    def on_test_begin(self, logs: dict | None = None) -> None:
        stamp("test_begin")

    def on_test_end(self, logs: dict | None = None) -> None:
        stamp("test_end")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        stamp(f"epoch{epoch}_end")
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        stamp("train_end")


def timed(owner: object, name: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args: object, **kwargs: object) -> object:
        stamp(f"{name}_begin")
        result = original(*args, **kwargs)
        stamp(f"{name}_end")
        return result

    setattr(owner, name, wrapper)


def main(workdir: str) -> None:
    train.LearningRateLogger = Probe
    timed(keras.Model, "fit")
    timed(evaluation, "estimate_log_likelihood")
    timed(export, "export_saved_model")
    run = config.TrainConfig(
        model="iwae",
        k=50,
        batch_size=20,
        epochs=1,
        train_split="train[:3000]",
        test_split="test[:100]",
        eval_k=10,
        export_dir=workdir + "_export",
    )
    stamp("start")
    train.train_and_evaluate(run, workdir)
    stamp("done")
    print(f"import {IMPORT_SECONDS:.2f}")
    previous = 0.0
    for name, t in STAMPS:
        print(f"{name:30s} {t:7.2f}  +{t - previous:6.2f}")
        previous = t


if __name__ == "__main__":
    main(sys.argv[1])
