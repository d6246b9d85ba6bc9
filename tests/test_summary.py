"""summary.json and summary.md recomputed from a small synthetic table of runs, every expected number
computed by hand (in the comments) rather than by the functions under test: each difference's
sign and pairing by seed, 2 and 3 seeds, the sd column, the share of error removed, the gap
share's arguments, how many seeds a difference needs, and the words the verdict uses."""
import pytest

from dendritic_experiment import comparisons, markdown

from helpers import as_planned

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
T_975 = {1: 12.7062, 2: 4.302653}  # Student's t, two-sided 95%, by degrees of freedom (a printed table)


def runs(seeds=SEEDS):
    return as_planned([dict(name=name, model=name.split("_")[0], dendritic=name.endswith("_dendritic"), seed=seed,
                 test_accuracy=accuracies[seed], val_accuracy=accuracies[seed] - 1, params=PARAMS[name],
                 dendrites=int(name.endswith("_dendritic")), epochs=10, start="baseline")
            for seed in seeds for name, accuracies in ACCURACY.items()])


def interval(entry):
    return entry["difference"], entry["low"], entry["high"]


def test_the_headline_against_hand_computed_intervals_paired_by_seed():
    below, above = comparisons.headline(runs(), run_dirs={})
    assert (below["run"], below["against"], below["small"]) == ("resnet18_dendritic", "resnet34", "resnet18")
    assert (above["against"], above["small"]) == ("resnet34_continued", "resnet18_continued")
    # dendritic - resnet34 by seed: -2.0, -2.1, -1.9: mean -2, sd 0.1, half width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert interval(below) == pytest.approx((-2.0, -2.248414, -1.751586), abs=1e-5)
    # dendritic - resnet34_continued: 1.0, 1.1, 0.9: mean 1, the same half width
    assert interval(above) == pytest.approx((1.0, 0.751586, 1.248414), abs=1e-5)
    # the gap resnet34 - resnet18: 3.0, 3.6, 2.4: mean 3, sd 0.6, half width 4.302653 * 0.6 / sqrt(3) = 1.490483
    assert interval(below["gap"]) == pytest.approx((3.0, 1.509517, 4.490483), abs=1e-5)
    # the share: mean gain (1.0, 1.5, 0.5 -> 1) / mean gap (3): 1/3; Fieller's ends are where the
    # paired t statistic of gain - r * gap is exactly t_975 (checked on the per-seed numbers here)
    share = below["gap_closed"]
    assert share["share"] == pytest.approx(1 / 3)
    for r in (share["low"], share["high"]):
        d = [(g - s) - r * (large - s) for g, s, large in
             zip(ACCURACY["resnet18_dendritic"], ACCURACY["resnet18"], ACCURACY["resnet34"])]
        mean = sum(d) / 3
        sd = (sum((x - mean) ** 2 for x in d) / 2) ** 0.5
        assert abs(mean) / (sd / 3 ** 0.5) == pytest.approx(T_975[2], rel=1e-6)
    # the control's gap, resnet34_continued - resnet18_continued: -0.5, -0.1, -0.8: mean -0.467, sd 0.351,
    # half width 0.872: the interval holds 0, so there is no gap to close
    assert interval(above["gap"]) == pytest.approx((-0.46667, -1.33916, 0.40583), abs=1e-3)
    assert above["gap_closed"] is None
    text = markdown.summary_markdown(dict(runs=runs(), headline=[below, above],
                                        comparisons=comparisons.compare_runs(runs(), run_dirs={})))
    assert "resnet18_dendritic is below resnet34." in text and "resnet18_dendritic is above resnet34_continued." in text
    assert "**resnet18_dendritic − resnet34**: -2.00 points, 95% interval [-2.25, -1.75] (t interval over 3 seeds)" in text
    assert "closes**: 33%, 95% interval" in text and "closes**: undefined: the gap itself" in text


