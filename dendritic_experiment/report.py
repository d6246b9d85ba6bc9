"""The report of an experiment: summary.json (comparisons.py's numbers), then summary.md
(markdown.py) and comparison.png (figures.py), drawn from summary.json alone, so that both can be
redrawn without training (main.py --plot-only)."""
import os

from dendritic_experiment.comparisons import (compare_runs, cycle_curves, error_removed, frontier_entries, frontiers,
                                              headline)
from dendritic_experiment.figures import comparison_figure, save_figure
from dendritic_experiment.markdown import summary_markdown
from dendritic_experiment.utils import ExperimentError, read_json, write_atomic, write_json


def write_report(results_dir, runs, run_dirs):
    """summary.json, summary.md and comparison.png for these runs (run_dirs: {(run name, seed): its folder});
    returns the summary."""
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
