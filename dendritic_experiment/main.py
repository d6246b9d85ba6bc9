"""Do artificial dendrites make a small CNN as good as a big one? One command answers it.

    python dendritic_experiment/main.py            # ResNet-18, ResNet-34, ResNet-18 + dendrites
    python dendritic_experiment/main.py --smoke    # the whole pipeline on tiny data, minutes on a CPU
    python dendritic_experiment/main.py --help     # every setting (defaults in config.py)
    python -m dendritic_experiment ...             # the same

The command line only: the experiment is experiment.py; what it writes, README.md's "What it writes".
"""
import contextlib
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: import the package, not its files one by one
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dendritic_experiment.dendrites import perforatedbp_note  # noqa: E402
from dendritic_experiment.experiment import Experiment, plan_runs, reported_runs, train_in_order  # noqa: E402
from dendritic_experiment.latency import run_latencies  # noqa: E402
from dendritic_experiment.report import redraw_report, write_report  # noqa: E402
from dendritic_experiment.settings import parse_settings, seed_list  # noqa: E402
from dendritic_experiment.tracking import Tracking, check_sweep_trial, sweep_trial  # noqa: E402
from dendritic_experiment.utils import ExperimentError, check_writable, run_cli, try_lock  # noqa: E402

OVERFIT_TARGET = 0.05  # "near zero" for a cross-entropy that starts near ln(100) = 4.6


def overfit_check(settings):
    """--overfit-batch: every model of --experiments must fit one fixed batch."""
    from dendritic_experiment.train import TrainingSetup, overfit_one_batch

    seed = seed_list(settings)[0]
    experiment = Experiment(settings)
    setup = TrainingSetup(settings, experiment.device, experiment.precision)
    failed = []
    for model_name in dict.fromkeys(run.model for run in plan_runs(settings)):
        first, last, steps = overfit_one_batch(model_name, experiment.data, setup, seed, target_loss=OVERFIT_TARGET)
        wired = last < OVERFIT_TARGET
        print(f"{model_name}: loss {first:.3f} -> {last:.4f} in {steps} steps on one batch: "
              + ("model, loss and optimizer are wired correctly" if wired else "did NOT fall to near zero"))
        if not wired:
            failed.append(model_name)
    if failed:
        raise ExperimentError(f"--overfit-batch: {', '.join(failed)} could not fit one batch; check the model's "
                              "forward pass, the loss and the optimizer before training for real")


def lock_results(results_dir):
    """results_dir/.lock, held while running: a second main.py on the same folder is refused."""
    path = os.path.join(results_dir, ".lock")
    handle = try_lock(path)
    if handle is None:
        with open(path) as f:
            holder = f.read().strip() or "?"
        raise ExperimentError(f"another main.py (pid {holder}) is using {results_dir}; "
                              "wait for it to finish or choose another --results-dir")
    return handle


def run_experiment(settings):
    """Every run of the plan, reused or trained, then the report (in a sweep trial's own folder under a
    wandb sweep agent). Returns the report's folder."""
    trial = sweep_trial(settings)
    experiment, plan = Experiment(settings), plan_runs(settings, trial)
    report_dir = os.path.join(settings.results_dir, trial) if trial else settings.results_dir
    if trial:
        check_sweep_trial(plan)
    if any(run.kind == "dendritic" for run in plan) and (note := perforatedbp_note()):
        print(note, file=sys.stderr)
    with Tracking(settings) if settings.wandb_project else contextlib.nullcontext() as tracking:
        if settings.parallel_runs:
            from dendritic_experiment.cluster import train_in_parallel  # only here is Ray imported
            train_in_parallel(settings, experiment, plan, tracking, trial)
        else:
            train_in_order(settings, experiment, plan, tracking)
        runs, run_dirs = reported_runs(settings, experiment, plan)
        latency = run_latencies(runs, run_dirs, report_dir)  # measured together: the report's times compare
        summary = write_report(report_dir, [dict(run, latency_ms=latency[run["name"]]) for run in runs], run_dirs)
        if tracking:
            tracking.experiment_finished(summary, report_dir, run_dirs)
    return report_dir


def main(argv=None):
    settings = parse_settings(argv)
    check_writable(settings.results_dir, "--results-dir")
    if settings.smoke and len(seed_list(settings)) == 1:
        print(f"--smoke trains seed {settings.seeds} only, a preliminary result (--seeds 0,1,2 trains more)",
              file=sys.stderr)
    with lock_results(settings.results_dir):
        if settings.overfit_batch:
            return overfit_check(settings)
        if settings.plot_only:
            redraw_report(settings.results_dir)
            print(f"redrew {settings.results_dir}/summary.md and comparison.png", file=sys.stderr)
            return
        # stdout is the summary's alone: the library's prints go to stderr where it is imported and called
        # (dendrites.library, DendriteTracker.library_call). Not a redirect around the whole run: wandb's
        # console capture, started inside one, lost the end of its run summary (tests/test_tracking.py).
        report_dir = run_experiment(settings)
    with open(os.path.join(report_dir, "summary.md")) as f:
        print(f.read())


def cli(argv=None):
    return run_cli(main, argv, interrupted="interrupted: finished runs are kept in the results folder")


if __name__ == "__main__":
    sys.exit(cli())
