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
import os
import sys
import time

import torch

from data import load_data
from report import redraw_report, write_report, write_run_pictures
from settings import (control_source, parse_settings, pick_device, pick_precision, planned_epochs, run_names,
                      result_settings, seed_list, split_run_name)
from utils import ExperimentError, check_writable, read_json, remove_temporary_files, run_cli, try_lock, write_json


class Experiment:
    """The runs of one seed, in dependency order, each reused when a finished result with the same
    settings exists."""

    def __init__(self, settings, seed, shared_data):
        self.settings, self.seed = settings, seed
        self.device = pick_device(settings.device)
        self.precision = pick_precision(settings.precision, self.device)
        self.shared_data = shared_data  # one dict for every seed: CIFAR-100 is read once
        self.results, self.trained = {}, set()  # finished runs; those of them trained by this process

    @property
    def data(self):
        if "data" not in self.shared_data:  # only read (or download) CIFAR-100 when something must train
            self.shared_data["data"] = load_data(self.settings, self.device)
        return self.shared_data["data"]

    def run_dir(self, run_name):
        folder = run_name if self.seed == 0 else f"{run_name}_seed{self.seed}"
        return os.path.join(self.settings.results_dir, folder)

    def upstream(self, run_name):
        """The runs this run starts from: the baseline it continues, and for a control the dendritic
        run whose cycles it repeats."""
        model_name, kind = split_run_name(run_name)
        runs = [model_name] if kind != "baseline" and self.settings.warm_start else []
        return runs + ([control_source(self.settings, run_name)] if kind == "continued" else [])

    def cache_key(self, run_name):
        """What this run's result depends on, stored in its result.json as "settings" and compared
        before a finished run is reused: the settings (settings.result_settings) and when the runs it
        starts from finished (a baseline trained again is a different starting point)."""
        key = result_settings(self.settings, run_name, self.seed, self.precision)
        for upstream in self.upstream(run_name):
            key[split_run_name(upstream)[1] + "_finished_at"] = self.result(upstream)["finished_at"]
        return key

    def result(self, run_name):
        """The finished result of a run, training it (and what it starts from) when needed."""
        if run_name not in self.results:
            if self.settings.retrain:
                self.forget(run_name)
            self.results[run_name] = self.cached(run_name) or self.train(run_name, self.cache_key(run_name))
        return self.results[run_name]

    def cached(self, run_name):
        """The run's finished result when it was made with the same settings and its files are whole;
        else None. The runs it starts from must be finished already."""
        cached = read_json(os.path.join(self.run_dir(run_name), "result.json"))
        if cached and cached.get("settings") == self.cache_key(run_name) and self.files_readable(run_name):
            print(f"{run_name}: reusing the finished result in {self.run_dir(run_name)}", file=sys.stderr)
            return cached
        return None

    def forget(self, run_name):
        """--retrain: the run's result and checkpoint go, so that it trains from the start."""
        for name in ("result.json", "checkpoint.pt"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.run_dir(run_name), name))

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

    def start_tracking(self, run_name, cache_key):
        """A wandb run for this training run when --wandb-project is set; None otherwise."""
        if not self.settings.wandb_project:
            return None
        import wandb
        return wandb.init(project=self.settings.wandb_project, name=f"{run_name}-seed{self.seed}",
                          config=cache_key, reinit=True)

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
        cycles = self.result(control_source(self.settings, run_name))["cycles"]
        return ContinuedRun(model_name, self.data, setup, self.seed, self.weights(model_name), cycles)

    def train(self, run_name, cache_key):
        from runs import train_run

        model_name, kind = split_run_name(run_name)
        run_dir = self.run_dir(run_name)
        os.makedirs(run_dir, exist_ok=True)
        remove_temporary_files(run_dir)
        print(f"{run_name} (seed {self.seed}): training on {self.device} ({self.precision})", file=sys.stderr)
        run = self.new_run(run_name)
        tracking = self.start_tracking(run_name, cache_key)
        try:
            outcome = train_run(run, run_name, run_dir, cache_key, tracking)
        except torch.OutOfMemoryError:
            size = self.settings.batch_size
            raise ExperimentError(f"{run_name}: out of {self.device} memory at --batch-size {size}; try "
                                  f"--batch-size {size // 2} (the learning rate scales with it)") from None
        result = dict(name=run_name, model=model_name, dendritic=kind == "dendritic", seed=self.seed,
                      dataset=self.settings.dataset, **outcome, classes=self.data.classes, device=str(self.device),
                      finished_at=datetime.datetime.now().isoformat(), settings=cache_key)
        write_json(os.path.join(run_dir, "result.json"), result)
        write_run_pictures(run_dir, run_name, self.data)
        if tracking:
            tracking.summary.update({k: result[k] for k in ("params", "test_accuracy", "val_accuracy", "dendrites")})
            tracking.finish()
        with contextlib.suppress(FileNotFoundError):  # finished: result.json and model.pt are the run now
            os.remove(os.path.join(run_dir, "checkpoint.pt"))
        self.trained.add(run_name)
        return result


