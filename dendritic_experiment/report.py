"""The report: each run's pictures, the comparison between runs with 95% intervals, summary.md
and comparison.png. Everything here is drawn from saved numbers, so it can be redrawn without
training (main.py --plot-only)."""
import io
import math
import os

import numpy as np
import torch

from dendritic_experiment.data import DATASETS
from dendritic_experiment.frontier import Frontier, baseline_width, distance_to_frontier, family_frontier, family_of
from dendritic_experiment.intervals import (bootstrap_error_removed, bootstrap_interval, bootstrap_mix_interval,
                                            bootstrap_ratio_interval, resolved_difference, seed_interval,
                                            seed_ratio_interval, seeds_needed, sign_flip_p)
from dendritic_experiment.utils import ExperimentError, read_csv, read_json, write_atomic, write_json

# ---------------------------------------------------------------------------------------------
# Pictures of one run: its curves and the test images it got wrong.
# ---------------------------------------------------------------------------------------------

def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no screen needed
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, path):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    pyplot().close(figure)
    write_atomic(path, buffer.getvalue())


def curves_figure(history, title):
    """Train and validation loss and accuracy by epoch; a dotted line where a dendrite was added.
    A dendritic run gets a third panel: what its dendrites add to their layers' output."""
    plt = pyplot()
    dendritic = "dendrite_share" in history[0]
    figure, panels = plt.subplots(1, 3 if dendritic else 2, figsize=(16.5 if dendritic else 11, 4))
    loss_axes, accuracy_axes = panels[:2]
    epochs = [int(row["epoch"]) for row in history]
    if dendritic:
        contribution_panel(panels[2], epochs, history)
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for split, style in (("train", "-o"), ("val", "--o")):
            axes.plot(epochs, [float(row[f"{split}_{metric}"]) for row in history], style, markersize=3,
                      label="validation" if split == "val" else split)
        counts = [int(row.get("dendrites") or 0) for row in history]
        for epoch, previous, count in zip(epochs, [0] + counts, counts):  # a warm start adds one before epoch 1
            if count > previous:
                axes.axvline(epoch - 0.5, color="tab:green", linestyle=":")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric + (" (%)" if metric == "accuracy" else ""))
        axes.grid(alpha=0.3)
    loss_axes.set_ylabel("loss: cross-entropy with the training's label smoothing (both)")
    loss_axes.legend()
    if any(int(row.get("dendrites") or 0) for row in history):
        accuracy_axes.plot([], [], color="tab:green", linestyle=":", label="dendrite added")
        accuracy_axes.legend()
    figure.suptitle(title)
    return figure


def contribution_panel(axes, epochs, history):
    """The share of the dendrite layers' output variance that the dendrites carry, and their mean
    output scale |dendrites_to_top|, by epoch (measured on a fixed validation batch)."""
    axes.plot(epochs, [100 * float(row["dendrite_share"]) for row in history], "-o", markersize=3,
              color="tab:green", label="share of output variance")
    axes.set_xlabel("epoch")
    axes.set_ylabel("dendrites' share of their layers' output variance (%)")
    axes.grid(alpha=0.3)
    scale_axes = axes.twinx()
    scale_axes.plot(epochs, [float(row["dendrite_scale"]) for row in history], "--", color="tab:gray")
    scale_axes.set_ylabel("mean |dendrites_to_top| (dashed)")
    axes.set_title("what the dendrites contribute", fontsize=10)


