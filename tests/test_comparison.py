"""Seeds, the extra-training control, confidence intervals, and no peeking at the test set."""
import json

import numpy as np
import pytest

import dendrites
import main
import runs
from report import bootstrap_interval, seed_interval

DENDRITIC_RUN = ["--val-split", "150", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100",
                 "--experiments", "resnet18,resnet18_dendritic", "--dendrite-epochs", "1", "--max-dendrites", "1"]


def test_seed_interval_is_the_t_interval():
    mean, low, high = seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / 3 ** 0.5, rel=1e-3)
    assert low == pytest.approx(2 * mean - high)


def test_bootstrap_interval_separates_a_real_difference_from_none():
    rng = np.random.default_rng(0)
    same = rng.random(10000) < 0.7
    assert bootstrap_interval(same, same) == (0.0, 0.0, 0.0)
    better = same | (rng.random(10000) < 0.05)  # about 1.5 points more, never worse
    difference, low, high = bootstrap_interval(better, same)
    assert 0 < low < difference < high and difference == pytest.approx(100 * (better.mean() - same.mean()))


def test_seeds_are_cached_on_their_own_and_summarised_with_their_spread(tiny, data_dir, tmp_path, capsys):
    results = tmp_path / "results"
    args = ["--data-dir", data_dir, "--results-dir", str(results), *DENDRITIC_RUN]
    main.main(args)
    capsys.readouterr()
    main.main(args + ["--seeds", "0,1"])
    log = capsys.readouterr().err
    assert log.count("reusing") == 3 and "resnet18 (seed 1): training" in log  # seed 0 kept, seed 1 trained
    summary = json.loads((results / "summary.json").read_text())
    assert sorted((run["name"], run["seed"]) for run in summary["runs"]) == sorted(
        (name, seed) for name in ("resnet18", "resnet18_dendritic", "resnet18_continued") for seed in (0, 1))
    assert (results / "resnet18_seed1" / "result.json").exists()
    table = (results / "summary.md").read_text()
    assert "± sd | seeds" in table and "t interval over 2 seeds" in table
    assert {c["against"] for c in summary["comparisons"]} == {"resnet18", "resnet18_continued"}


def test_control_trains_the_baseline_as_long_as_the_dendritic_run(tiny, data_dir, tmp_path):
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), *DENDRITIC_RUN,
               "--dendrite-epochs", "2", "--max-dendrites", "2"])
    runs = {run["name"]: run for run in json.loads((results / "summary.json").read_text())["runs"]}
    control, dendritic = runs["resnet18_continued"], runs["resnet18_dendritic"]
    assert control["epochs"] == dendritic["epochs"] == sum(dendritic["cycles"])
    assert control["params"] == runs["resnet18"]["params"] and control["start"] == "baseline"
    assert len(dendritic["architectures"]) >= 2  # baseline, then each dendrite count tried
    table = (results / "summary.md").read_text()
    assert "resnet18_dendritic − resnet18_continued** (what the dendrites gave beyond the extra epochs)" in table
    assert "paired bootstrap over 200 test images" in table


def test_test_split_is_read_only_for_the_report(tiny, data_dir, tmp_path, monkeypatch):
    """Sizes tell the splits apart here: 850 train, 150 validation, 200 test images."""
    reporting, real_evaluate, real_final_test = [], runs.evaluate, runs.final_test
    scores_given_to_tracker = []

    def evaluate(model, images, *args, **kwargs):
        assert len(images) != 200 or reporting, "the test split was read during training"
        return real_evaluate(model, images, *args, **kwargs)

    def final_test(*args):
        reporting.append(True)
        try:
            return real_final_test(*args)
        finally:
            reporting.pop()

    real_end_epoch = dendrites.Dendrites.end_epoch

    def end_epoch(self, val_accuracy, *args, **kwargs):
        scores_given_to_tracker.append(val_accuracy)
        return real_end_epoch(self, val_accuracy, *args, **kwargs)

    monkeypatch.setattr(runs, "evaluate", evaluate)
    monkeypatch.setattr(runs, "final_test", final_test)
    monkeypatch.setattr(dendrites.Dendrites, "end_epoch", end_epoch)
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), *DENDRITIC_RUN])
    history = (results / "resnet18_dendritic" / "history.csv").read_text().splitlines()
    val_column = history[0].split(",").index("val_accuracy")
    baseline_val = json.loads((results / "resnet18" / "result.json").read_text())["val_accuracy"]
    assert scores_given_to_tracker == [baseline_val] + [float(row.split(",")[val_column]) for row in history[1:]]
