"""Do artificial dendrites make a small CNN as good as a big one? One command answers it.

    python dendritic_experiment/main.py            # ResNet-18, ResNet-34, ResNet-18 + dendrites
    python dendritic_experiment/main.py --smoke    # the whole pipeline on tiny data, minutes on a CPU
    python dendritic_experiment/main.py --help     # every setting (defaults in config.py)

Writes results/<run>/ (result.json, history.csv, model.pt; the dendritic run also the library's
PAI.png and CSVs) and results/summary.json, summary.md, comparison.png. A finished run whose
settings have not changed is reused, not trained again.
"""
import contextlib
import datetime
import fcntl
import os
import sys

import torch

from data import load_data
from report import compare_runs, redraw_report, write_report, write_run_pictures
from settings import (parse_settings, pick_device, pick_precision, run_names, run_settings, seed_list,
                      split_run_name)
from utils import ExperimentError, check_writable, read_json, remove_temporary_files, run_cli, write_json


class Experiment:
    """The runs of one seed, in dependency order, each reused when a finished result with the same
    settings exists."""

    def __init__(self, settings, seed, shared_data):
        self.settings, self.seed = settings, seed
        self.device = pick_device(settings.device)
        self.precision = pick_precision(settings.precision, self.device)
        self.shared_data = shared_data  # one dict for every seed: CIFAR-100 is read once
        self.results = {}

    @property
    def data(self):
        if "data" not in self.shared_data:  # only read (or download) CIFAR-100 when something must train
            self.shared_data["data"] = load_data(self.settings, self.device)
        return self.shared_data["data"]

    def run_dir(self, run_name):
        folder = run_name if self.seed == 0 else f"{run_name}_seed{self.seed}"
        return os.path.join(self.settings.results_dir, folder)

    def run_settings(self, run_name):
        """The settings this run's result depends on, stored in its result.json as "settings":
        config.py's (settings.run_settings) and the finished runs it starts from."""
        model_name, kind = split_run_name(run_name)
        depends = run_settings(self.settings, run_name, self.seed, self.precision)
        if kind != "baseline" and self.settings.warm_start:
            # A baseline trained again means a different starting point.
            depends["baseline_finished_at"] = self.result(model_name)["finished_at"]
        if kind == "continued":  # it repeats the dendritic run's cycles
            depends["dendritic_finished_at"] = self.result(model_name + "_dendritic")["finished_at"]
        return depends

    def result(self, run_name):
        """The finished result of a run, training it (and what it starts from) when needed."""
        if run_name in self.results:
            return self.results[run_name]
        depends = self.run_settings(run_name)
        cached = read_json(os.path.join(self.run_dir(run_name), "result.json"))
        if self.settings.retrain:
            with contextlib.suppress(FileNotFoundError):  # a leftover checkpoint would be resumed
                os.remove(os.path.join(self.run_dir(run_name), "checkpoint.pt"))
        elif cached and cached.get("settings") == depends and self.files_readable(run_name):
            print(f"{run_name}: reusing the finished result in {self.run_dir(run_name)}", file=sys.stderr)
            self.results[run_name] = cached
            return cached
        self.results[run_name] = result = self.train(run_name, depends)
        return result

    def weights(self, run_name, name="model.pt"):
        """A saved tensor file of the run (model.pt by default), or None (reported) when it cannot be read."""
        path = os.path.join(self.run_dir(run_name), name)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            print(f"{run_name}: {path} cannot be read ({type(error).__name__}); training the run again",
                  file=sys.stderr)
            return None

    def files_readable(self, run_name):
        """A finished run is only reused whole: its model, test predictions and history."""
        history = os.path.join(self.run_dir(run_name), "history.csv")
        return (self.weights(run_name) is not None and self.weights(run_name, "test_predictions.pt") is not None
                and os.path.exists(history))

    def start_tracking(self, run_name, depends):
        """A wandb run for this training run when --wandb-project is set; None otherwise."""
        if not self.settings.wandb_project:
            return None
        import wandb
        return wandb.init(project=self.settings.wandb_project, name=f"{run_name}-seed{self.seed}",
                          config=depends, reinit=True)

    def new_run(self, run_name):
        """The run object that trains run_name, given what it starts from."""
        from runs import BaselineRun, ContinuedRun, DendriticRun  # only when something trains: imports tqdm
        from train import TrainingSetup

        model_name, kind = split_run_name(run_name)
        setup = TrainingSetup(self.settings, self.device, self.precision)
        if kind == "baseline":
            return BaselineRun(model_name, self.data, setup, self.seed)
        if kind == "dendritic":
            weights = self.weights(model_name) if self.settings.warm_start else None
            return DendriticRun(model_name, self.data, setup, self.seed, self.run_dir(run_name), weights)
        cycles = self.result(model_name + "_dendritic")["cycles"]
        return ContinuedRun(model_name, self.data, setup, self.seed, self.weights(model_name), cycles)

    def train(self, run_name, depends):
        from runs import train_run

        model_name, kind = split_run_name(run_name)
        run_dir = self.run_dir(run_name)
        os.makedirs(run_dir, exist_ok=True)
        remove_temporary_files(run_dir)
        print(f"{run_name} (seed {self.seed}): training on {self.device} ({self.precision})", file=sys.stderr)
        run = self.new_run(run_name)
        tracking = self.start_tracking(run_name, depends)
        try:
            outcome = train_run(run, run_name, run_dir, depends, tracking)
        except torch.OutOfMemoryError:
            size = self.settings.batch_size
            raise ExperimentError(f"{run_name}: out of {self.device} memory at --batch-size {size}; try "
                                  f"--batch-size {size // 2} (the learning rate scales with it)") from None
        result = dict(name=run_name, model=model_name, dendritic=kind == "dendritic", seed=self.seed,
                      dataset=self.settings.dataset, **outcome, classes=self.data.classes, device=str(self.device),
                      finished_at=datetime.datetime.now().isoformat(), settings=depends)
        write_json(os.path.join(run_dir, "result.json"), result)
        write_run_pictures(run_dir, run_name, self.data)
        if tracking:
            tracking.summary.update({k: result[k] for k in ("params", "test_accuracy", "val_accuracy", "dendrites")})
            tracking.finish()
        with contextlib.suppress(FileNotFoundError):  # finished: result.json and model.pt are the run now
            os.remove(os.path.join(run_dir, "checkpoint.pt"))
        return result


