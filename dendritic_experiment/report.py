"""The report: each run's pictures, the comparison between runs with 95% intervals, summary.md
and comparison.png. Everything here is drawn from saved numbers, so it can be redrawn without
training (main.py --plot-only)."""
import io
import math
import os

import torch

from data import DATASETS
from utils import ExperimentError, read_csv, read_json, write_atomic, write_json

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
    """Train and validation loss and accuracy by epoch; a dotted line where a dendrite was added."""
    plt = pyplot()
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [int(row["epoch"]) for row in history]
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
    loss_axes.legend()
    if any(int(row.get("dendrites") or 0) for row in history):
        accuracy_axes.plot([], [], color="tab:green", linestyle=":", label="dendrite added")
        accuracy_axes.legend()
    figure.suptitle(title)
    return figure


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
    """curves.png and misclassified.png of a finished run."""
    history = read_csv(os.path.join(run_dir, "history.csv"))
    save_figure(curves_figure(history, run_name), os.path.join(run_dir, "curves.png"))
    predictions = torch.load(os.path.join(run_dir, "test_predictions.pt"), weights_only=True)
    figure = misclassified_figure(data.test_images, predictions["labels"].long(), predictions["predicted"].long(),
                                  data.classes)
    save_figure(figure, os.path.join(run_dir, "misclassified.png"))


# ---------------------------------------------------------------------------------------------
# The comparison: summary.json is the data; summary.md and comparison.png are drawn from it alone.
# ---------------------------------------------------------------------------------------------

# Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the value for 30,
# slightly conservative), so that no statistics package is needed.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}
BOOTSTRAP_RESAMPLES = 10000

# (run, against, what the difference measures), for every model that has a dendritic run.
COMPARISONS = (
    ("{m}_dendritic", "{m}", "what dendrites and extra epochs gave together"),
    ("{m}_continued", "{m}", "what the extra epochs alone gave"),
    ("{m}_dendritic", "{m}_continued", "what the dendrites gave beyond the extra epochs"),
)


def seed_interval(differences):
    """Mean and 95% t interval of paired per-seed differences (at least two)."""
    n = len(differences)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    t = T_975[max(df for df in T_975 if df <= n - 1)]
    return mean, mean - t * sd / math.sqrt(n), mean + t * sd / math.sqrt(n)


def bootstrap_interval(correct_a, correct_b, seed=0):
    """Accuracy difference a - b (points) with a paired bootstrap 95% interval over test images.

    Each image contributes +1, -1 or 0 to the difference; resampling images with replacement is
    a multinomial draw of those three counts, so 10,000 resamples cost nothing.
    """
    import numpy as np

    n = len(correct_a)
    wins = int((correct_a & ~correct_b).sum())
    losses = int((~correct_a & correct_b).sum())
    counts = np.random.default_rng(seed).multinomial(n, [wins / n, losses / n, 1 - (wins + losses) / n],
                                                     size=BOOTSTRAP_RESAMPLES)
    resampled = 100 * (counts[:, 0] - counts[:, 1]) / n
    low, high = np.percentile(resampled, [2.5, 97.5])
    return 100 * (wins - losses) / n, float(low), float(high)


def compare_runs(runs, run_dirs):
    """Accuracy differences with 95% intervals: over seeds when there are several, else over
    test images (paired bootstrap on the saved predictions)."""
    accuracy = {(run["name"], run["seed"]): run["test_accuracy"] for run in runs}
    models = {run["model"] for run in runs if run["dendritic"]}
    comparisons = []
    for model in sorted(models):
        for run_pattern, against_pattern, meaning in COMPARISONS:
            a, b = run_pattern.format(m=model), against_pattern.format(m=model)
            seeds = sorted(seed for name, seed in accuracy if name == a and (b, seed) in accuracy)
            if not seeds:
                continue
            if len(seeds) > 1:
                difference, low, high = seed_interval([accuracy[a, s] - accuracy[b, s] for s in seeds])
                method = f"t interval over {len(seeds)} seeds"
            else:
                correct = [torch.load(os.path.join(run_dirs[name, seeds[0]], "test_predictions.pt"))
                           for name in (a, b)]
                difference, low, high = bootstrap_interval(*[(c["predicted"] == c["labels"]).numpy() for c in correct])
                method = (f"paired bootstrap over {len(correct[0]['labels']):,} test images, seed {seeds[0]} only: "
                          "test-set noise for these trained weights, not the seed-to-seed spread")
            comparisons.append(dict(run=a, against=b, meaning=meaning, difference=difference, low=low,
                                    high=high, method=method, distinguishable=low > 0 or high < 0))
    return comparisons


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


