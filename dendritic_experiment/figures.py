"""The pictures: each run's curves and the test images it got wrong (drawn when it finishes), and
comparison.png, drawn from summary.json alone. matplotlib is imported where a picture is drawn."""
import io
import math
import os

import numpy as np
import torch

from dendritic_experiment.comparisons import aggregate
from dendritic_experiment.data import DATASETS
from dendritic_experiment.frontier import Frontier
from dendritic_experiment.markdown import LATENCY_NOTE, bounds, interval_text, seed_text
from dendritic_experiment.utils import read_csv, read_json, write_atomic


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
    counts = [int(row.get("dendrites") or 0) for row in history]
    if dendritic:
        contribution_panel(panels[2], epochs, history)
    for axes, metric, ylabel in ((loss_axes, "loss", "loss: cross-entropy with the training's label smoothing (both)"),
                                 (accuracy_axes, "accuracy", "accuracy (%)")):
        for split, style, label in (("train", "-o", "train"), ("val", "--o", "validation")):
            axes.plot(epochs, [float(row[f"{split}_{metric}"]) for row in history], style, markersize=3, label=label)
        for epoch, previous, count in zip(epochs, [0] + counts, counts):  # a warm start adds one before epoch 1
            if count > previous:
                axes.axvline(epoch - 0.5, color="tab:green", linestyle=":")
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
    loss_axes.legend()
    if any(counts):
        accuracy_axes.plot([], [], color="tab:green", linestyle=":", label="dendrite added")
        accuracy_axes.legend()
    figure.suptitle(title)
    return figure


def contribution_panel(axes, epochs, history):
    """The dendrites' share of their layers' output variance and their mean |dendrites_to_top|, by epoch."""
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


RUN_COLOURS = {"dendritic": "tab:green", "control": "tab:orange", "baseline": "tab:blue"}


def comparison_figure(summary):
    """comparison.png from summary.json: test accuracy against parameters with the width frontiers, then
    against compute per image and CPU latency at batch 1 where the runs recorded them (what a user
    choosing a model for a device reads), and last the validation accuracy of each cycle."""
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


def accuracy_panel(axes, rows, key, label, scale=1e6):
    """Test accuracy against rows' key (params, macs or latency, per image) over scale: each seed a dot,
    the mean with its sd."""
    for row in rows:
        colour, x = RUN_COLOURS[row["kind"]], row[key] / scale
        axes.scatter([value / scale for value in row[PER_SEED[key]]], row["accuracies"], s=14, color=colour,
                     alpha=0.5, zorder=2)
        sd = 0 if math.isnan(row["test_sd"]) else row["test_sd"]
        axes.errorbar(x, row["test_accuracy"], yerr=sd, fmt="o", ms=8, color=colour, capsize=4, zorder=3)
        add_label(axes, x, row["test_accuracy"], row["name"], colour)
    axes.set_xlabel(label)


def frontier_panel(axes, lines, entries):
    """Each family's width frontier, and from each run's mean over the frontier's seeds a dotted line the
    length of its reported distance (it ends on the frontier where the run's seeds share a parameter count)."""
    for line in (Frontier(**line) for line in lines):  # summary.json's form
        params = np.geomspace(*line.params_range, 100)
        axes.plot(params / 1e6, [line.accuracy_at(p) for p in params], "-", color="tab:blue", alpha=0.5,
                  linewidth=1.5, zorder=1, label=f"{line.family} width frontier (seeds {seed_text(line.seeds)})")
    for e in entries:
        if e["difference"] is not None:
            axes.plot([e["params"] / 1e6] * 2, [e["accuracy"], e["accuracy"] - e["difference"]], ":",
                      color=RUN_COLOURS[e["kind"]], zorder=1, gid="distance to the frontier")
    if lines:
        from matplotlib.ticker import FuncFormatter

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
    baselines = {row["name"]: row["val_accuracy"] for row in rows if row["kind"] == "baseline"}
    for target in dict.fromkeys(e["against"] for e in headline_entries if e["against"] in baselines):
        axes.axhline(baselines[target], color="tab:gray", linestyle="--", linewidth=1)
        axes.annotate(f"{target} (its validation accuracy)", (0.02, baselines[target]),
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
    """A run's name beside its point, in its colour; place_labels places it once the axes' limits are final."""
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
    """Labels that would overprint one another stacked downwards, the highest first, in the final layout
    (drawn once to measure them)."""
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
        closed = "undefined (no gap)" if share is None else f"{share['share']:.0%} {bounds(share, '.0%')}"
        lines.append(f"{e['run']} − {e['against']}: {interval_text(e)}; share of the gap closed: {closed}")
    by_run = {e["run"]: e for e in frontier if e["difference"] is not None}
    for e in [e for e in by_run.values() if e["kind"] == "dendritic"][:1]:
        line = f"{e['run']} − the {e['family']} width frontier at equal parameters: {interval_text(e)}"
        control = next((c for c in by_run.values() if c["repeats"] == e["run"] and c["family"] == e["family"]), None)
        if control:  # the frontier's baselines trained fewer epochs: what the dendrites add is the gap between the two
            line += f"; its control (the same extra epochs, no dendrites): {interval_text(control)}"
        lines.append(line)
    return "\n".join(lines)