OVERFIT_TARGET = 0.05  # "near zero" for a cross-entropy that starts near ln(100) = 4.6


def overfit_check(settings):
    """--overfit-batch: every model of --experiments must fit one fixed batch."""
    from train import TrainingSetup, overfit_one_batch

    seed = seed_list(settings)[0]
    experiment = Experiment(settings, seed, {})
    setup = TrainingSetup(settings, experiment.device, experiment.precision)
    failed = []
    for model_name in dict.fromkeys(split_run_name(run)[0] for run in run_names(settings)):
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
    """Hold results_dir/.lock while running. The OS releases it when this process ends, even
    when it is killed, so a stale lock never blocks; a live one refuses a second main.py."""
    handle = open(os.path.join(results_dir, ".lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise ExperimentError(f"another main.py (pid {handle.read().strip() or '?'}) is using {results_dir}; "
                              "wait for it to finish or choose another --results-dir") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def main(argv=None):
    settings = parse_settings(argv)
    check_writable(settings.results_dir, "--results-dir")
    with lock_results(settings.results_dir):
        if settings.overfit_batch:
            return overfit_check(settings)
        if settings.plot_only:
            redraw_report(settings.results_dir)
            print(f"redrew {settings.results_dir}/summary.md and comparison.png", file=sys.stderr)
            return
        shared_data, runs, run_dirs = {}, [], {}
        for seed in seed_list(settings):
            experiment = Experiment(settings, seed, shared_data)
            for run_name in run_names(settings):
                result = experiment.result(run_name)
                runs.append({k: v for k, v in result.items() if k not in ("settings", "classes")})
                run_dirs[run_name, seed] = experiment.run_dir(run_name)
        write_report(settings.results_dir, runs, compare_runs(runs, run_dirs))
    with open(os.path.join(settings.results_dir, "summary.md")) as f:
        print(f.read())


def cli(argv=None):
    return run_cli(main, argv, interrupted="interrupted: finished runs are kept in the results folder")


if __name__ == "__main__":
    sys.exit(cli())
