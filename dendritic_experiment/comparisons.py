"""The report's numbers (summary.json): every comparison between runs with its 95% interval and the
power of its seeds, from the runs' results and saved test predictions. How the statistics work:
docs/method.md, "Seeds and intervals" and "The width frontier"."""
import itertools
import math
import os

import torch

from dendritic_experiment.frontier import family_frontier, mean, weights_against
from dendritic_experiment.intervals import (bootstrap_contrast, bootstrap_error_removed, bootstrap_ratio_interval,
                                            resolved_difference, sd, seed_interval, seed_ratio_interval, seeds_needed,
                                            sign_flip_p)
from dendritic_experiment.utils import read_csv


class Accuracies:
    """Test accuracy of every (run, seed), and per-image correctness when one seed is all there is to pair on."""

    def __init__(self, runs, run_dirs):
        self.by_run = {(run["name"], run["seed"]): run["test_accuracy"] for run in runs}
        self.run_dirs = run_dirs
        self.correct_by_run = {}

    def seeds(self, *names):
        """The seeds at which every one of names was run."""
        return sorted(seed for name, seed in self.by_run if name == names[0]
                      and all((other, seed) in self.by_run for other in names))

    def correct(self, name, seed):
        """Which test images the run got right at this seed (read once)."""
        if (name, seed) not in self.correct_by_run:
            saved = torch.load(os.path.join(self.run_dirs[name, seed], "test_predictions.pt"), weights_only=True)
            self.correct_by_run[name, seed] = (saved["predicted"] == saved["labels"]).numpy()
        return self.correct_by_run[name, seed]

    def contrast(self, weights, one_seed=None):
        """The one comparison of runs: a weighted sum of their test accuracies, paired by seed (weights: {seed: ((run,
        weight), ...)}; a - b is ((a, 1), (b, -1))), each seed's value, their mean with its 95% interval (with one seed,
        over test images: one_seed(seed)'s, else its own bootstrap) and what the seeds resolve. None without a seed."""
        seeds = sorted(weights)
        if not seeds:
            return None
        values = [sum(weight * self.by_run[run, seed] for run, weight in weights[seed]) for seed in seeds]
        difference, low, high, method = self.interval(values, seeds, weights[seeds[0]][0][0], one_seed or (
            lambda seed: bootstrap_contrast([(self.correct(run, seed), weight) for run, weight in weights[seed]])))
        return dict(difference=difference, low=low, high=high, method=method, distinguishable=low > 0 or high < 0,
                    seeds=seeds, differences=values, power=power(values))

    def interval(self, values, seeds, run, one_seed):
        """(estimate, low, high, method): the mean of values (one per seed) with its 95% t interval; with one
        seed, one_seed(seed)'s (estimate, low, high), a paired bootstrap over the test images of run's."""
        if len(seeds) > 1:
            return (*seed_interval(values), f"t interval over {len(seeds)} seeds")
        images, seed = len(self.correct(run, seeds[0])), seeds[0]  # what a one-seed interval covers, and what not:
        return (*one_seed(seed), f"paired bootstrap over {images:,} test images, seed {seed} only: "
                "test-set noise for these trained weights, not the seed-to-seed spread")

    def difference(self, a, b, seeds=None, one_seed=None):
        """a - b with its 95% interval, over seeds or every seed both were run at, or None (one_seed: as contrast)."""
        seeds = self.seeds(a, b) if seeds is None else seeds
        entry = self.contrast({seed: ((a, 1.0), (b, -1.0)) for seed in seeds}, one_seed)
        return entry and dict(run=a, against=b, **entry)

    def gap_closed(self, run, small, large):
        """(the gap large - small with its interval, (run - small) / (large - small) with its 95% interval
        or None where the gap cannot be told from zero), both from the same seeds or bootstrap draw."""
        seeds = self.seeds(run, small, large)
        if len(seeds) > 1:
            gap = self.difference(large, small, seeds)
            share = seed_ratio_interval([self.by_run[run, s] - self.by_run[small, s] for s in seeds],
                                        [self.by_run[large, s] - self.by_run[small, s] for s in seeds])
        else:  # the gap from the share's own bootstrap draw
            gap_interval, share = bootstrap_ratio_interval(
                *(self.correct(name, seeds[0]) for name in (run, small, large)))
            gap = self.difference(large, small, seeds, one_seed=lambda seed: gap_interval)
        return gap, None if share is None else dict(zip(("share", "low", "high"), share))

    def error_removed(self, run, against):
        """The share of against's remaining test error that run removes, per seed, with its mean and 95%
        interval. None when the two share no seed."""
        seeds = self.seeds(run, against)
        if not seeds:
            return None
        shares = [(self.by_run[run, s] - self.by_run[against, s]) / (100 - self.by_run[against, s]) for s in seeds]
        share, low, high, method = self.interval(shares, seeds, run, lambda seed: bootstrap_error_removed(
            self.correct(run, seed), self.correct(against, seed)))
        return dict(run=run, against=against, seeds=seeds, shares=shares, share=share, low=low, high=high,
                    method=method, distinguishable=low > 0 or high < 0)


