r"""The two Philox layouts of `iwae_tf.rng` in an IWAEU's XLA programs (BENCHMARKS.md,
"Draw layouts").

The seed preset's IWAEU (784-400-40, both networks uncertain), 100 random binary images,
k = 25: CPU seconds per 20 calls of a jit-compiled forward pass (the log-weights, as
validation and evaluation compute them) and of a forward + gradient pass (as the train step),
in the default (interleaved) layout and in `rng.per_element_draws()`. Rounds alternate the
layouts in one process, so that both see the same machine. A measurement script, not part of
the package.

  PYTHONPATH=. python docs/benchmarks/draw_layout_probe.py [--rounds=3]
"""

import contextlib
import statistics
import sys
import time
from collections.abc import Callable

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from iwae_tf import bounds, rng  # noqa: E402
from iwae_tf.model import ImportanceWeightedAutoencoder, build_model  # noqa: E402

CALLS = 20


def programs(model: ImportanceWeightedAutoencoder, per_element: bool) -> dict[str, Callable]:
    layout = rng.per_element_draws if per_element else contextlib.nullcontext

    @tf.function(jit_compile=True)
    def forward(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        with layout():
            return tf.reduce_mean(bounds.iwae_bound(model.log_weights(x, 25, seed)))

    @tf.function(jit_compile=True)
    def forward_and_gradient(x: tf.Tensor, seed: tf.Tensor) -> tuple:
        with layout():
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(bounds.iwae_bound(model.log_weights(x, 25, seed)))
            return loss, tape.gradient(loss, model.trainable_variables)

    return {"forward": forward, "forward + gradient": forward_and_gradient}


def cpu_seconds(fn: Callable, x: tf.Tensor) -> float:
    start = time.process_time()
    for i in range(CALLS):
        out = fn(x, rng.fold_in(rng.from_int(0), i))
    tf.nest.map_structure(lambda t: t.numpy(), out)
    return time.process_time() - start


def main() -> None:
    rounds = int(next((a.split("=")[1] for a in sys.argv[1:] if a.startswith("--rounds=")), 3))
    model = build_model("iwaeu", 25, latent_sizes=(40,), hidden_sizes=((400,),), data_shape=(784,))
    x = tf.constant(np.random.default_rng(0).random((100, 784)) < 0.3, tf.float32)
    model(x[:2])
    layouts = {"default": programs(model, False), "per-element": programs(model, True)}
    for fns in layouts.values():  # Compile outside the timings.
        for fn in fns.values():
            cpu_seconds(fn, x)
    times = {(lay, name): [] for lay in layouts for name in layouts[lay]}
    for _ in range(rounds):
        for lay, fns in layouts.items():
            for name, fn in fns.items():
                times[lay, name].append(cpu_seconds(fn, x))
    for name in ("forward", "forward + gradient"):
        default = statistics.median(times["default", name])
        fused = statistics.median(times["per-element", name])
        print(
            f"{name}: CPU s per {CALLS} calls, default {default:.2f} "
            f"{[round(t, 2) for t in times['default', name]]}, per-element {fused:.2f} "
            f"{[round(t, 2) for t in times['per-element', name]]}; ratio {default / fused:.2f}"
        )


if __name__ == "__main__":
    main()
