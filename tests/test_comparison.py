"""Seeds, the extra-training control, confidence intervals, and no peeking at the test set."""
import json

import numpy as np
import pytest

from dendritic_experiment import continuation, dendrites, main, runs
from dendritic_experiment.intervals import (bootstrap_contrast, bootstrap_ratio_interval, seed_interval,
                                            seed_ratio_interval)

from helpers import HALF_THE_CORES, SMOKE, copy_results, read_history, run_main

DENDRITIC_RUN = ["--seeds", "0", "--val-split", "150", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100",
                 "--experiments", "resnet18,resnet18_dendritic", "--dendrite-epochs", "1", "--max-dendrites", "1"]


def test_seed_interval_is_the_t_interval():
    mean, low, high = seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.302653 * 1.0 / 3 ** 0.5, rel=1e-6)
    assert low == pytest.approx(2 * mean - high)


def test_gap_share_over_seeds_is_fiellers_interval():
    # A gap of exactly 4 points in every seed: the share is the t interval of the gain, divided by 4.
    share, low, high = seed_ratio_interval([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])
    assert share == 0.5 and low == pytest.approx(0.5 - 4.302653 / 3 ** 0.5 / 4, abs=1e-5)
    assert high == pytest.approx(0.5 + 4.302653 / 3 ** 0.5 / 4, abs=1e-5)
    # A gap that varies with the gain: at each end r, the t statistic of gain - r * gap is t_975 itself.
    # gain - r * gap = (1 - 3r, 2 - 4r, 3 - 5r): mean 2 - 4r, sd |1 - r|, so sqrt(3) |2 - 4r| = t |1 - r|:
    # r = (t - 2 sqrt(3)) / (t - 4 sqrt(3)) = -0.319377 and (t + 2 sqrt(3)) / (t + 4 sqrt(3)) = 0.691557
    share, low, high = seed_ratio_interval([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
    assert share == 0.5 and (low, high) == (pytest.approx(-0.319377, abs=1e-5), pytest.approx(0.691557, abs=1e-5))
    for r in (low, high):
        d = [a - r * b for a, b in zip([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])]
        mean = sum(d) / 3
        sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
        assert abs(mean) / (sd / 3 ** 0.5) == pytest.approx(4.302653, rel=1e-6)


def test_gap_share_is_undefined_when_the_gap_cannot_be_told_from_zero():
    assert seed_ratio_interval([1.0, 2.0, 3.0], [1.0, -1.0, 0.5]) is None  # mean 0.17, sd 1.04: no gap
    rng = np.random.default_rng(1)
    small = rng.random(2000) < 0.5
    gap, share = bootstrap_ratio_interval(small | (rng.random(2000) < 0.1), small, small.copy())
    assert gap == (0.0, 0.0, 0.0) and share is None


def test_gap_share_over_test_images_has_the_hand_computed_value():
    # 1,000 images: the small network gets none right, the large one 400, the dendritic run 100 of those.
    small = np.zeros(1000, dtype=bool)
    large = np.arange(1000) < 400
    run = np.arange(1000) < 100
    gap, (share, low, high) = bootstrap_ratio_interval(run, small, large)
    assert gap[0] == 40.0 and gap[1] > 0 and share == pytest.approx(0.25) and low < 0.25 < high
    # run correct on an image is nearly a coin flip weighted 1/4 among the large network's 400 correct ones,
    # so its share's standard error is about sqrt(0.25 * 0.75 / 400) = 0.0217.
    assert high - low == pytest.approx(2 * 1.96 * 0.0217, rel=0.15)


def test_bootstrap_interval_separates_a_real_difference_from_none():
    rng = np.random.default_rng(0)
    same = rng.random(10000) < 0.7
    assert bootstrap_contrast([(same, 1.0), (same, -1.0)]) == (0.0, 0.0, 0.0)
    better = same | (rng.random(10000) < 0.05)  # about 1.5 points more, never worse
    difference, low, high = bootstrap_contrast([(better, 1.0), (same, -1.0)])
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


def test_control_repeats_the_dendritic_cycles_and_keeps_them_by_the_same_rule(tiny, data_dir, tmp_path):
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), *DENDRITIC_RUN,
               "--dendrite-epochs", "2", "--max-dendrites", "2"])
    runs = {run["name"]: run for run in json.loads((results / "summary.json").read_text())["runs"]}
    control, dendritic = runs["resnet18_continued"], runs["resnet18_dendritic"]
    assert control["params"] == runs["resnet18"]["params"] and control["start"] == "baseline"
    assert dendritic["epochs_trained"] == sum(dendritic["cycles"]) and len(dendritic["architectures"]) >= 2
    # The rule, replayed on the control's history: cycle c scores validation - 0.5 c; a cycle is kept
    # when its best beats the best kept so far, else the run stops with the model it kept.
    history = [float(row["val_accuracy"]) for row in read_history(results / "resnet18_continued")]
    kept_score, kept_epoch, kept_accuracy, trained = runs["resnet18"]["val_accuracy"], 0, runs["resnet18"]["val_accuracy"], 0
    for cycle, length in enumerate(dendritic["cycles"], 1):
        scores = [accuracy - 0.5 * cycle for accuracy in history[trained:trained + length]]
        trained += length
        if max(scores) <= kept_score:
            break
        kept_score, kept_epoch = max(scores), trained - length + scores.index(max(scores)) + 1
        kept_accuracy = history[kept_epoch - 1]
    assert control["epochs_trained"] == trained == len(history)
    assert (control["epochs"], control["val_accuracy"]) == (kept_epoch, kept_accuracy)
    assert control["epochs_including_baseline"] == kept_epoch + 1
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

    real_end_epoch = dendrites.DendriteTracker.end_epoch

    def end_epoch(self, val_accuracy, *args, **kwargs):
        scores_given_to_tracker.append(val_accuracy)
        return real_end_epoch(self, val_accuracy, *args, **kwargs)

    for module in (runs, continuation):  # every place that evaluates
        monkeypatch.setattr(module, "evaluate", evaluate)
    monkeypatch.setattr(runs, "final_test", final_test)
    monkeypatch.setattr(dendrites.DendriteTracker, "end_epoch", end_epoch)
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), *DENDRITIC_RUN])
    history = (results / "resnet18_dendritic" / "history.csv").read_text().splitlines()
    val_column = history[0].split(",").index("val_accuracy")
    baseline_val = json.loads((results / "resnet18" / "result.json").read_text())["val_accuracy"]
    assert scores_given_to_tracker == [baseline_val] + [float(row.split(",")[val_column]) for row in history[1:]]