def power(differences):
    """What paired per-seed differences (points) can resolve: their sd, the difference these seeds
    resolve, how many seeds each of POWER_TARGETS needs, and with SIGN_FLIP_SEEDS or more the exact
    sign-flip p. None with fewer than two seeds."""
    n = len(differences)
    if n < 2:
        return None
    spread = sd(differences)
    return dict(seeds=n, sd=spread, resolves=resolved_difference(spread, n),
                seeds_needed={str(d): seeds_needed(spread, d) for d in POWER_TARGETS},
                sign_flip_p=sign_flip_p(differences) if n >= SIGN_FLIP_SEEDS else None)


POWER_TARGETS = (0.5, 0.3)  # points: differences a user may want resolved
SIGN_FLIP_SEEDS = 6  # the fewest seeds at which an exact sign-flip test can reach p < 0.05 (2 / 2^6 = 0.031)


def described(runs):
    """{run name: its first seed's record}, in the order run: what each run is (kind, family, width
    multiple, what it starts from or repeats: experiment.PlannedRun's description)."""
    first = {}
    for run in runs:
        first.setdefault(run["name"], run)
    return first


def named(runs, kind):
    return [name for name, run in described(runs).items() if run["kind"] == kind]


def baseline_of(runs, name):
    """The baseline a run starts from (a warm start), else its family's own network."""
    run = described(runs)[name]
    return run.get("starts_from") or run["family"]


def control_of(runs, dendritic, family=None):
    """The control that repeats dendritic's cycles, of family (dendritic's own by default), or None."""
    family = family or described(runs)[dendritic]["family"]
    return next((name for name, run in described(runs).items()
                 if run["kind"] == "control" and run["repeats"] == dendritic and run["family"] == family), None)


def error_removed(runs, run_dirs):
    """Each dendritic run's share of the remaining test error removed, against its own baseline and
    against its control (the seed project's figure: "eliminated X% of the remaining error")."""
    accuracies = Accuracies(runs, run_dirs)
    entries = [accuracies.error_removed(dendritic, against) for dendritic in named(runs, "dendritic")
               for against in (baseline_of(runs, dendritic), control_of(runs, dendritic)) if against]
    return [entry for entry in entries if entry]


def compare_runs(runs, run_dirs):
    """For each dendritic run: it and its control against their baseline, and it against its control."""
    accuracies = Accuracies(runs, run_dirs)
    comparisons = []
    for dendritic in sorted(named(runs, "dendritic")):
        baseline, control = baseline_of(runs, dendritic), control_of(runs, dendritic)
        for run, against, meaning in ((dendritic, baseline, "what dendrites and extra epochs gave together"),
                                      (control, baseline, "what the extra epochs alone gave"),
                                      (dendritic, control, "what the dendrites gave beyond the extra epochs")):
            entry = run and against and accuracies.difference(run, against)
            if entry:
                comparisons.append(dict(entry, meaning=meaning))
    return comparisons


def headline(runs, run_dirs):
    """The question itself: does each dendritic run reach each larger network that was run? Against the
    larger baseline (the dendritic run has its extra epochs too), and against that network's control
    where it repeats this dendritic run's cycles (trained as long): each with the share of the gap closed."""
    accuracies, kinds = Accuracies(runs, run_dirs), described(runs)
    entries = []
    for dendritic in named(runs, "dendritic"):
        family = kinds[dendritic]["family"]
        for large in larger_networks(runs, family):
            entries.append(reach(accuracies, dendritic, large, small=family))
            large_control = kinds[large]["width_multiple"] == 1 and control_of(runs, dendritic, kinds[large]["family"])
            if large_control:  # beyond equal extra training: the gap from this family's control, where it was run
                entries.append(reach(accuracies, dendritic, large_control, control_of(runs, dendritic) or family))
    return [entry for entry in entries if entry]


def larger_networks(runs, family):
    """The baselines of other families with more parameters than family's network, in the order they
    were run. Its own width variants (resnet18_w1.5) are left to the width frontier."""
    kinds = described(runs)
    if family not in kinds:
        return []
    return [name for name, run in kinds.items() if run["kind"] == "baseline" and run["family"] != family
            and run["params"] > kinds[family]["params"]]


def reach(accuracies, dendritic, large, small):
    """dendritic - large, the gap large - small and the share of it that dendritic closes; None when the
    runs share no seed."""
    entry = accuracies.difference(dendritic, large)
    if not entry:
        return None
    gap, share = accuracies.gap_closed(dendritic, small, large)
    return dict(entry, small=small, gap=gap, gap_closed=share)


def frontiers(runs):
    """The width frontier of every family with width variants (frontier.family_frontier)."""
    families = dict.fromkeys(run["family"] for run in runs if run["kind"] == "baseline")
    return [line for line in (family_frontier(runs, family) for family in families) if line is not None]


