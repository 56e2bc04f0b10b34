r"""Ships a finished run's SavedModel to exported/NAME with its figures (`experiments.shipping`).

Example:

  python scripts/ship.py --run_dir=runs/regimeA_s0/runs/iwae_seed_mnist \
      --name=iwae_seed_mnist_static10k --command="python scripts/reproduce.py ..."
"""

from __future__ import annotations

import sys

from iwae_tf import logs

logs.quiet_tensorflow(sys.argv)  # Before TensorFlow is imported.

from absl import app, flags  # noqa: E402

from iwae_tf import data, serving  # noqa: E402
from iwae_tf.experiments import shipping  # noqa: E402

flags.DEFINE_string("run_dir", None, "A finished run that exported a SavedModel.", required=True)
flags.DEFINE_string("name", None, "The shipped model's directory name.", required=True)
flags.DEFINE_string("command", None, "The command that trained the run.", required=True)
flags.DEFINE_string("export_root", "exported", "Where shipped models live.")
flags.DEFINE_integer("num_check_images", 500, "Test images of the check figure.", lower_bound=1)
flags.DEFINE_integer("check_k", 1000, "Importance samples of the check figure.", lower_bound=1)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    try:
        serving.check_count("--check_k", f.check_k)
        path = shipping.ship(
            f.run_dir, f.name, f.command, f.export_root, f.num_check_images, f.check_k
        )
    except (ValueError, OSError, data.DataUnavailableError) as e:
        logs.fail(e)
    print(f"shipped {path} ({shipping.directory_bytes(path) / 2**20:.1f} MiB)")
    # .gitignore ignores exported/* (users export there too), so git sees no shipped model
    # until it is listed; a model left out of git is silently missing from CI's clone.
    print(f"track it: add the line !{path.rstrip('/')}/ to .gitignore, then git add {path}")


if __name__ == "__main__":
    app.run(main)