def plan(experiments):
    """[(seed, run, the runs it starts from)] for every run to train or reuse, each after the runs it
    starts from (which may not be in --experiments themselves)."""
    steps = []

    def visit(seed, run_name):
        upstream = experiments[seed].upstream(run_name)
        for name in upstream:
            visit(seed, name)
        if all(step[:2] != (seed, run_name) for step in steps):
            steps.append((seed, run_name, upstream))

    for seed, experiment in experiments.items():
        for run_name in run_names(experiment.settings):
            visit(seed, run_name)
    return steps


def train_in_order(settings, experiments, steps):
    """Every run of the plan in this process, one after the other."""
    progress = Progress(settings, steps)
    for seed, run_name, _ in steps:
        result = experiments[seed].result(run_name)
        progress.done(seed, run_name, result, run_name in experiments[seed].trained)


class Progress:
    """After each run: one line with the runs done of all, the time elapsed, and an estimate of the
    time left from the seconds per epoch measured so far (each run's planned epochs: the most it
    can take), divided among the runs that train at once."""

    def __init__(self, settings, steps, at_once=1):
        self.settings, self.at_once, self.started = settings, at_once, time.time()
        self.left = [(seed, run_name) for seed, run_name, _ in steps]
        self.total, self.seconds_per_epoch = len(self.left), {}

    def done(self, seed, run_name, result, trained, where=None):
        self.left.remove((seed, run_name))
        if trained:
            print(f"{run_name} (seed {seed}): finished on {where or result['device']}, test accuracy "
                  f"{result['test_accuracy']:.2f}%", file=sys.stderr)
            self.seconds_per_epoch.setdefault(run_name, []).append(result["seconds"] / max(1, result["epochs"]))
        elapsed = time.time() - self.started
        print(f"{self.total - len(self.left)}/{self.total} runs done, {clock(elapsed)} elapsed, {self.estimate()}",
              file=sys.stderr, flush=True)

    def estimate(self):
        if not self.left:
            return "none left"
        if not self.seconds_per_epoch:
            return "time left unknown until a run has trained"
        measured = [s for values in self.seconds_per_epoch.values() for s in values]
        seconds = 0.0
        for _, run_name in self.left:
            rates = self.seconds_per_epoch.get(run_name, measured)
            seconds += sum(planned_epochs(run_name, self.settings).values()) * sum(rates) / len(rates)
        return f"about {clock(seconds / self.at_once)} left"


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
    """results_dir/.lock, held while running: a second main.py on the same folder is refused."""
    path = os.path.join(results_dir, ".lock")
    handle = try_lock(path)
    if handle is None:
        with open(path) as f:
            holder = f.read().strip() or "?"
        raise ExperimentError(f"another main.py (pid {holder}) is using {results_dir}; "
                              "wait for it to finish or choose another --results-dir")
    return handle


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
        shared_data = {}
        experiments = {seed: Experiment(settings, seed, shared_data) for seed in seed_list(settings)}
        if settings.parallel_runs:
            from cluster import train_in_parallel  # only here is Ray imported
            train_in_parallel(settings, experiments, plan(experiments))
        else:
            train_in_order(settings, experiments, plan(experiments))
        runs, run_dirs = [], {}
        for seed, experiment in experiments.items():
            for run_name in run_names(settings):
                result = experiment.results[run_name]
                runs.append({k: v for k, v in result.items() if k not in ("settings", "classes")})
                run_dirs[run_name, seed] = experiment.run_dir(run_name)
        write_report(settings.results_dir, runs, run_dirs)
    with open(os.path.join(settings.results_dir, "summary.md")) as f:
        print(f.read())


def cli(argv=None):
    return run_cli(main, argv, interrupted="interrupted: finished runs are kept in the results folder")


if __name__ == "__main__":
    sys.exit(cli())
