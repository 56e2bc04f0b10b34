"""Times ways of drawing the N(0, 1) noise of one IWAEU step (BENCHMARKS.md, "Where the time goes").

python scripts/benchmark_noise.py --num_normals=1684000
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from iwae_tf import rng  # noqa: E402

flags.DEFINE_integer(
    "num_normals", 1_684_000, "Draws per call (IWAEU at b20_k50: 1000 rows x 1684).", lower_bound=4
)
flags.DEFINE_integer("repeats", 15, "Timed calls; the medians are printed.", lower_bound=1)
FLAGS = flags.FLAGS


def _philox_words(seed: tf.Tensor, num_counters: int) -> tuple[tf.Tensor, ...]:
    key = tuple(tf.unstack(tf.bitcast(seed, tf.uint32)))
    index = tf.bitcast(tf.range(num_counters, dtype=tf.int32), tf.uint32)
    zeros = tf.zeros_like(index)
    return rng.philox4x32((index, zeros, zeros, zeros), key)


def _candidates(n: int) -> dict[str, tuple[Callable[[tf.Tensor], tf.Tensor], bool]]:
    table = tf.constant(tf.math.ndtri((np.arange(2**16) + 0.5) / 2**16).numpy().astype(np.float32))

    def words_only(seed: tf.Tensor) -> tf.Tensor:
        w = _philox_words(seed, (n + 3) // 4)
        return tf.reduce_sum(tf.cast(w[0] ^ w[1] ^ w[2] ^ w[3], tf.float32))

    def box_muller(seed: tf.Tensor) -> tf.Tensor:
        w = _philox_words(seed, (n + 3) // 4)

        def uniform(word: tf.Tensor) -> tf.Tensor:
            top = tf.bitwise.right_shift(word, tf.constant(8, tf.uint32))
            return (tf.cast(top, tf.float32) + 0.5) * 2.0**-24

        radii = [tf.sqrt(-2.0 * tf.math.log(uniform(w[i]))) for i in (0, 2)]
        angles = [2 * math.pi * uniform(w[i]) for i in (1, 3)]
        z = [r * f(a) for r, a in zip(radii, angles, strict=True) for f in (tf.cos, tf.sin)]
        return tf.reduce_sum(tf.concat(z, 0)[:n])

    def table_lookup(seed: tf.Tensor) -> tf.Tensor:
        w = tf.reshape(tf.stack(_philox_words(seed, (n + 7) // 8), -1), [-1])
        high = tf.bitwise.right_shift(w, tf.constant(16, tf.uint32))
        low = tf.bitwise.bitwise_and(w, tf.constant(0xFFFF, tf.uint32))
        index = tf.cast(tf.reshape(tf.stack([high, low], -1), [-1])[:n], tf.int32)
        return tf.reduce_sum(tf.gather(table, index))

    return {
        "Philox-4x32-10 words only (XLA)": (words_only, True),
        "rng.stateless_normal: Philox + ndtri (XLA), the package": (
            lambda seed: tf.reduce_sum(rng.stateless_normal([n], seed)),
            True,
        ),
        "tf.random.stateless_normal (no XLA)": (
            lambda seed: tf.reduce_sum(tf.random.stateless_normal([n], seed)),
            False,
        ),
        "Box-Muller on Philox words (XLA)": (box_muller, True),
        "65,536-entry ndtri table, 2 normals per word (XLA)": (table_lookup, True),
    }


def _time(fn: Callable[[tf.Tensor], tf.Tensor], repeats: int) -> tuple[float, float]:
    seed = tf.constant([1, 2], tf.int32)
    fn(seed).numpy()  # Trace and compile.
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(seed).numpy()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str]) -> None:
    del argv
    n = FLAGS.num_normals
    print(f"| {n:,} draws | ms wall | ms CPU |\n|---|---|---|")
    for name, (fn, jit) in _candidates(n).items():
        compiled = tf.function(tf.autograph.experimental.do_not_convert(fn), jit_compile=jit)
        wall, cpu = _time(compiled, FLAGS.repeats)
        logging.info("%s: %.2f ms wall, %.2f ms CPU", name, 1e3 * wall, 1e3 * cpu)
        print(f"| {name} | {1e3 * wall:.2f} | {1e3 * cpu:.2f} |")


if __name__ == "__main__":
    app.run(main)