def summary_markdown(runs, comparisons):
    def cell(row, key, fmt):
        return format(row[key], fmt) if key in row and not math.isnan(row[key]) else "n/a"

    rows = aggregate(runs)
    several_seeds = any(len(row["accuracies"]) > 1 for row in rows)
    lines = [
        "# Results",
        "",
        "| run | test acc. (%) | " + ("± sd | seeds | " if several_seeds else "") +
        "val. acc. (%) | params (M) | dendrites | epochs | start | "
        "acc. gained vs ResNet-18 (points) | ResNet-18 error removed | params saved vs ResNet-34 |",
        "|---|---:|" + ("---:|---|" if several_seeds else "") + "---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        spread = (f"{cell(row, 'test_sd', '.2f')} | {', '.join(f'{a:.2f}' for a in row['accuracies'])} | "
                  if several_seeds else "")
        lines.append(
            f"| {row['name']} | {row['test_accuracy']:.2f} | {spread}{row['val_accuracy']:.2f} | "
            f"{row['params'] / 1e6:.2f} | {row['dendrites']} | {row['epochs']} | {row.get('start', 'scratch')} | "
            f"{cell(row, 'accuracy_gained', '+.2f')} | {cell(row, 'error_removed', '.1%')} | "
            f"{cell(row, 'params_saved', '.1%')} |"
        )
    lines += [
        "",
        "Test accuracy is measured once, after training; model selection and dendrite decisions "
        "used the validation split only. *Error removed*: the share of ResNet-18's test error that "
        "the run removes. *Params saved*: how many fewer parameters than ResNet-34. A `_continued` "
        "run is the control: the baseline trained on for as many epochs as the dendritic run, "
        "with the same schedule and no dendrites.",
    ]
    if comparisons:
        lines += ["", "## Is the difference real?", ""]
        for c in comparisons:
            verdict = ("distinguishable from zero" if c["distinguishable"] else
                       "not distinguishable from zero (the interval includes 0)")
            lines.append(f"- **{c['run']} − {c['against']}** ({c['meaning']}): {c['difference']:+.2f} points, "
                         f"95% interval [{c['low']:+.2f}, {c['high']:+.2f}] ({c['method']}); {verdict}.")
    return "\n".join(lines) + "\n"


def comparison_figure(runs):
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
        if row.get("architectures"):
            params, scores = zip(*row["architectures"])
            right.plot([p / 1e6 for p in params], scores, "-o", color=colour, label=f"{row['name']} (0, 1, 2, ... dendrites)")
        elif not row["name"].endswith("_continued"):
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
    return figure


def write_report(results_dir, runs, comparisons):
    """summary.json, summary.md and comparison.png for these runs."""
    write_json(os.path.join(results_dir, "summary.json"), {"runs": runs, "comparisons": comparisons})
    redraw_report(results_dir)


def redraw_report(results_dir):
    """summary.md and comparison.png from summary.json alone (main.py --plot-only)."""
    summary = read_json(os.path.join(results_dir, "summary.json"))
    if not summary or not summary.get("runs"):
        raise ExperimentError(f"{results_dir}/summary.json is missing or empty: run the experiment first")
    write_atomic(os.path.join(results_dir, "summary.md"), summary_markdown(summary["runs"], summary.get("comparisons", [])))
    save_figure(comparison_figure(summary["runs"]), os.path.join(results_dir, "comparison.png"))