def misclassified_figure(images, labels, predicted, classes, count=24, columns=6):
    """The first `count` test images the model got wrong, with true and predicted names: one image of
    tiles on one axes (a grid of 24 axes took twice as long to draw, a second per run)."""
    plt = pyplot()
    wrong = (predicted != labels).nonzero().flatten()[:count].tolist()
    rows = max(1, math.ceil(len(wrong) / columns))
    side = images.shape[-1]
    tile_width, tile_height = side + side // 8, side + side // 2  # room between tiles, and above each for its names
    mosaic = torch.full((images.shape[1], rows * tile_height, columns * tile_width), 255, dtype=torch.uint8)
    below_title = 0.93  # of the figure's height; the mosaic fills the width, 2 inches a tile
    figure = plt.figure(figsize=(2 * columns, 2 * rows * tile_height / tile_width / below_title))
    axes = figure.add_axes((0, 0, 1, below_title))
    for slot, index in enumerate(wrong):
        top = slot // columns * tile_height + side // 2
        left = slot % columns * tile_width + side // 16
        mosaic[:, top:top + side, left:left + side] = images[index]
        axes.text(left + side / 2, top - 0.5, f"true: {classes[labels[index]]}\npredicted: {classes[predicted[index]]}",
                  fontsize=7, ha="center", va="bottom")
    axes.imshow(mosaic.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    axes.axis("off")
    figure.suptitle(f"{len(wrong)} of {int((predicted != labels).sum())} misclassified test images")
    return figure


def write_run_pictures(run_dir, run_name, data):
    """curves.png (a dendritic run's titled with its dendrite method) and misclassified.png of a finished run."""
    history = read_csv(os.path.join(run_dir, "history.csv"))
    method = (read_json(os.path.join(run_dir, "result.json")) or {}).get("method")
    title = f"{run_name}: {method}" if method else run_name
    save_figure(curves_figure(history, title), os.path.join(run_dir, "curves.png"))
    predictions = torch.load(os.path.join(run_dir, "test_predictions.pt"), weights_only=True)
    figure = misclassified_figure(data.test_images, predictions["labels"].long(), predictions["predicted"].long(),
                                  data.classes)
    save_figure(figure, os.path.join(run_dir, "misclassified.png"))


# ---------------------------------------------------------------------------------------------
# The comparison: summary.json is the data; summary.md and comparison.png are drawn from it alone.
# ---------------------------------------------------------------------------------------------

NEGLIGIBLE_SHARE = 0.001  # dendrites carrying under 0.1% of their layers' output variance do next to nothing
CONTRIBUTION_NOTE = "measured after training on a fixed batch of validation images"

# (run, against, what the difference measures), for every model that has a dendritic run.
COMPARISONS = (
    ("{m}_dendritic", "{m}", "what dendrites and extra epochs gave together"),
    ("{m}_continued", "{m}", "what the extra epochs alone gave"),
    ("{m}_dendritic", "{m}_continued", "what the dendrites gave beyond the extra epochs"),
)


class Accuracies:
    """Test accuracy of every (run, seed), and each run's per-image correctness when one seed is all
    there is to pair on."""

    def __init__(self, runs, run_dirs):
        self.by_run = {(run["name"], run["seed"]): run["test_accuracy"] for run in runs}
        self.run_dirs = run_dirs

    def seeds(self, *names):
        """The seeds at which every one of names was run."""
        return sorted(seed for name, seed in self.by_run if name == names[0]
                      and all((other, seed) in self.by_run for other in names))

    def correct(self, name, seed):
        saved = torch.load(os.path.join(self.run_dirs[name, seed], "test_predictions.pt"), weights_only=True)
        return (saved["predicted"] == saved["labels"]).numpy(), len(saved["labels"])

    def difference(self, a, b, seeds=None):
        """a - b with its 95% interval (paired by seed, over seeds or every seed both were run at; one
        seed: by test image), or None."""
        seeds = self.seeds(a, b) if seeds is None else seeds
        if not seeds:
            return None
        differences = [self.by_run[a, s] - self.by_run[b, s] for s in seeds]
        if len(seeds) > 1:
            difference, low, high = seed_interval(differences)
            method = f"t interval over {len(seeds)} seeds"
        else:
            (correct_a, images), (correct_b, _) = self.correct(a, seeds[0]), self.correct(b, seeds[0])
            difference, low, high = bootstrap_interval(correct_a, correct_b)
            method = one_seed_method(images, seeds[0])
        return dict(run=a, against=b, difference=difference, low=low, high=high, method=method,
                    distinguishable=low > 0 or high < 0, seeds=seeds, differences=differences,
                    power=power(differences))

    def gap_closed(self, run, small, large):
        """(the gap large - small with its interval, the share of it that run closes: (run - small) /
        (large - small) with its 95% interval, or None where the gap cannot be told apart from zero:
        there is then no gap to close). Both from the same seeds, or the same bootstrap draw."""
        seeds = self.seeds(run, small, large)
        if len(seeds) > 1:
            gap = self.difference(large, small, seeds)
            share = seed_ratio_interval([self.by_run[run, s] - self.by_run[small, s] for s in seeds],
                                        [self.by_run[large, s] - self.by_run[small, s] for s in seeds])
        else:
            (difference, low, high), share = bootstrap_ratio_interval(
                *(self.correct(name, seeds[0])[0] for name in (run, small, large)))
            gap = dict(self.difference(large, small), difference=difference, low=low, high=high,
                       distinguishable=low > 0 or high < 0)
        return gap, None if share is None else dict(zip(("share", "low", "high"), share))


    def error_removed(self, run, against):
        """The share of against's remaining test error that run removes, (error of against - error of
        run) / error of against, per seed, with its mean and 95% t interval over seeds; with one seed, a
        paired bootstrap over test images. None when the two share no seed."""
        seeds = self.seeds(run, against)
        if not seeds:
            return None
        shares = [(self.by_run[run, s] - self.by_run[against, s]) / (100 - self.by_run[against, s]) for s in seeds]
        if len(seeds) > 1:
            share, low, high = seed_interval(shares)
            method = f"t interval over {len(seeds)} seeds"
        else:
            (correct_run, images), (correct_against, _) = self.correct(run, seeds[0]), self.correct(against, seeds[0])
            share, low, high = bootstrap_error_removed(correct_run, correct_against)
            method = one_seed_method(images, seeds[0])
        return dict(run=run, against=against, seeds=seeds, shares=shares, share=share, low=low, high=high,
                    method=method, distinguishable=low > 0 or high < 0)


def one_seed_method(images, seed):
    """How a one-seed interval was computed, and what it does not cover."""
    return (f"paired bootstrap over {images:,} test images, seed {seed} only: "
            "test-set noise for these trained weights, not the seed-to-seed spread")


def power(differences):
    """What paired per-seed differences (points) can resolve: their sd, the difference these seeds
    resolve (80% power, two-sided 5%), about how many seeds +-0.5 and +-0.3 points need, and with 6 or
    more seeds the exact sign-flip p (fewer cannot reach p < 0.05). None with fewer than two seeds."""
    n = len(differences)
    if n < 2:
        return None
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    return dict(seeds=n, sd=sd, resolves=resolved_difference(sd, n),
                seeds_needed={str(d): seeds_needed(sd, d) for d in POWER_TARGETS},
                sign_flip_p=sign_flip_p(differences) if n >= SIGN_FLIP_SEEDS else None)


POWER_TARGETS = (0.5, 0.3)  # points: differences a user may want resolved
SIGN_FLIP_SEEDS = 6  # the fewest seeds at which an exact sign-flip test can reach p < 0.05 (2 / 2^6 = 0.031)


def error_removed(runs, run_dirs):
    """Each dendritic run's share of the remaining test error removed, against its own baseline and
    against its control (the seed project's figure: "eliminated X% of the remaining error")."""
    accuracies = Accuracies(runs, run_dirs)
    entries = []
    for model in dict.fromkeys(run["model"] for run in runs if run["dendritic"]):
        for against in (model, model + "_continued"):
            entries.append(accuracies.error_removed(model + "_dendritic", against))
    return [entry for entry in entries if entry]


def compare_runs(runs, run_dirs):
    """Accuracy differences with 95% intervals: over seeds when there are several, else over
    test images (paired bootstrap on the saved predictions)."""
    accuracies = Accuracies(runs, run_dirs)
    comparisons = []
    for model in sorted({run["model"] for run in runs if run["dendritic"]}):
        for run_pattern, against_pattern, meaning in COMPARISONS:
            entry = accuracies.difference(run_pattern.format(m=model), against_pattern.format(m=model))
            if entry:
                comparisons.append(dict(entry, meaning=meaning))
    return comparisons


def headline(runs, run_dirs):
    """The question itself: does <m>_dendritic reach each larger network that was run? One entry per
    comparison, each from its own step: against the larger baseline (the dendritic run has its
    extra epochs too), and against that baseline's _continued control (trained as long again as
    the dendritic run). Each: the difference with its interval, and the share of the gap between
    the smaller and the larger network that the dendritic run closes."""
    accuracies = Accuracies(runs, run_dirs)
    names = list(dict.fromkeys(run["name"] for run in runs))
    entries = []
    for dendritic in (name for name in names if name.endswith("_dendritic")):
        model = dendritic.removesuffix("_dendritic")
        for large in larger_networks(runs, model):
            entries.append(against_larger_baseline(accuracies, dendritic, model, large))
            if repeats_cycles_of(runs, large + "_continued", dendritic):
                entries.append(against_larger_control(accuracies, dendritic, model, large, names))
    return [entry for entry in entries if entry]


def larger_networks(runs, model):
    """The baselines of other models with more parameters than model, in the order they were run.
    Its own width variants (model_w1.5) are left to the width frontier."""
    params = {run["name"]: run["params"] for run in runs}
    if model not in params:
        return []
    return [name for name in params if baseline_width(name) and family_of(name) != family_of(model)
            and params[name] > params[model]]


def repeats_cycles_of(runs, control, dendritic):
    """Whether control was run and trained as long as dendritic (repeating its cycles): with two
    dendritic runs, resnet34_continued repeats resnet34_dendritic's, not resnet18_dendritic's.
    (A summary.json from before cycles_from was recorded: assumed.)"""
    sources = {run.get("cycles_from", dendritic) for run in runs if run["name"] == control}
    return sources == {dendritic}


def against_larger_baseline(accuracies, dendritic, model, large):
    """dendritic - large, and the share of the model -> large gap it closes (dendrites and extra
    epochs together)."""
    return reach(accuracies, dendritic, large, small=model)


def against_larger_control(accuracies, dendritic, model, large, names):
    """dendritic - large's control, and the share of the gap between model's control and it (beyond
    equal extra training); without model's control, the gap from model itself."""
    small = model + "_continued" if model + "_continued" in names else model
    return reach(accuracies, dendritic, large + "_continued", small)


def reach(accuracies, dendritic, large, small):
    """The headline entry: dendritic - large with its interval, the gap large - small, and the share
    of it that dendritic closes; None when the runs share no seed."""
    entry = accuracies.difference(dendritic, large)
    if not entry:
        return None
    gap, share = accuracies.gap_closed(dendritic, small, large)
    return dict(entry, small=small, gap=gap, gap_closed=share)


def frontiers(runs):
    """The width frontier of every family with width variants (frontier.family_frontier)."""
    families = dict.fromkeys(family_of(run["name"]) for run in runs if baseline_width(run["name"]))
    return [line for line in (family_frontier(runs, family) for family in families) if line is not None]


def frontier_entries(runs, run_dirs, lines=None):
    """Each dendritic run and each control against its family's width frontier at its own parameter
    count, paired by seed over the frontier's seeds (frontier.distance_to_frontier): a t interval over
    seeds; with one seed, a paired bootstrap over test images of the run against the frontier's
    members, weighted as the frontier weighs them. None of this without width variants."""
    by_family = {line.family: line for line in (frontiers(runs) if lines is None else lines)}
    accuracies = Accuracies(runs, run_dirs)
    entries = []
    # The control too: a warm-started run trains its baseline's epochs and then its cycles, the frontier's
    # baselines only theirs, so the control's distance (the same extra epochs, no dendrites) is the one to read beside it.
    for name in dict.fromkeys(run["name"] for run in runs if run["dendritic"] or run["name"].endswith("_continued")):
        line = by_family.get(family_of(name))
        distance = line and distance_to_frontier(runs, name, line)
        if not distance:
            continue
        seeds = distance["seeds"]
        entry = dict(distance, power=power(distance["differences"]),
                     method=f"t interval over {len(seeds)} seeds, each seed's run against that seed's members")
        if len(seeds) == 1:
            entry.update(one_seed_frontier_interval(accuracies, runs, name, line, seeds[0]))
        entries.append(entry)
    return entries


def one_seed_frontier_interval(accuracies, runs, name, line, seed):
    """difference, low, high, method of run - frontier at one seed, from a paired bootstrap over test images."""
    params = next(run["params"] for run in runs if (run["name"], run["seed"]) == (name, seed))
    correct_run, images = accuracies.correct(name, seed)
    difference, low, high = bootstrap_mix_interval(
        correct_run, [(accuracies.correct(member, seed)[0], weight) for member, weight in line.weights_at(params)])
    return dict(difference=difference, low=low, high=high, distinguishable=low > 0 or high < 0,
                method=one_seed_method(images, seed))


def cycle_curves(runs, run_dirs):
    """What the dendrites add beyond equal training, cycle by cycle: the best validation accuracy in
    each cycle of every dendritic run and of its control (the same cycles, no dendrites), every seed,
    read from their history.csv. x is the dendrite count the dendritic run trained that cycle with;
    x = 0, where both start from the baseline, is the baseline's validation accuracy."""
    reported = {(run["name"], run["seed"]): run for run in runs}
    curves = []
    for (name, seed), run in reported.items():
        if not run["dendritic"] or not run.get("cycles"):
            continue
        model = name.removesuffix("_dendritic")
        warm = run.get("start") == "baseline"
        start = [[0, reported[model, seed]["val_accuracy"]]] if warm and (model, seed) in reported else []
        for curve_run, kind in ((name, "dendritic"), (model + "_continued", "control")):
            if (curve_run, seed) in run_dirs:
                bests = cycle_bests(read_csv(os.path.join(run_dirs[curve_run, seed], "history.csv")), run["cycles"])
                points = start + [[count + int(warm), best] for count, best in enumerate(bests)]
                curves.append(dict(run=curve_run, seed=seed, kind=kind, dendritic_run=name, points=points))
    return curves


def cycle_bests(history, cycles):
    """The best val_accuracy of each cycle (cycles: epochs per cycle, in order) that history reaches."""
    scores = [float(row["val_accuracy"]) for row in history]
    bests, first = [], 0
    for length in cycles:
        if first >= len(scores):
            break
        bests.append(max(scores[first:first + length]))
        first += length
    return bests


def aggregate(runs):
    """One row per run name: mean and spread over seeds, with the gains the table reports."""
    rows = {}
    for run in runs:
        row = rows.setdefault(run["name"], dict(run, accuracies=[], val_accuracies=[], param_counts=[],
                                                dendrite_counts=[], epoch_counts=[]))
        row["accuracies"].append(run["test_accuracy"])
        row["val_accuracies"].append(run["val_accuracy"])
        row["param_counts"].append(run["params"])
        row["dendrite_counts"].append(run["dendrites"])
        row["epoch_counts"].append(run["epochs"])
    for row in rows.values():
        n = len(row["accuracies"])
        row["test_accuracy"] = sum(row["accuracies"]) / n
        row["val_accuracy"] = sum(row["val_accuracies"]) / n
        row["params"] = sum(row["param_counts"]) / n  # seeds of a dendritic run may keep different dendrites
        row["dendrites"] = spread_text(row["dendrite_counts"])
        row["epochs"] = spread_text(row["epoch_counts"])
        row["mac_counts"] = [run.get("macs") for run in runs if run["name"] == row["name"]]
        row["macs"] = sum(row["mac_counts"]) / n if None not in row["mac_counts"] else math.nan  # seeds may differ
        row["test_sd"] = (math.sqrt(sum((a - row["test_accuracy"]) ** 2 for a in row["accuracies"]) / (n - 1))
                          if n > 1 else math.nan)
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
    """(small, large): the table's reference networks, the model of the first dendritic run (else the first
    run's) and the first larger network of another family (resnet18 and resnet34 by default); None where
    there is none."""
    small = next((run["model"] for run in runs if run["dendritic"]), runs[0]["model"] if runs else None)
    large = next(iter(larger_networks(runs, small)), None) if small else None
    return small, large


def spread_text(values):
    """'3' when every seed agrees, else '2-3'."""
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def summary_markdown(summary):
    """summary.md from summary.json: the question answered first, the width frontier, then the table,
    the remaining error removed, every other difference, how many seeds they need, and what the
    dendrites contribute."""
    runs, headline_entries, frontier = summary["runs"], summary.get("headline", []), summary.get("frontier", [])
    comparisons = summary.get("comparisons", [])
    seeds = sorted({run["seed"] for run in runs})
    lines = ["# Results", ""]
    if len(seeds) == 1:
        lines += [f"**Preliminary: one seed (seed {seeds[0]}).** Its intervals cover test-set noise for these "
                  "trained weights only, not the spread between seeds, which on CIFAR-100 is about the size "
                  "of the effects in question; run `--seeds 0,1,2` for a result.", ""]
    lines += headline_lines(headline_entries) + frontier_lines(frontier, summary.get("frontiers", [])) + table_lines(runs)
    lines += error_removed_lines(summary.get("error_removed", []))
    lines += comparison_lines(comparisons) + power_lines([*headline_entries, *frontier, *comparisons])
    lines += contribution_lines(runs) + ["", "## Method", "", METHOD_NOTE.format(method=method_of(runs))]
    return "\n".join(lines) + "\n"


METHOD_NOTE = (
    "Dendrites: {method}, as the library reported it for each dendritic run: trained jointly with the network "
    "by ordinary backpropagation. This is not Perforated Backpropagation, the correlation-trained "
    "dendrites behind the library authors' published results, which is a separate paid add-on "
    "(perforatedbp) that this project switches off where it is installed. Test accuracy is measured once per run, after "
    "training; model selection and every dendrite decision used the validation split only. *val. acc.* is "
    "the validation accuracy of the model each run reports (the one tested): the last epoch's for a "
    "baseline; for a dendritic run and its control, the model kept by one rule (a cycle's best epoch, kept "
    "when it beats the best so far by more than dendrite_min_gain; otherwise the run goes back to the model "
    "it kept, the starting baseline's own included, and stops). A `_continued` run is the control: the "
    "baseline trained on for the dendritic run's cycles, with the same schedule and batches and no dendrites.")


def method_of(runs):
    """'gradient-descent dendrites (perforatedai, open source), perforatedai 3.2.9': each method and
    library version the dendritic runs recorded."""
    recorded = sorted({run.get("method", "method not recorded") for run in runs if run.get("library")})
    versions = sorted({run["library"] for run in runs if run.get("library")})
    return ", ".join(recorded + versions) or "none (no dendritic run)"


def headline_lines(entries):
    """Each dendritic run against each larger network, in words."""
    lines = []
    for e in entries:
        verdict = (f"{e['run']} is {'below' if e['high'] < 0 else 'above'} {e['against']}" if e["distinguishable"]
                   else f"{e['run']} and {e['against']} cannot be told apart")
        lines += [f"## Does {e['run']} reach {e['against']}?", "",
                  f"- **{e['run']} − {e['against']}**: {interval_text(e)} ({e['method']}): {verdict}.",
                  f"- **Share of the {e['small']} → {e['against']} gap that {closer(e)} closes**: " + gap_text(e), ""]
    return lines


def frontier_lines(entries, lines=()):
    """Each family's width frontier, its members on it and off it, and each dendritic run and control
    against it at equal parameters, in words."""
    text = []
    for line in map(as_frontier, lines):
        off = line.off
        members = ", ".join(f"{name} {params / 1e6:.2f}M {accuracy:.2f}%" + (
            f" (off the frontier: the smaller {off[name]} scored higher)" if name in off else "")
            for params, accuracy, name in line.members)
        text.append(f"- **The {line.family} width frontier** over seed(s) {seed_text(line.seeds)} (mean test accuracy; "
                    f"it never falls as parameters grow: docs/method.md): {members}.")
    for e in entries:
        where = f"{e['run']} ({e['params'] / 1e6:.2f}M parameters)" if e["seeds"] else e["run"]
        outside = "; ".join(f"seed {seed} {why}" for seed, why in e["outside"].items())
        if e["difference"] is None:
            text.append(f"- **{e['run']}** lies outside the {e['family']} width frontier in every seed ({outside}): "
                        "nothing is extrapolated; train a wider (or narrower) width variant to place it.")
            continue
        side = "above" if e["difference"] > 0 else "below"
        interval = (f"95% interval [{e['low']:+.2f}, {e['high']:+.2f}] ({e['method']}); " +
                    ("distinguishable from zero" if e["distinguishable"] else
                     "not distinguishable from zero (the interval includes 0)") if e["low"] is not None
                    else f"no interval ({e['method']})")
        over = (f" Over seed(s) {seed_text(e['seeds'])} only: {outside}, outside the frontier." if outside else "")
        text.append(f"- **{where}** is {side} the {e['family']} width frontier by {abs(e['difference']):.2f} points "
                    f"at equal parameters: {interval}.{over}")
    if any(e["run"].endswith("_continued") for e in entries):
        text.append("- A warm-started run trained its baseline's epochs and then its cycles, the frontier's baselines "
                    "theirs only: read the dendritic run's distance beside its control's (the same extra epochs, no "
                    "dendrites).")
    return ["## Dendrites or width: against the width frontier", "", *text, ""] if entries else []


def as_frontier(line):
    """A Frontier from itself or from its summary.json form."""
    return line if isinstance(line, Frontier) else Frontier(**line)


def seed_text(seeds):
    return ", ".join(map(str, seeds))


def power_lines(entries):
    """For each paired comparison: the smallest difference its seeds resolve, about how many seeds
    +-0.5 and +-0.3 points need, and with 6 or more seeds the exact sign-flip p."""
    lines = []
    for e in entries:
        p = e.get("power")
        if p is None:
            continue
        needed = ", ".join(f"±{target} points {count}" for target, count in p["seeds_needed"].items())
        sign_flip = (f" Exact sign-flip test: p = {p['sign_flip_p']:.3g}." if p["sign_flip_p"] is not None else
                     f" (An exact sign-flip test needs {SIGN_FLIP_SEEDS} or more seeds to reach p < 0.05: its "
                     f"smallest p at {p['seeds']} seeds is {2 / 2 ** p['seeds']:.3g}.)")
        lines.append(f"- **{e['run']} − {e.get('against', 'the width frontier')}**: per-seed differences have sd "
                     f"{p['sd']:.2f} points; these {p['seeds']} seeds resolve ±{p['resolves']:.2f} points; "
                     f"seeds needed for {needed}.{sign_flip}")
    if not lines:
        return []
    return ["", "## How many seeds each difference needs", "",
            "From the paired per-seed differences and the same t test as the intervals: the difference found with "
            "80% power at a two-sided 5% level, from the noncentral t with seeds − 1 degrees of freedom.",
            "", *lines]


def closer(entry):
    """What the share of a gap measures: against a baseline the dendritic run has more epochs too."""
    if entry["small"].endswith("_continued"):
        return "the dendritic run, beyond equal extra training,"
    return "the dendritic run (its dendrites and its extra epochs together)"


def interval_text(entry):
    return f"{entry['difference']:+.2f} points, 95% interval [{entry['low']:+.2f}, {entry['high']:+.2f}]"


def gap_text(entry):
    gap, share = entry["gap"], entry["gap_closed"]
    if share is None:
        return (f"undefined: the gap itself ({interval_text(gap)}) cannot be told apart from zero, so there is "
                "no gap to close.")
    return f"{share['share']:.0%}, 95% interval [{share['low']:.0%}, {share['high']:.0%}] (the gap: {interval_text(gap)})."


def table_lines(runs):
    def cell(row, key, fmt):
        return format(row[key], fmt) if key in row and not math.isnan(row[key]) else "n/a"

    rows = aggregate(runs)
    small, large = (name or "n/a" for name in reference_networks(runs))
    several_seeds = any(len(row["accuracies"]) > 1 for row in rows)
    lines = [
        "## Every run", "",
        "| run | test acc. (%) | " + ("± sd | seeds | " if several_seeds else "") +
        "val. acc. (%) | params (M) | MACs per image (M) | dendrites | + params per dendrite (M) | epochs | start | "
        f"acc. gained vs {small} (points) | {small} error removed | params saved vs {large} | "
        "CPU latency, batch 1 / 32 (ms) | latency vs its baseline |",
        "|---|---:|" + ("---:|---|" if several_seeds else "") + "---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    latency_of = {row["name"]: row["latency"] for row in rows}
    for row in rows:
        spread = (f"{cell(row, 'test_sd', '.2f')} | {', '.join(f'{a:.2f}' for a in row['accuracies'])} | "
                  if several_seeds else "")
        lines.append(
            f"| {row['name']} | {row['test_accuracy']:.2f} | {spread}{row['val_accuracy']:.2f} | "
            f"{row['params'] / 1e6:.2f} | {macs_text(row)} | {row['dendrites']} | {per_dendrite(row)} | {row['epochs']} | {row.get('start', 'scratch')} | "
            f"{cell(row, 'accuracy_gained', '+.2f')} | {cell(row, 'error_removed', '.1%')} | "
            f"{cell(row, 'params_saved', '.1%')} | {latency_text(row)} | "
            f"{latency_ratio(row, latency_of.get(family_of(row['name']), math.nan))} |"
        )
    return lines + ["", f"*Error removed*: the share of {small}'s test error that the run removes (of the means; per "
                    "seed with an interval below). *Params saved*: how many fewer parameters than "
                    f"{large}. *MACs per image*: multiply-accumulates of one inference, convolutions and linear layers "
                    "(costs.py); a dendrite adds its module's once more. *CPU latency*: median time of one forward "
                    f"pass of the run's model on this machine's CPU, 1 thread ({LATENCY_NOTE}, dendrites rebuilt in "
                    "plain PyTorch as export.py exports them: latency.py); *vs its baseline*: at batch 1, against its "
                    "family's plain network."]


def latency_text(row):
    times = row.get("latency_ms")
    return "n/a" if not times else " / ".join(f"{ms:.1f}" for ms in times.values())


def latency_ratio(row, baseline):
    return "n/a" if math.isnan(row["latency"]) or math.isnan(baseline) else f"{row['latency'] / baseline:.2f}x"


def error_removed_lines(entries):
    """Each dendritic run's share of the remaining error removed, per seed and with its interval."""
    lines = []
    for e in entries:
        per_seed = ", ".join(f"{share:.1%}" for share in e["shares"])
        lines.append(f"- **{e['run']} against {e['against']}**: {e['share']:.1%}, 95% interval [{e['low']:.1%}, "
                     f"{e['high']:.1%}] ({e['method']}); per seed ({seed_text(e['seeds'])}): {per_seed}.")
    return ["", "## Remaining error removed", "",
            "(error of the network it is measured against − error of the run) / error of that network, per seed: "
            "the share of the remaining test error the run removes.", "", *lines] if lines else []


def macs_text(row):
    """Millions of multiply-accumulates per image, or n/a for runs that did not record them."""
    return "n/a" if math.isnan(row["macs"]) else f"{row['macs'] / 1e6:,.1f}"


def per_dendrite(row):
    """What one dendrite adds, in millions of parameters ('-' for a run without dendrites)."""
    return f"{row['params_per_dendrite'] / 1e6:.3f}" if row.get("params_per_dendrite") else "-"


def comparison_lines(comparisons):
    lines = ["", "## Is each difference real?", ""] if comparisons else []
    for c in comparisons:
        verdict = ("distinguishable from zero" if c["distinguishable"] else
                   "not distinguishable from zero (the interval includes 0)")
        lines.append(f"- **{c['run']} − {c['against']}** ({c['meaning']}): {interval_text(c)} ({c['method']}); {verdict}.")
    return lines


def contribution_lines(runs):
    """What the kept dendrites of each dendritic run add to their layers, in words (mean over seeds)."""
    lines = []
    for name in dict.fromkeys(run["name"] for run in runs if run.get("contribution")):
        seeds = [run for run in runs if run["name"] == name]
        kept = [run["contribution"] for run in seeds if run["dendrites"]]
        if not kept:
            lines.append(f"- **{name}**: no dendrite was kept in any of {len(seeds)} seed(s).")
            continue
        share = sum(f["dendrite_share"] for f in kept) / len(kept)
        scale = sum(f["dendrite_scale"] for f in kept) / len(kept)
        verdict = ("next to nothing: in effect the run is its control with unused parameters, and any gain "
                   "over the baseline comes from the extra epochs" if share < NEGLIGIBLE_SHARE
                   else "a measurable part of what those layers compute")
        lines.append(f"- **{name}**: {len(kept)} of {len(seeds)} seed(s) kept dendrites; they carry {share:.3%} of "
                     f"their layers' output variance (mean |dendrites_to_top| {scale:.4f}; {CONTRIBUTION_NOTE}): "
                     f"{verdict}.")
    return ["", "## What the dendrites contribute", "", *lines] if lines else []


RUN_COLOURS = {"dendritic": "tab:green", "control": "tab:orange", "baseline": "tab:blue"}


def run_colour(row):
    return RUN_COLOURS["dendritic" if row["dendritic"] else "control" if row["name"].endswith("_continued") else "baseline"]


def comparison_figure(summary):
    """From summary.json: left, test accuracy against parameters, every seed a dot, the mean with its
    spread, and each family's width frontier where width variants were run (log-parameters then).
    Then, when the runs recorded them: test accuracy against compute per image, and against CPU
    latency at batch 1 (what a user choosing a model for a device reads). Last: the best validation
    accuracy in each cycle of the dendritic run and of its control, every seed: what the dendrites add
    beyond equal training."""
    runs, headline_entries, frontier = summary["runs"], summary.get("headline", []), summary.get("frontier", [])
    plt = pyplot()
    with_macs, with_latency = (all(run.get(key) for run in runs) for key in ("macs", "latency_ms"))
    count = 2 + with_macs + with_latency
    figure, panels = plt.subplots(*((2, 2) if count == 4 else (1, count)),
                                  figsize=(16, 11) if count == 4 else (6 * count, 5.5),
                                  layout="constrained")  # room for the two-line title above the panels' own
    panels = list(np.ravel(panels))
    rows = aggregate(runs)
    accuracy_panel(panels[0], rows, "params", "parameters (millions)")
    frontier_panel(panels[0], summary.get("frontiers", []), frontier)
    if with_macs:
        accuracy_panel(panels[1], rows, "macs", "multiply-accumulates per image, inference (millions)")
        panels[1].set_title("Test accuracy against compute per image", fontsize=10)
    if with_latency:
        accuracy_panel(panels[-2], rows, "latency", f"CPU latency, batch 1, 1 thread (ms; {LATENCY_NOTE})", scale=1)
        panels[-2].set_title("Test accuracy against inference time on this machine's CPU", fontsize=10)
    cycles_panel(panels[-1], summary.get("cycles", []), rows, headline_entries)
    panels[0].set_title("Test accuracy against parameters:\nbaselines (blue), dendrites (green), controls (orange)",
                        fontsize=10)
    for axes in panels[:-1]:
        axes.set_ylabel(f"{DATASETS[runs[0].get('dataset', 'cifar100')]['name']} test accuracy (%)")
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.margins(x=0.2, y=0.2)
        axes.autoscale_view()
        place_labels(axes)
    figure.suptitle(figure_title(headline_entries, frontier), fontsize=11)
    separate_labels(figure)
    return figure


PER_SEED = {"params": "param_counts", "macs": "mac_counts", "latency": "latencies"}  # aggregate's mean -> per seed
LATENCY_NOTE = "each run's model timed beside the others"


def accuracy_panel(axes, rows, key, label, scale=1e6):
    """Test accuracy against rows' key (params, macs or latency, per image) over scale: each seed a dot,
    the mean with its sd."""
    for row in rows:
        colour, x = run_colour(row), row[key] / scale
        axes.scatter([value / scale for value in row[PER_SEED[key]]], row["accuracies"], s=14, color=colour, alpha=0.5, zorder=2)
        sd = 0 if math.isnan(row["test_sd"]) else row["test_sd"]
        axes.errorbar(x, row["test_accuracy"], yerr=sd, fmt="o", ms=8, color=colour, capsize=4, zorder=3)
        add_label(axes, x, row["test_accuracy"], row["name"], colour)
    axes.set_xlabel(label)


def frontier_panel(axes, lines, entries):
    """Each family's width frontier (frontier.py: never falling, straight in log-parameters between the
    members on it), and from each run's mean over the frontier's seeds a dotted line the length of its
    reported distance: it ends on the frontier where the run's seeds share its parameter count."""
    for line in map(as_frontier, lines):
        params = np.geomspace(*line.params_range, 100)
        axes.plot(params / 1e6, [line.accuracy_at(p) for p in params], "-", color="tab:blue", alpha=0.5,
                  linewidth=1.5, zorder=1, label=f"{line.family} width frontier (seeds {seed_text(line.seeds)})")
    for e in entries:
        if e["difference"] is not None:
            axes.plot([e["params"] / 1e6] * 2, [e["accuracy"], e["accuracy"] - e["difference"]], ":",
                      color=RUN_COLOURS["dendritic" if e["run"].endswith("_dendritic") else "control"], zorder=1,
                      gid="distance to the frontier")
    if lines:
        from matplotlib.ticker import FuncFormatter  # matplotlib only where a picture is drawn

        axes.set_xscale("log")
        for axis in (axes.xaxis.set_major_formatter, axes.xaxis.set_minor_formatter):  # 20, not 2 x 10^1
            axis(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.legend(fontsize=8, loc="lower right")


def cycles_panel(axes, curves, rows, headline_entries):
    """Best validation accuracy per cycle of each dendritic run (green) and its control (orange), a line
    per seed, and the validation accuracy of each larger network the headline asks about (dashed)."""
    labelled = set()
    for curve in curves:
        xs, ys = zip(*curve["points"])
        colour = RUN_COLOURS[curve["kind"]]
        seeds = len({c["seed"] for c in curves if c["run"] == curve["run"]})
        label = None if curve["run"] in labelled else f"{curve['run']}, each of {seeds} seed(s)"
        labelled.add(curve["run"])
        # The control as a wide band under the dendritic run's thin line: where they agree, both stay visible.
        style = dict(linewidth=5, alpha=0.35, zorder=2) if curve["kind"] == "control" else dict(linewidth=1.2, zorder=3)
        axes.plot(xs, ys, "-o", color=colour, markersize=4, label=label, **style)
    by_name = {row["name"]: row for row in rows}
    for target in dict.fromkeys(e["against"] for e in headline_entries if e["against"] in by_name):
        if by_name[target]["dendritic"] or target.endswith("_continued"):
            continue
        axes.axhline(by_name[target]["val_accuracy"], color="tab:gray", linestyle="--", linewidth=1)
        axes.annotate(f"{target} (its validation accuracy)", (0.02, by_name[target]["val_accuracy"]),
                      xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(0, 3), fontsize=8,
                      color="tab:gray")
    axes.set_title("Best validation accuracy in each cycle:\ndendrites (green) against equal training (orange)",
                   fontsize=10)
    axes.set_xlabel("dendrites the dendritic run trained with (the control: the same cycles, none)")
    axes.set_ylabel("best validation accuracy in the cycle (%)")
    axes.xaxis.get_major_locator().set_params(integer=True)
    if curves:
        axes.legend(fontsize=8, loc="lower right")
    else:
        axes.text(0.5, 0.5, "no dendritic run with its cycles recorded", transform=axes.transAxes, ha="center")


def add_label(axes, x, y, text, colour):
    """A run's name beside its point, in its colour (two close points' names may sit on either side of
    both), placed by place_labels once the axes' limits are final."""
    axes.annotate(text, (x, y), textcoords="offset points", xytext=(7, 4), fontsize=9, color=colour, gid="run label")


def run_labels(axes):
    return [text for text in axes.texts if text.get_gid() == "run label"]


def place_labels(axes):
    """Every run label inside the axes: to the left of its point in the right half, below it near the top."""
    to_axes = axes.transData + axes.transAxes.inverted()
    for label in run_labels(axes):
        x, y = to_axes.transform(label.xy)
        right_half, near_top = x > 0.55, y > 0.9
        label.set_horizontalalignment("right" if right_half else "left")
        label.set_verticalalignment("top" if near_top else "bottom")
        label.set_position((-7 if right_half else 7, -4 if near_top else 4))
        label.set_in_layout(False)  # the layout makes room for the axes, not for labels inside them


def separate_labels(figure):
    """Labels that would overprint one another stacked downwards, the highest first, in the figure's
    final layout (drawn once to measure them)."""
    figure.canvas.draw()
    renderer, points_per_pixel = figure.canvas.get_renderer(), 72 / figure.dpi
    for axes in figure.axes:
        placed = []
        for label in sorted(run_labels(axes), key=lambda label: -label.get_window_extent(renderer).y1):
            box = label.get_window_extent(renderer)
            for other in placed:
                if box.overlaps(other):
                    x, y = label.get_position()
                    label.set_position((x, y - (box.y1 - other.y0 + 2) * points_per_pixel))
                    box = label.get_window_extent(renderer)
            placed.append(box)


def figure_title(headline_entries, frontier):
    """The question first: the first dendritic run against the first larger network, and against the width frontier."""
    lines = []
    if headline_entries:
        e = headline_entries[0]
        share = e["gap_closed"]
        closed = "undefined (no gap)" if share is None else f"{share['share']:.0%} [{share['low']:.0%}, {share['high']:.0%}]"
        lines.append(f"{e['run']} − {e['against']}: {e['difference']:+.2f} points, 95% interval "
                     f"[{e['low']:+.2f}, {e['high']:+.2f}]; share of the gap closed: {closed}")
    by_run = {e["run"]: e for e in frontier if e["difference"] is not None}
    for e in [e for e in by_run.values() if e["run"].endswith("_dendritic")][:1]:
        line = f"{e['run']} − the {e['family']} width frontier at equal parameters: {distance_text(e)}"
        control = by_run.get(e["run"].removesuffix("_dendritic") + "_continued")
        if control:  # the frontier's baselines trained fewer epochs: what the dendrites add is the gap between the two
            line += f"; its control (the same extra epochs, no dendrites): {distance_text(control)}"
        lines.append(line)
    return "\n".join(lines)


def distance_text(entry):
    interval = f", 95% interval [{entry['low']:+.2f}, {entry['high']:+.2f}]" if entry["low"] is not None else ""
    return f"{entry['difference']:+.2f} points{interval}"


def write_report(results_dir, runs, run_dirs):
    """summary.json (the runs, the headline question answered, the width frontiers and each run against
    them, the remaining error removed, every other difference, the cycle-by-cycle validation of each
    dendritic run and its control), summary.md and comparison.png for these runs; run_dirs: {(run
    name, seed): its folder}. Returns the summary."""
    lines = frontiers(runs)
    summary = {"runs": runs, "headline": headline(runs, run_dirs), "frontiers": [line.as_dict() for line in lines],
               "frontier": frontier_entries(runs, run_dirs, lines), "error_removed": error_removed(runs, run_dirs),
               "comparisons": compare_runs(runs, run_dirs), "cycles": cycle_curves(runs, run_dirs)}
    write_json(os.path.join(results_dir, "summary.json"), summary)
    redraw_report(results_dir)
    return summary


def redraw_report(results_dir):
    """summary.md and comparison.png from summary.json alone (main.py --plot-only)."""
    summary = read_json(os.path.join(results_dir, "summary.json"))
    if not summary or not summary.get("runs"):
        raise ExperimentError(f"{results_dir}/summary.json is missing or empty: run the experiment first")
    write_atomic(os.path.join(results_dir, "summary.md"), summary_markdown(summary))
    save_figure(comparison_figure(summary), os.path.join(results_dir, "comparison.png"))