def frontier_entries(runs, run_dirs, lines=None):
    """Each dendritic run and control against its family's width frontier (frontier.weights_against),
    with the seeds outside it named, and its mean parameters and accuracy over the seeds compared (where
    the picture draws the distance from). Empty without width variants."""
    by_family = {line.family: line for line in (frontiers(runs) if lines is None else lines)}
    accuracies = Accuracies(runs, run_dirs)
    entries = []
    # The control too: a warm-started run trains its baseline's epochs and then its cycles, the frontier's
    # baselines only theirs, so the control's distance (the same extra epochs, no dendrites) is read beside it.
    for name, run in described(runs).items():
        line = by_family.get(run["family"]) if run["kind"] in ("dendritic", "control") else None
        weights, outside = weights_against(runs, name, line) if line else ({}, {})
        if not weights and not outside:
            continue
        entry = accuracies.contrast(weights) or dict(difference=None, low=None, high=None, distinguishable=False,
                                                     seeds=[], differences=[], power=None, method="none")
        if len(weights) > 1:
            entry["method"] += ", each seed's run against that seed's members"
        compared = [own for own in runs if own["name"] == name and own["seed"] in weights]
        entries.append(dict(run=name, family=line.family, **entry, outside=outside, kind=run["kind"],
                            repeats=run["repeats"],
                            params=mean(own["params"] for own in compared) if compared else None,
                            accuracy=mean(own["test_accuracy"] for own in compared) if compared else None))
    return entries


def cycle_curves(runs, run_dirs):
    """The best validation accuracy in each cycle of every dendritic run and its control, every seed: what
    the dendrites add beyond equal training. x is the dendrites the dendritic run trained that cycle with;
    x = 0, for a warm start, is the baseline's validation accuracy."""
    reported = {(run["name"], run["seed"]): run for run in runs}
    curves = []
    for (name, seed), run in reported.items():
        if run["kind"] != "dendritic" or not run.get("cycles"):
            continue
        baseline, warm = baseline_of(runs, name), run.get("start") == "baseline"
        start = [[0, reported[baseline, seed]["val_accuracy"]]] if warm and (baseline, seed) in reported else []
        for curve_run, kind in ((name, "dendritic"), (control_of(runs, name), "control")):
            if (curve_run, seed) in run_dirs:
                bests = cycle_bests(read_csv(os.path.join(run_dirs[curve_run, seed], "history.csv")), run["cycles"])
                points = start + [[count + int(warm), best] for count, best in enumerate(bests)]
                curves.append(dict(run=curve_run, seed=seed, kind=kind, dendritic_run=name, points=points))
    return curves


def cycle_bests(history, cycles):
    """The best val_accuracy of each cycle (cycles: epochs per cycle, in order) that history reaches."""
    scores = [float(row["val_accuracy"]) for row in history]
    firsts = itertools.accumulate(cycles, initial=0)
    return [max(scores[first:first + length]) for first, length in zip(firsts, cycles) if first < len(scores)]


def aggregate(runs):
    """One row per run name: mean and spread over seeds, with the gains the table reports."""
    rows, per_seed = {}, dict(accuracies="test_accuracy", val_accuracies="val_accuracy", param_counts="params",
                              dendrite_counts="dendrites", epoch_counts="epochs", mac_counts="macs")
    for run in runs:
        row = rows.setdefault(run["name"], dict(run, **{listed: [] for listed in per_seed}))
        for listed, key in per_seed.items():
            row[listed].append(run.get(key) if key == "macs" else run[key])  # macs: None where not recorded
    for row in rows.values():
        n = len(row["accuracies"])
        row["test_accuracy"] = mean(row["accuracies"])
        row["val_accuracy"] = mean(row["val_accuracies"])
        row["params"] = mean(row["param_counts"])  # seeds of a dendritic run may keep different dendrites
        row["dendrites"] = spread_text(row["dendrite_counts"])
        row["epochs"] = spread_text(row["epoch_counts"])
        row["macs"] = mean(row["mac_counts"]) if None not in row["mac_counts"] else math.nan  # seeds may differ
        row["test_sd"] = sd(row["accuracies"]) if n > 1 else math.nan
        row["latency"] = (row.get("latency_ms") or {}).get("1", math.nan)  # the first seed's model, timed once
        row["latencies"] = [row["latency"]] * n
    small, large = (rows.get(name) for name in reference_networks(runs))
    for row in rows.values():
        if small:
            row["accuracy_gained"] = row["test_accuracy"] - small["test_accuracy"]
            row["error_removed"] = row["accuracy_gained"] / (100 - small["test_accuracy"])
        if large:
            row["params_saved"] = 1 - row["params"] / large["params"]
    return list(rows.values())


def reference_networks(runs):
    """(small, large): the table's reference networks, the first dendritic run's family (else the first
    run's model) and the first larger network of another family (resnet18 and resnet34 by default), or None."""
    small = next((run["family"] for run in runs if run["kind"] == "dendritic"), runs[0]["model"] if runs else None)
    return small, next(iter(larger_networks(runs, small)), None)


def spread_text(values):
    """'3' when every seed agrees, else '2-3'."""
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"