def test_two_seeds_use_t_with_one_degree_of_freedom():
    below, _ = comparisons.headline(runs(seeds=(0, 1)), run_dirs={})
    # -2.0, -2.1: mean -2.05, sd 0.1 / sqrt(2) = 0.070711, half width 12.7062 * 0.070711 / sqrt(2) = 0.635313
    assert interval(below) == pytest.approx((-2.05, -2.685313, -1.414687), abs=1e-5)
    assert below["method"] == "t interval over 2 seeds"


def test_every_comparison_is_run_minus_against_paired_by_seed():
    entries = comparisons.compare_runs(runs(), run_dirs={})
    assert [(c["run"], c["against"]) for c in entries] == [
        ("resnet18_dendritic", "resnet18"), ("resnet18_continued", "resnet18"),
        ("resnet18_dendritic", "resnet18_continued")]
    # 1.0, 1.5, 0.5: mean 1, sd 0.5, half 4.302653 * 0.5 / sqrt(3) = 1.242069 -> [-0.242069, 2.242069]
    # 0.5, 0.5, 0.4: mean 0.466667, sd 0.057735, half 0.143422
    # 0.5, 1.0, 0.1: mean 0.533333, sd 0.450925, half 1.120160
    expected = [(1.0, -0.242069, 2.242069), (0.466667, 0.323245, 0.610089), (0.533333, -0.586827, 1.653493)]
    for c, hand in zip(entries, expected):
        assert interval(c) == pytest.approx(hand, abs=1e-4)
        assert c["method"] == "t interval over 3 seeds"
    assert [c["distinguishable"] for c in entries] == [False, True, False]


def test_the_table_has_each_runs_mean_sd_seeds_and_error_removed():
    rows = {row["name"]: row for row in comparisons.aggregate(runs())}
    dendritic = rows["resnet18_dendritic"]
    assert dendritic["accuracies"] == [61.0, 71.5, 80.5]
    assert dendritic["test_accuracy"] == pytest.approx(71.0)
    assert rows["resnet18"]["test_sd"] == pytest.approx(10.0)  # 60, 70, 80
    assert dendritic["test_sd"] == pytest.approx(9.7596, abs=1e-4)  # deviations -10, 0.5, 9.5: sqrt(190.5 / 2)
    assert dendritic["accuracy_gained"] == pytest.approx(1.0)  # 71 - 70
    assert dendritic["error_removed"] == pytest.approx(1.0 / 30)  # of ResNet-18's 30 points of error
    assert dendritic["params_saved"] == pytest.approx(1 - 12.4 / 21.3)
    table = markdown.summary_markdown(dict(runs=runs()))
    line = next(line for line in table.splitlines() if line.startswith("| resnet18_dendritic |"))
    assert line.startswith("| resnet18_dendritic | 71.00 | 9.76 | 61.00, 71.50, 80.50 | 70.00 | 12.40 | n/a | 1 |")
    assert "| +1.00 | 3.3% | 41.8% |" in line
    assert "acc. gained vs resnet18 (points) | resnet18 error removed | params saved vs resnet34 |" in table


def test_the_remaining_error_removed_per_seed_with_its_interval():
    """The seed project's figure, (error of the baseline - error of the run) / error of the baseline,
    per seed: against resnet18 (40, 30, 20 points of error) 1 / 40, 1.5 / 30, 0.5 / 20."""
    against_baseline, against_control = comparisons.error_removed(runs(), run_dirs={})
    assert (against_baseline["run"], against_baseline["against"]) == ("resnet18_dendritic", "resnet18")
    assert against_baseline["shares"] == pytest.approx([0.025, 0.05, 0.025])
    # mean 0.033333, deviations -0.008333, 0.016667, -0.008333: sd sqrt(4.16667e-4 / 2) = 0.0144338,
    # half width 4.302653 * 0.0144338 / sqrt(3) = 0.0358553
    assert (against_baseline["share"], against_baseline["low"], against_baseline["high"]) == pytest.approx(
        (0.033333, -0.002522, 0.069189), abs=1e-5)
    # against the control (39.5, 29.5, 19.6 points of error): 0.5 / 39.5, 1 / 29.5, 0.1 / 19.6
    assert against_control["against"] == "resnet18_continued"
    assert against_control["shares"] == pytest.approx([0.5 / 39.5, 1 / 29.5, 0.1 / 19.6])
    text = markdown.summary_markdown(dict(runs=runs(), error_removed=[against_baseline, against_control]))
    assert ("- **resnet18_dendritic against resnet18**: 3.3%, 95% interval [-0.3%, 6.9%] (t interval over 3 seeds); "
            "per seed (0, 1, 2): 2.5%, 5.0%, 2.5%.") in text