def test_three_seeds_answer_the_question_first_also_against_resnet34_trained_as_long(trained_once, data_dir, tmp_path):
    experiments = "resnet18,resnet34,resnet18_dendritic,resnet34_continued"
    copy_results(trained_once("smoke", SMOKE, **HALF_THE_CORES), tmp_path / "out")  # seed 0 of the default plan
    process = run_main([*SMOKE, "--seeds", "0,1,2", "--data-dir", data_dir, "--results-dir", "out",
                        "--experiments", experiments], cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert process.stderr.count("reusing") == 4  # seed 0's baselines, dendritic run and its control
    results = tmp_path / "out" / "smoke"
    summary = json.loads((results / "summary.json").read_text())
    runs = {(run["name"], run["seed"]): run for run in summary["runs"]}
    for seed in (0, 1, 2):  # ResNet-34 gets as many extra epochs as the dendritic ResNet-18 had
        assert runs["resnet34_continued", seed]["epochs_trained"] == runs["resnet18_dendritic", seed]["epochs_trained"]
    assert [(e["run"], e["against"], e["small"]) for e in summary["headline"]] == [
        ("resnet18_dendritic", "resnet34", "resnet18"), ("resnet18_dendritic", "resnet34_continued", "resnet18_continued")]
    text = (results / "summary.md").read_text()
    first = text.split("\n## ")[1]
    assert first.startswith("Does resnet18_dendritic reach resnet34?")
    assert "t interval over 3 seeds" in first
    assert "resnet18 → resnet34 gap that the dendritic run (its dendrites and its extra epochs together) closes" in first
    assert "Preliminary" not in text and "not Perforated Backpropagation" in text
