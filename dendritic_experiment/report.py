"""The report: each run's pictures, the comparison between runs with 95% intervals, summary.md
and comparison.png. Everything here is drawn from saved numbers, so it can be redrawn without
training (main.py --plot-only)."""
import io
import math
import os

import torch

from dendritic_experiment.data import DATASETS
from dendritic_experiment.intervals import (bootstrap_interval, bootstrap_ratio_interval, seed_interval,
                                            seed_ratio_interval)
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


def misclassified_figure(images, labels, predicted, classes, count=24):
    """A grid of the first `count` test images the model got wrong, with true and predicted names."""
    plt = pyplot()
    wrong = (predicted != labels).nonzero().flatten()[:count].tolist()
    columns = 6
    rows = max(1, math.ceil(len(wrong) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, wrong):
        axes.imshow(images[index].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        axes.set_title(f"true: {classes[labels[index]]}\npredicted: {classes[predicted[index]]}", fontsize=7)
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

    def difference(self, a, b):
        """a - b with its 95% interval (paired by seed; one seed: by test image), or None."""
        seeds = self.seeds(a, b)
        if not seeds:
            return None
        if len(seeds) > 1:
            difference, low, high = seed_interval([self.by_run[a, s] - self.by_run[b, s] for s in seeds])
            method = f"t interval over {len(seeds)} seeds"
        else:
            (correct_a, images), (correct_b, _) = self.correct(a, seeds[0]), self.correct(b, seeds[0])
            difference, low, high = bootstrap_interval(correct_a, correct_b)
            method = (f"paired bootstrap over {images:,} test images, seed {seeds[0]} only: "
                      "test-set noise for these trained weights, not the seed-to-seed spread")
        return dict(run=a, against=b, difference=difference, low=low, high=high, method=method,
                    distinguishable=low > 0 or high < 0)

    def gap_closed(self, run, small, large):
        """(the gap large - small with its interval, the share of it that run closes: (run - small) /
        (large - small) with its 95% interval, or None where the gap cannot be told apart from zero:
        there is then no gap to close). Both from the same seeds, or the same bootstrap draw."""
        seeds = self.seeds(run, small, large)
        if len(seeds) > 1:
            gap = self.difference(large, small)
            share = seed_ratio_interval([self.by_run[run, s] - self.by_run[small, s] for s in seeds],
                                        [self.by_run[large, s] - self.by_run[small, s] for s in seeds])
        else:
            (difference, low, high), share = bootstrap_ratio_interval(
                *(self.correct(name, seeds[0])[0] for name in (run, small, large)))
            gap = dict(self.difference(large, small), difference=difference, low=low, high=high,
                       distinguishable=low > 0 or high < 0)
        return gap, None if share is None else dict(zip(("share", "low", "high"), share))


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
    """The question itself: does <m>_dendritic reach each larger network that was run (a baseline
    with more parameters than m, and that baseline's _continued control, trained as long again as
    the dendritic run)? The difference with its interval, and the share of the gap between m and the
    larger network that the dendrites close (against a control: between m's control and it)."""
    accuracies = Accuracies(runs, run_dirs)
    params = {run["name"]: run["params"] for run in runs}
    names = list(dict.fromkeys(run["name"] for run in runs))
    entries = []
    for dendritic in (name for name in names if name.endswith("_dendritic")):
        model = dendritic.removesuffix("_dendritic")
        for large in names:
            large_model = large.removesuffix("_continued")
            if (large.endswith("_dendritic") or large_model == model
                    or params.get(large_model, 0) <= params.get(model, math.inf)):
                continue
            small = model + "_continued" if large != large_model and model + "_continued" in params else model
            entry = accuracies.difference(dendritic, large)
            if entry and small in params:
                gap, share = accuracies.gap_closed(dendritic, small, large)
                entries.append(dict(entry, small=small, gap=gap, gap_closed=share))
    return entries


def aggregate(runs):
    """One row per run name: mean and spread over seeds, with the gains the table reports."""
    rows = {}
    for run in runs:
        row = rows.setdefault(run["name"], dict(run, accuracies=[], val_accuracies=[], param_counts=[],
                                                dendrite_counts=[], epoch_counts=[], architectures_by_seed=[]))
        row["accuracies"].append(run["test_accuracy"])
        row["val_accuracies"].append(run["val_accuracy"])
        row["param_counts"].append(run["params"])
        row["dendrite_counts"].append(run["dendrites"])
        row["epoch_counts"].append(run["epochs"])
        if run.get("architectures"):
            row["architectures_by_seed"].append(run["architectures"])
    for row in rows.values():
        n = len(row["accuracies"])
        row["test_accuracy"] = sum(row["accuracies"]) / n
        row["val_accuracy"] = sum(row["val_accuracies"]) / n
        row["params"] = sum(row["param_counts"]) / n  # seeds of a dendritic run may keep different dendrites
        row["dendrites"] = spread_text(row["dendrite_counts"])
        row["epochs"] = spread_text(row["epoch_counts"])
        row["test_sd"] = (math.sqrt(sum((a - row["test_accuracy"]) ** 2 for a in row["accuracies"]) / (n - 1))
                          if n > 1 else math.nan)
    small, large = rows.get("resnet18"), rows.get("resnet34")
    for row in rows.values():
        if small:
            row["accuracy_gained"] = row["test_accuracy"] - small["test_accuracy"]
            row["error_removed"] = row["accuracy_gained"] / (100 - small["test_accuracy"])
        if large:
            row["params_saved"] = 1 - row["params"] / large["params"]
    return list(rows.values())


def spread_text(values):
    """'3' when every seed agrees, else '2-3'."""
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def summary_markdown(runs, headline_entries, comparisons):
    """summary.md: the question answered first, then the table, every other difference, and what
    the dendrites contribute."""
    seeds = sorted({run["seed"] for run in runs})
    lines = ["# Results", ""]
    if len(seeds) == 1:
        lines += [f"**Preliminary: one seed (seed {seeds[0]}).** Its intervals cover test-set noise for these "
                  "trained weights only, not the spread between seeds, which on CIFAR-100 is about the size "
                  "of the effects in question; run `--seeds 0,1,2` for a result.", ""]
    lines += headline_lines(headline_entries) + table_lines(runs) + comparison_lines(comparisons)
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
    several_seeds = any(len(row["accuracies"]) > 1 for row in rows)
    lines = [
        "## Every run", "",
        "| run | test acc. (%) | " + ("± sd | seeds | " if several_seeds else "") +
        "val. acc. (%) | params (M) | dendrites | + params per dendrite (M) | epochs | start | "
        "acc. gained vs ResNet-18 (points) | ResNet-18 error removed | params saved vs ResNet-34 |",
        "|---|---:|" + ("---:|---|" if several_seeds else "") + "---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        spread = (f"{cell(row, 'test_sd', '.2f')} | {', '.join(f'{a:.2f}' for a in row['accuracies'])} | "
                  if several_seeds else "")
        lines.append(
            f"| {row['name']} | {row['test_accuracy']:.2f} | {spread}{row['val_accuracy']:.2f} | "
            f"{row['params'] / 1e6:.2f} | {row['dendrites']} | {per_dendrite(row)} | {row['epochs']} | {row.get('start', 'scratch')} | "
            f"{cell(row, 'accuracy_gained', '+.2f')} | {cell(row, 'error_removed', '.1%')} | "
            f"{cell(row, 'params_saved', '.1%')} |"
        )
    return lines + ["", "*Error removed*: the share of ResNet-18's test error that the run removes. *Params "
                    "saved*: how many fewer parameters than ResNet-34."]


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


def comparison_figure(runs, headline_entries=()):
    """Left: test accuracy against parameters, every seed a dot, the mean with its spread.
    Right: validation accuracy after each dendrite addition (the library's per-architecture
    scores) beside the baselines' validation accuracy."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for row in aggregate(runs):
        colour = "tab:green" if row["dendritic"] else "tab:orange" if row["name"].endswith("_continued") else "tab:blue"
        x = row["params"] / 1e6
        left.scatter([p / 1e6 for p in row["param_counts"]], row["accuracies"], s=14, color=colour, alpha=0.5, zorder=2)
        sd = 0 if math.isnan(row["test_sd"]) else row["test_sd"]
        left.errorbar(x, row["test_accuracy"], yerr=sd, fmt="o", ms=8, color=colour, capsize=4, zorder=3)
        left.annotate(row["name"], (x, row["test_accuracy"]), textcoords="offset points", xytext=(7, 4), fontsize=9)
        for seed, architectures in enumerate(row["architectures_by_seed"]):
            params, scores = zip(*architectures)
            label = f"{row['name']}, each of {len(row['architectures_by_seed'])} seed(s) (0, 1, 2, ... dendrites)"
            right.plot([p / 1e6 for p in params], scores, "-o", color=colour, alpha=0.7, linewidth=1, markersize=4,
                       label=None if seed else label)
        if not row["architectures_by_seed"] and not row["name"].endswith("_continued"):
            right.scatter(x, row["val_accuracy"], s=60, color=colour, zorder=3)
            right.annotate(row["name"], (x, row["val_accuracy"]), textcoords="offset points", xytext=(7, 4), fontsize=9)
    left.set_title("Test accuracy: baselines (blue), dendrites (green), control (orange)")
    left.set_ylabel(f"{DATASETS[runs[0].get('dataset', 'cifar100')]['name']} test accuracy (%)")
    right.set_title("Validation accuracy after each dendrite addition")
    right.set_ylabel("best validation accuracy (%)")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8, loc="lower right")
    for axes in (left, right):
        axes.set_xlabel("parameters (millions)")
        axes.grid(alpha=0.3)
        axes.margins(x=0.2, y=0.2)
    if headline_entries:  # the question first: the first dendritic run against the first larger network
        e = headline_entries[0]
        share = e["gap_closed"]
        closed = "undefined (no gap)" if share is None else f"{share['share']:.0%} [{share['low']:.0%}, {share['high']:.0%}]"
        figure.suptitle(f"{e['run']} − {e['against']}: {e['difference']:+.2f} points, 95% interval "
                        f"[{e['low']:+.2f}, {e['high']:+.2f}]; share of the gap closed: {closed}", fontsize=11)
    return figure


def write_report(results_dir, runs, run_dirs):
    """summary.json (the runs, the headline question answered, every other difference), summary.md
    and comparison.png for these runs; run_dirs: {(run name, seed): its folder}. Returns the summary."""
    summary = {"runs": runs, "headline": headline(runs, run_dirs), "comparisons": compare_runs(runs, run_dirs)}
    write_json(os.path.join(results_dir, "summary.json"), summary)
    redraw_report(results_dir)
    return summary


def redraw_report(results_dir):
    """summary.md and comparison.png from summary.json alone (main.py --plot-only)."""
    summary = read_json(os.path.join(results_dir, "summary.json"))
    if not summary or not summary.get("runs"):
        raise ExperimentError(f"{results_dir}/summary.json is missing or empty: run the experiment first")
    headline_entries = summary.get("headline", [])
    write_atomic(os.path.join(results_dir, "summary.md"),
                 summary_markdown(summary["runs"], headline_entries, summary.get("comparisons", [])))
    save_figure(comparison_figure(summary["runs"], headline_entries), os.path.join(results_dir, "comparison.png"))