def test_the_table_gives_each_runs_compute_per_image():
    with_macs = [dict(run, macs=556_000_000 + 1_000_000 * run["seed"]) for run in runs()]
    line = next(line for line in markdown.summary_markdown(dict(runs=with_macs)).splitlines()
                if line.startswith("| resnet18 |"))
    assert "| 11.20 | 557.0 | 0 |" in line  # 556, 557, 558 million: the mean


def test_power_from_the_paired_differences():
    dendritic_vs_baseline = comparisons.compare_runs(runs(), run_dirs={})[0]["power"]
    # differences 1.0, 1.5, 0.5: sd 0.5. The paired t test's power (two-sided 5%, 80%), from G*Power's
    # noncentral t: 3 seeds find 3.264 sd; 1 sd needs 10 seeds.
    assert dendritic_vs_baseline["sd"] == pytest.approx(0.5)
    assert dendritic_vs_baseline["resolves"] == pytest.approx(3.264 * 0.5, rel=1e-3)
    assert dendritic_vs_baseline["seeds_needed"]["0.5"] == 10
    assert dendritic_vs_baseline["sign_flip_p"] is None  # 3 seeds: no p below 0.25
    # sd 0.2: 0.3 points is 1.5 sd (6 seeds); 0.5 points is 2.5 sd, more than 4 seeds find (2.128 sd), less than 3 (3.264)
    assert comparisons.power([1.0, 1.2, 0.8])["seeds_needed"] == {"0.5": 4, "0.3": 6}
    # six seeds: subsets of (1, 2, 3, 4, 5, 6) flipped to minus reach |sum| >= 17 (the observed, with 2 flipped)
    # when they sum to at most 2 or at least 19: 3 + 3 of 64 sign patterns
    assert comparisons.power([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])["sign_flip_p"] == pytest.approx(6 / 64)
    assert comparisons.power([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])["sign_flip_p"] == pytest.approx(0.03125)
    assert comparisons.power([1.0, 2.0, 3.0, 4.0, 5.0])["sign_flip_p"] is None and comparisons.power([1.0]) is None
    text = markdown.summary_markdown(dict(runs=runs(), comparisons=comparisons.compare_runs(runs(), run_dirs={})))
    assert ("- **resnet18_dendritic − resnet18**: per-seed differences have sd 0.50 points; these 3 seeds resolve "
            "±1.63 points; seeds needed for ±0.5 points 10, ±0.3 points ") in text
    assert "test needs 6 or more seeds to reach p < 0.05: its smallest p at 3 seeds is 0.25.)" in text
    assert "the noncentral t with seeds − 1 degrees of freedom" in text


def test_seeds_needed_and_difference_resolved_match_the_reference_values():
    """Paired t, two-sided 5%, 80% power, effects in sds of the per-seed differences (G*Power's values;
    the normal approximation ((1.96 + 0.84) / effect)^2 says 32, 13, 8 and 4)."""
    from dendritic_experiment.intervals import POWER, resolved_difference, seeds_needed, t_test_power

    assert [seeds_needed(1.0, effect) for effect in (0.5, 0.8, 1.0, 1.5)] == [34, 15, 10, 6]
    # A small effect (0.3 points at sd 20): the fewest seeds with 80% power, near the normal approximation's
    # ((1.96 + 0.84) / 0.015)^2 = 34,844, one seed fewer falling short.
    needed = seeds_needed(20.0, 0.3)
    assert t_test_power(0.015, needed - 1) < POWER <= t_test_power(0.015, needed) and abs(needed - 34_844) < 100
    assert [seeds_needed(0.4, 0.4 * effect) for effect in (0.5, 0.8, 1.0, 1.5)] == [34, 15, 10, 6]  # in points
    assert [resolved_difference(1.0, seeds) for seeds in (3, 4, 5, 6)] == pytest.approx([3.26, 2.13, 1.68, 1.43],
                                                                                        abs=0.006)


