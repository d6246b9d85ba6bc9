"""summary.json and summary.md recomputed from their runs: each difference's sign and pairing by
seed, the order of the gap share's arguments, and the words the verdict uses."""
import pytest

from dendritic_experiment import report
from dendritic_experiment.intervals import seed_interval, seed_ratio_interval

SEEDS = (0, 1, 2)
# Test accuracy by seed. The seeds differ by far more than the runs within a seed, so that a
# difference not paired by seed would have a much wider interval.
ACCURACY = {
    "resnet18": (60.0, 70.0, 80.0),
    "resnet34": (63.0, 73.6, 82.4),
    "resnet18_dendritic": (61.0, 71.5, 80.5),
    "resnet18_continued": (60.5, 70.5, 80.4),
    "resnet34_continued": (60.0, 70.4, 79.6),
}
PARAMS = {"resnet18": 11.2e6, "resnet34": 21.3e6, "resnet18_dendritic": 12.4e6, "resnet18_continued": 11.2e6,
          "resnet34_continued": 21.3e6}


def runs():
    return [dict(name=name, model=name.split("_")[0], dendritic=name.endswith("_dendritic"), seed=seed,
                 test_accuracy=accuracies[seed], val_accuracy=accuracies[seed] - 1, params=PARAMS[name],
                 dendrites=int(name.endswith("_dendritic")), epochs=10, start="baseline",
                 architectures=[(11.2e6, 50.0 + seed), (12.4e6, 51.0 + seed)] if name.endswith("_dendritic") else None)
            for seed in SEEDS for name, accuracies in ACCURACY.items()]


def paired(a, b):
    return [x - y for x, y in zip(ACCURACY[a], ACCURACY[b])]


def test_the_headline_is_recomputed_from_the_runs_paired_by_seed():
    entries = report.headline(runs(), run_dirs={})
    assert [(e["run"], e["against"], e["small"]) for e in entries] == [
        ("resnet18_dendritic", "resnet34", "resnet18"), ("resnet18_dendritic", "resnet34_continued", "resnet18_continued")]
    for entry in entries:
        difference, low, high = seed_interval(paired("resnet18_dendritic", entry["against"]))
        assert (entry["difference"], entry["low"], entry["high"]) == pytest.approx((difference, low, high))
        gap = seed_interval(paired(entry["against"], entry["small"]))
        assert (entry["gap"]["difference"], entry["gap"]["low"], entry["gap"]["high"]) == pytest.approx(gap)
        share = seed_ratio_interval(paired("resnet18_dendritic", entry["small"]), paired(entry["against"], entry["small"]))
        closed = entry["gap_closed"]
        assert share is None and closed is None or (closed["share"], closed["low"], closed["high"]) == pytest.approx(share)
    below, above = entries
    assert below["high"] < 0 and above["low"] > 0  # these numbers were chosen for a verdict each way
    assert below["gap_closed"]["share"] == pytest.approx((1.0 + 1.5 + 0.5) / (3.0 + 3.6 + 2.4))  # mean gain / mean gap
    text = report.summary_markdown(runs(), entries, report.compare_runs(runs(), run_dirs={}))
    assert "resnet18_dendritic is below resnet34." in text and "resnet18_dendritic is above resnet34_continued." in text


def test_every_comparison_is_run_minus_against_paired_by_seed():
    comparisons = report.compare_runs(runs(), run_dirs={})
    assert [(c["run"], c["against"]) for c in comparisons] == [
        ("resnet18_dendritic", "resnet18"), ("resnet18_continued", "resnet18"),
        ("resnet18_dendritic", "resnet18_continued")]
    for c in comparisons:
        assert (c["difference"], c["low"], c["high"]) == pytest.approx(seed_interval(paired(c["run"], c["against"])))
        assert c["distinguishable"] == (c["low"] > 0 or c["high"] < 0)
        assert c["method"] == "t interval over 3 seeds"


def test_the_table_and_the_picture_use_every_seed():
    rows = {row["name"]: row for row in report.aggregate(runs())}
    dendritic = rows["resnet18_dendritic"]
    assert dendritic["accuracies"] == list(ACCURACY["resnet18_dendritic"])
    assert dendritic["accuracy_gained"] == pytest.approx(sum(paired("resnet18_dendritic", "resnet18")) / 3)
    assert dendritic["params_saved"] == pytest.approx(1 - 12.4 / 21.3)
    figure = report.comparison_figure(runs(), report.headline(runs(), run_dirs={}))
    right = figure.axes[1]
    assert len([line for line in right.get_lines() if line.get_color() == "tab:green"]) == 3  # a curve per seed
    assert "each of 3 seed(s)" in right.get_legend().get_texts()[0].get_text()
