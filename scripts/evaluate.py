r"""Evaluates a finished training run: test NLL with K samples, ELBO, L_k, active units.

Example:

  python scripts/evaluate.py --run_dir=runs/mnist_iwae_k5 --k=5000 --per_example_csv=nll.csv

Rebuilds the run's model (`iwae_tf.train.load_run`) and estimates, on --split (default: the
run's test split, binarized once with the fixed seed), the NLL -log (1/K) sum_j w_j with
K = --k importance samples, its standard error over examples, the ELBO and the k-sample bound
L_k at the training k from the same samples, and the active units of every stochastic layer
(Burda et al. 2016), all by `iwae_tf.evaluation.evaluate`. --as_trained evaluates the run's
training split as it trained on it instead (a static run's own binarization): the training-set
side of the train-test gap. Writes the figures, wall time and peak resident memory to --output
(default RUN_DIR/evaluation.json) and, on request, the per-example values to a CSV.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from iwae_tf import data, evaluation, files, serving, train  # noqa: E402

flags.DEFINE_string("run_dir", None, "A finished training run (scripts/train.py).", required=True)
flags.DEFINE_integer("k", 5000, "Importance samples per example.", lower_bound=1)
flags.DEFINE_string("split", None, "tfds split to evaluate on (default: the run's test split).")
flags.DEFINE_bool(
    "as_trained",
    False,
    "Evaluate the run's training split as it trained on it (a static run's own binarization), "
    "instead of --split: the training-set NLL of the train-test gap.",
)
flags.DEFINE_integer(
    "num_examples", None, "Only the first this many examples (default: all).", lower_bound=1
)
flags.DEFINE_string("per_example_csv", None, "Optional CSV of per-example estimates.")
flags.DEFINE_integer(
    "max_rows",
    evaluation.DEFAULT_MAX_ROWS,
    "Bound on (sample, example) rows per model call; sets the memory used.",
    lower_bound=1,
)
flags.DEFINE_integer("batch_size", None, "Examples per batch (default: the run's).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the importance samples.")
flags.DEFINE_integer(
    "active_unit_samples", 100, "Draws averaged over for E_q[h|x] (active units).", lower_bound=1
)
flags.DEFINE_string("data_dir", None, "tfds data directory (default: the run's).")
flags.DEFINE_string("output", None, "Where the JSON goes (default: RUN_DIR/evaluation.json).")


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    output = f.output or os.path.join(f.run_dir, "evaluation.json")
    try:
        serving.check_count("--k", f.k)
        files.check_writable(output, "--output")
        if f.per_example_csv:
            files.check_writable(f.per_example_csv, "--per_example_csv")
        if f.as_trained and f.split:
            raise ValueError("--as_trained evaluates the run's training split; drop --split")
        config, model = train.load_run(f.run_dir)
        if f.data_dir:
            config = dataclasses.replace(config, data_dir=f.data_dir)
        if f.as_trained:
            split = config.train_split
            dataset = train.training_data(config, f.num_examples, f.batch_size)
        else:
            split = f.split or config.test_split
            dataset = train.eval_data(config, split, f.batch_size)
            if f.num_examples:
                dataset = (
                    dataset.unbatch()
                    .take(f.num_examples)
                    .batch(f.batch_size or config.eval_batch_size)
                )
        start = time.perf_counter()
        result = evaluation.evaluate(
            model,
            dataset,
            num_samples=f.k,
            train_k=config.k,
            max_rows=f.max_rows,
            seed=f.seed,
            active_unit_samples=f.active_unit_samples,
        )
        seconds = time.perf_counter() - start
    except (ValueError, OSError, data.DataUnavailableError, tf.errors.OpError) as e:
        logs.fail(e)

    summary = {
        "run_dir": f.run_dir,
        "model": config.model,
        "dataset": config.dataset,
        "split": split,
        "as_trained": f.as_trained,
        **result.summary(),
        "max_rows": f.max_rows,
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }
    if f.per_example_csv:
        result.write_per_example_csv(f.per_example_csv)
    files.write_json(output, summary)
    bound = summary["iwae_bound_train_k"]
    bound_text = (
        "n/a (K < k)"
        if bound is None
        else f"{-bound:.2f} +- {summary['iwae_bound_train_k_stderr']:.2f} nats"
    )
    print(
        f"{config.model} on {config.dataset} {split} ({summary['num_examples']} examples, "
        f"K={f.k}):\n"
        f"  NLL          {summary['nll']:.2f} +- {summary['nll_stderr']:.2f} nats\n"
        f"  -ELBO        {summary['negative_elbo']:.2f} +- "
        f"{summary['negative_elbo_stderr']:.2f} nats\n"
        f"  -L_{config.k} (train k) {bound_text}\n"
        f"  active units {summary['active_units']} of {summary['latent_sizes']}\n"
        f"  {seconds:.0f} s, peak RSS {summary['peak_rss_mb']:.0f} MB -> {output}"
    )


if __name__ == "__main__":
    app.run(main)
