"""Tests of the paired comparison across training seeds."""

import json
import os

import numpy as np
import pytest

from iwae_tf.experiments import seeds


def write_run(output_dir, preset, seed, nll, stderr=0.3):
    run = os.path.join(output_dir, "runs", preset)
    os.makedirs(run, exist_ok=True)
    metrics = {"test_nll": nll, "test_nll_stderr": stderr, "config": {"seed": seed}}
    with open(os.path.join(run, "metrics.json"), "w") as f:
        json.dump(metrics, f)


@pytest.fixture
def grids(tmp_path):
    reference = {0: 100.0, 1: 101.0, 2: 99.5}
    other = {0: 99.0, 1: 100.2, 2: 98.1}  # Better by 1.0, 0.8, 1.4.
    dirs = []
    for seed in (0, 1, 2):
        d = str(tmp_path / f"seed{seed}")
        write_run(d, "ref", seed, reference[seed])
        write_run(d, "other", seed, other[seed], stderr=0.2 + 0.1 * seed)
        dirs.append(d)
    os.makedirs(os.path.join(dirs[2], "runs", "unfinished"))  # No metrics.json: skipped.
    write_run(dirs[0], "lonely", 5, 90.0)  # A seed the reference lacks.
    return dirs


def test_paired_differences_match_numpy(grids):
    runs = seeds.load_runs(grids)
    assert sorted(runs) == ["lonely", "other", "ref"]
    ref, other, lonely = seeds.paired_table(runs, "ref", ["ref", "other", "lonely"])
    d = np.array([-1.0, -0.8, -1.4])
    assert other["difference"] == pytest.approx(d.mean())
    assert other["difference_stderr"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert other["seed_stderr"] == pytest.approx(np.std([99.0, 100.2, 98.1], ddof=1) / np.sqrt(3))
    assert other["image_stderr"] == pytest.approx(0.3)
    # |mean| = 1.07 against t(2) * se = 4.30 * 0.18 = 0.76: resolved.
    assert other["resolved_95"]
    assert ref["difference"] == 0.0 and not ref["resolved_95"]
    # An unpaired seed never enters a difference.
    assert lonely["paired_seeds"] == [] and np.isnan(lonely["difference"])
    table = seeds.format_markdown([ref, other, lonely], "ref")
    assert "| other | 99.00, 100.20, 98.10 | 99.10 ± 0.61 | 0.30 | -1.07 ± 0.18 (n = 3" in table
    assert "no common seed" in table


def test_an_unresolved_difference_is_reported_as_such(tmp_path):
    dirs = []
    for seed, (a, b) in enumerate([(100.0, 99.0), (100.0, 101.2), (100.0, 99.9)]):
        d = str(tmp_path / f"s{seed}")
        write_run(d, "ref", seed, a)
        write_run(d, "other", seed, b)
        dirs.append(d)
    (row,) = seeds.paired_table(seeds.load_runs(dirs), "ref", ["other"])
    assert not row["resolved_95"]
    assert "not resolved" in seeds.format_markdown([row], "ref")


def test_bad_inputs_are_named(tmp_path, grids):
    with pytest.raises(ValueError, match="holds no finished run"):
        seeds.load_runs([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="appears twice"):
        seeds.load_runs([grids[0], grids[0]])
    with pytest.raises(ValueError, match="no finished run of 'missing'"):
        seeds.paired_table(seeds.load_runs(grids), "missing", ["other"])


def test_history_paths_and_the_seed_curves(grids, tmp_path):
    paths = seeds.history_paths(grids)
    assert paths["other"] == {
        s: os.path.join(grids[s], "runs", "other", "history.csv") for s in (0, 1, 2)
    }
    assert paths["lonely"] == {5: os.path.join(grids[0], "runs", "lonely", "history.csv")}
    plots = pytest.importorskip("iwae_tf.experiments.plots")
    for preset in ("ref", "other"):
        for seed, path in paths[preset].items():
            with open(path, "w") as f:
                f.write("epoch,iwae_bound,val_iwae_bound\n")
                for epoch in range(30):  # Training keeps improving; validation turns at 10.
                    val = -100 - abs(epoch - 10) * 0.1 - seed
                    f.write(f"{epoch},{-130 + epoch},{val}\n")
    out = plots.plot_seed_curves(
        {p: paths[p] for p in ("ref", "other")}, str(tmp_path / "curves.png")
    )
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_train_test_gaps_are_paired_when_the_grid_measured_train_nlls(tmp_path):
    """Does the gap account for the difference? The gap columns answer with numpy's numbers."""
    test = {"ref": [100.0, 101.0, 99.5], "other": [99.0, 100.2, 98.1]}
    train = {"ref": [91.0, 92.5, 90.0], "other": [93.0, 94.0, 92.6]}
    dirs = []
    for seed in range(3):
        d = str(tmp_path / f"s{seed}")
        for preset in ("ref", "other"):
            write_run(d, preset, seed, test[preset][seed])
            path = os.path.join(d, "runs", preset, "evaluation.json")
            with open(path, "w") as f:
                json.dump({"train_nll": train[preset][seed]}, f)
        dirs.append(d)
    write_run(dirs[0], "no_train_nll", 0, 98.0)
    rows = seeds.paired_table(seeds.load_runs(dirs), "ref", ["ref", "other", "no_train_nll"])
    ref, other, bare = rows
    gaps = {p: np.subtract(test[p], train[p]) for p in test}
    np.testing.assert_allclose(other["gaps"], gaps["other"])
    assert other["mean_gap"] == pytest.approx(gaps["other"].mean())
    assert other["gap_stderr"] == pytest.approx(gaps["other"].std(ddof=1) / np.sqrt(3))
    d = gaps["other"] - gaps["ref"]
    assert other["gap_difference"] == pytest.approx(d.mean())
    assert other["gap_difference_stderr"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert bare["gaps"] is None and bare["gap_difference"] is None
    table = seeds.format_markdown(rows, "ref")
    assert f"| {gaps['other'].mean():.2f} ± " in table and f"| {d.mean():+.2f} ± " in table
    assert table.splitlines()[-1].endswith("| – | – |")
    # Without train NLLs the table keeps its five columns.
    plain = seeds.format_markdown([bare], "ref")
    assert plain.splitlines()[0].count("|") == 6
