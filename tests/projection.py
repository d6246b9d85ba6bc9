"""The default experiment's wall time, projected from a short timed run of it (TIMED_RUN, on the device
to project for: docs/performance.md, "Timing the full-size run"); printed and written to DIR/projection.json.

    python tests/benchmark.py --project DIR
"""
import os
import statistics

from dendritic_experiment.experiment import plan_runs, planned_epochs
from dendritic_experiment.identity import DATA_SETTINGS
from dendritic_experiment.settings import parse_settings, seed_list
from dendritic_experiment.utils import ExperimentError, read_csv, read_json, write_json

# Settings that change the time of an epoch: a timed run must use config.py's (its epoch counts may differ).
EPOCH_COST_KEYS = DATA_SETTINGS + ("width", "batch_size", "dendrite_modules")
TIMED_RUN = "--seeds 0 --epochs 3 --warmup-epochs 1 --dendrite-epochs 4"  # one seed; each dendrite count timed over 3+ epochs


def project(timed_dir, width):
    """benchmark.py --project: timed_dir's projection (for networks of this width)."""
    projection = project_wall_time(timed_dir, width)
    write_json(os.path.join(timed_dir, "projection.json"), projection)
    print_projection(projection)


def epoch_seconds(rows):
    """(seconds of a steady epoch, extra seconds of the first). The first pays once per architecture for
    cuDNN's kernel search (and --compile); the median of the rest passes over the epoch that ends a cycle."""
    seconds = [float(row["seconds"]) for row in rows]
    if len(seconds) == 1:
        return seconds[0], 0.0
    steady = statistics.median(seconds[1:])
    return steady, max(0.0, seconds[0] - steady)


def timed_history(timed_dir, run_name, settings):
    """The run's epochs and result.json in timed_dir, refused when timed at settings that change an epoch's cost."""
    path = os.path.join(timed_dir, run_name, "history.csv")
    try:
        rows = read_csv(path)
    except OSError:
        rows = []
    if not rows or "seconds" not in rows[0]:
        raise ExperimentError(f"{path} is missing or has no epochs: time a short run first, "
                              f"main.py --results-dir {timed_dir} {TIMED_RUN} (docs/performance.md)")
    result = read_json(os.path.join(timed_dir, run_name, "result.json")) or {}
    timed_with = result.get("settings", {})
    for key in EPOCH_COST_KEYS:
        if key in timed_with and timed_with[key] != getattr(settings, key):
            raise ExperimentError(f"{run_name} was timed with --{key.replace('_', '-')} {timed_with[key]!r} but "
                                  f"config.py has {getattr(settings, key)!r}: time it at config.py's settings "
                                  f"(only {TIMED_RUN} may differ)")
    return rows, result


def project_run(rows, plan):
    """The run's projected seconds, each planned cycle timed by the epochs with that many dendrites
    (or the nearest fewer that were timed: the timed run may have stopped adding dendrites)."""
    by_count = {}
    for row in rows:  # a baseline's or control's history has no dendrites column
        by_count.setdefault(int(row.get("dendrites") or 0), []).append(row)
    measured = {count: epoch_seconds(group) for count, group in by_count.items()}
    cycles = []
    for count, epochs in plan.items():
        timed_as = max((c for c in measured if c <= count), default=min(measured))
        steady, first_extra = measured[timed_as]
        cycles.append({"dendrites": count, "epochs": epochs, "seconds_per_epoch": steady,
                       "first_epoch_extra_seconds": first_extra, "timed_with_dendrites": timed_as,
                       "epochs_timed": len(by_count[timed_as]), "projected_seconds": epochs * steady + first_extra})
    return {"cycles": cycles, "projected_seconds": sum(c["projected_seconds"] for c in cycles)}


def project_wall_time(timed_dir, width=None):
    """Each run's seconds per epoch in timed_dir and the wall time of the experiment config.py describes
    (epochs only: loading data and the final test are left out)."""
    settings = parse_settings([] if width is None else ["--width", str(width)])  # config.py's, at this width
    if settings.switch_mode != "fixed":
        raise ExperimentError("--project needs switch_mode = 'fixed' in config.py: in history mode "
                              "the length of each dendrite cycle is not known in advance")
    runs, devices = {}, {}
    first_seed = seed_list(settings)[0]
    for run in plan_runs(settings):
        if run.seed == first_seed:  # one seed is timed; every seed trains the same runs
            rows, result = timed_history(timed_dir, run.name, settings)
            runs[run.name] = project_run(rows, planned_epochs(run.kind, settings))
            devices[run.name] = result.get("device")
    if len(set(devices.values())) > 1:  # e.g. a baseline reused from a run on another machine
        raise ExperimentError(f"the runs in {timed_dir} were timed on different devices ({devices}): "
                              "time them all on one, in a fresh --results-dir")
    device, seeds = next(iter(devices.values())), len(seed_list(settings))
    return {"timed_dir": os.path.abspath(timed_dir), "device": device, "runs": runs, "seeds": seeds,
            "projected_seconds": seeds * sum(run["projected_seconds"] for run in runs.values())}


def print_projection(projection):
    rows = []
    for name, run in projection["runs"].items():
        for c in run["cycles"]:
            label = name + (f", {c['dendrites']} dendrite{'s' * (c['dendrites'] > 1)}" if c["dendrites"] else "")
            note = f"  (timed with {c['timed_with_dendrites']})" if c["timed_with_dendrites"] != c["dendrites"] else ""
            rows.append((label, c["epochs_timed"], c["seconds_per_epoch"], c["first_epoch_extra_seconds"],
                         c["epochs"], c["projected_seconds"], note))
    width = max(len(row[0]) for row in rows)
    print(f"timed on {projection['device'] or 'an unrecorded device'}")
    print(f"{'run':{width}s} {'timed epochs':>12s} {'s/epoch':>8s} {'+1st':>7s} {'epochs':>7s} {'projected':>10s}")
    for label, timed, seconds, first_extra, epochs, projected, note in rows:
        print(f"{label:{width}s} {timed:12d} {seconds:8.2f} {first_extra:7.2f} {epochs:7d} {projected / 60:8.1f} m{note}")
    print(f"\nthe default experiment, {projection['seeds']} seed(s) of the runs above: "
          f"{projection['projected_seconds'] / 60:.1f} minutes (dendritic runs and "
          "controls at their longest; each cycle pays its first epoch's extra once ('+1st': cuDNN's kernel "
          "search, compiling); loading data and the final test are left out)")