def test_the_control_of_a_larger_network_counts_only_when_it_trained_as_long():
    """With resnet34_dendritic run too, resnet34_continued repeats its cycles, not resnet18_dendritic's:
    no "beyond equal extra training" entry for resnet18_dendritic against it."""
    table = runs()  # the plan without resnet34_dendritic: both controls repeat resnet18_dendritic's cycles
    assert {run["repeats"] for run in table if run["kind"] == "control"} == {"resnet18_dendritic"}
    assert [e["against"] for e in comparisons.headline(table, run_dirs={})] == ["resnet34", "resnet34_continued"]
    for run in table:
        if run["name"] == "resnet34_continued":
            run["repeats"] = "resnet34_dendritic"
    assert [e["against"] for e in comparisons.headline(table, run_dirs={})] == ["resnet34"]


def test_the_baseline_a_named_run_starts_from_is_reported_with_it():
    """--experiments resnet34,resnet18_dendritic trains resnet18 (the warm start) too: without it in
    the report there would be no gap to close and no headline."""
    from types import SimpleNamespace

    from dendritic_experiment.experiment import plan_runs, reported_runs
    from dendritic_experiment.settings import parse_settings

    settings = parse_settings(["--experiments", "resnet34,resnet18_dendritic,resnet18_w1.5,resnet34_continued",
                               "--seeds", "0", "--width", "0.125"])
    plan = plan_runs(settings)
    results = {run: dict(name=run.name, model=run.model, classes=range(100), dendrites=0,
                         settings=dict(width=0.125, dendrite_modules="auto")) for run in plan}
    reported, _ = reported_runs(settings, SimpleNamespace(results=results), plan)
    # What each run is, as data from the plan: kind, family, width, what it starts from and repeats
    described = [(run["name"], run["kind"], run["family"], run["width_multiple"], run["starts_from"], run["repeats"])
                 for run in reported]
    assert described == [("resnet34", "baseline", "resnet34", 1.0, None, None),
                         ("resnet18", "baseline", "resnet18", 1.0, None, None),
                         ("resnet18_dendritic", "dendritic", "resnet18", 1.0, "resnet18", None),
                         ("resnet18_continued", "control", "resnet18", 1.0, "resnet18", "resnet18_dendritic"),
                         ("resnet18_w1.5", "baseline", "resnet18", 1.5, None, None),
                         ("resnet34_continued", "control", "resnet34", 1.0, "resnet34", "resnet18_dendritic")]


def test_the_gap_and_the_share_of_it_closed_come_from_the_same_seeds():
    """A dendritic run missing seed 2: the gap resnet34 - resnet18 is taken over seeds 0 and 1 too
    (3.0 and 3.6, mean 3.3), not over all three of its own, beside a share from two."""
    table = [run for run in runs() if (run["name"], run["seed"]) != ("resnet18_dendritic", 2)]
    below = comparisons.headline(table, run_dirs={})[0]
    assert below["seeds"] == below["gap"]["seeds"] == [0, 1]
    # sd of (3.0, 3.6) = 0.6 / sqrt(2); half width 12.7062 * 0.6 / 2 = 3.81186: the interval holds 0, so no share
    assert interval(below["gap"]) == pytest.approx((3.3, 3.3 - 3.81186, 3.3 + 3.81186), abs=1e-4)
    assert below["gap_closed"] is None
