"""The experiment: which runs, for which seeds, in what order, and each one reused or trained (docs/method.md, "When
results are reused"). The plan lists each run after the runs it starts from, so that a cache lookup never trains;
cluster.py runs the same plan as Ray tasks."""
import contextlib
import dataclasses
import datetime
import functools
import os
import sys
import time
import zipfile

import torch

from dendritic_experiment.costs import run_macs
from dendritic_experiment.data import data_fingerprint, load_data
from dendritic_experiment.identity import git_commit, result_settings, run_identity, what_changed
from dendritic_experiment.models import build_model, model_and_width
from dendritic_experiment.figures import write_run_pictures
from dendritic_experiment.settings import pick_device, pick_precision, seed_list, split_run_name
from dendritic_experiment.utils import ExperimentError, read_json, remove_temporary_files, split_list, write_json


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of the plan, described once: what it trains, for which seed, where, from what."""

    name: str  # resnet18, resnet18_w1.25, resnet18_dendritic, resnet18_continued, ...
    model: str  # resnet18 (resnet18_w1.25 for that width variant)
    kind: str  # baseline (a width variant too), dendritic or control
    seed: int
    folder: str  # results_dir/<name>, or results_dir/<name>_seed<k>
    baseline: "PlannedRun | None" = None  # the finished baseline it continues (warm start, control)
    cycles_from: "PlannedRun | None" = None  # a control: the dendritic run whose cycles it repeats

    @property
    def starts_from(self):
        return tuple(run for run in (self.baseline, self.cycles_from) if run is not None)

    def description(self):
        """What the run is, as data in its result.json and the report."""
        family, width_multiple = model_and_width(self.model)
        return dict(kind=self.kind, family=family, width_multiple=width_multiple,
                    starts_from=self.baseline and self.baseline.name, repeats=self.cycles_from and self.cycles_from.name)

    def __str__(self):
        return f"{self.name} (seed {self.seed})"


def run_names(settings):
    """--experiments in order, with each warm-started dendritic run's control right after it."""
    names = []
    for run in split_list(settings.experiments):
        model, kind = split_run_name(run)
        with_control = kind == "dendritic" and settings.warm_start and settings.control
        names += [run, model + "_continued"] if with_control else [run]
    return list(dict.fromkeys(names))  # a run listed twice, or a control listed too, trains once


def control_source(settings, run_name):
    """The dendritic run whose cycles a _continued control repeats: its own model's when listed (or when
    none is), else the first listed, so that resnet34_continued trains as long as resnet18_dendritic."""
    own = split_run_name(run_name)[0] + "_dendritic"
    listed = [run for run in run_names(settings) if split_run_name(run)[1] == "dendritic"]
    return own if own in listed or not listed else listed[0]


def plan_runs(settings, trial=None):
    """Every run to train or reuse, for every seed, each after the runs it starts from (listed in
    --experiments or not). trial: a sweep trial's folder under results_dir for every run but the baselines."""
    planned = {}

    def add(name, seed):
        if (name, seed) not in planned:
            model, kind = split_run_name(name)
            baseline = add(model, seed) if kind != "baseline" and settings.warm_start else None
            cycles_from = add(control_source(settings, name), seed) if kind == "control" else None
            parent = os.path.join(settings.results_dir, trial) if trial and kind != "baseline" else settings.results_dir
            folder = os.path.join(parent, name if seed == 0 else f"{name}_seed{seed}")
            planned[name, seed] = PlannedRun(name, model, kind, seed, folder, baseline, cycles_from)
        return planned[name, seed]

    for seed in seed_list(settings):
        for name in run_names(settings):
            add(name, seed)
    return list(planned.values())


def planned_epochs(kind, settings):
    """{dendrite count: epochs} a run of this kind trains; at most for a dendritic run and its control,
    since the tracker stops early when a dendrite does not improve validation."""
    if kind == "baseline":
        return {0: settings.epochs}
    if kind == "control":  # as many epochs as the dendritic run's cycles, no dendrites
        return {0: settings.max_dendrites * settings.dendrite_epochs}
    cycles = dict.fromkeys(range(1, settings.max_dendrites + 1), settings.dendrite_epochs)
    return cycles if settings.warm_start else {0: settings.epochs, **cycles}


class Experiment:
    """The plan's finished results, each reused when one of the same identity exists (identity.py), else
    trained. One per process: the data is read once for every seed; device and precision resolve here."""

    def __init__(self, settings):
        self.settings = settings
        self.results, self.trained = {}, set()  # {PlannedRun: result}; the runs this process trained

    @functools.cached_property
    def device(self):
        return pick_device(self.settings.device)

    @functools.cached_property
    def precision(self):
        return pick_precision(self.settings.precision, self.device)

    @functools.cached_property
    def data(self):  # only read (or downloaded) when something must train
        return load_data(self.settings, self.device)

    @functools.cached_property
    def data_fingerprint(self):  # read once per process, on the first lookup
        return data_fingerprint(self.settings.data_dir, self.settings.dataset)

    def result(self, run):
        """The run's finished result, reused or trained; the runs it starts from must be finished."""
        if run not in self.results:
            if self.settings.retrain:
                self.forget(run)
            self.results[run] = self.cached(run) or self.train(run)
        return self.results[run]

    def identity(self, run):
        """(settings, identity) of the run's result (identity.py); the runs it starts from must be finished."""
        return (result_settings(self.settings, run.model, run.kind, run.seed),
                run_identity(run, self.data_fingerprint, self.results))

    def cached(self, run, here=True):
        """The run's finished result when its identity and the precision it would train in here match and its files
        are whole; else None, saying why when there was a result. here=False (a Ray driver whose workers may resolve
        `precision = auto` otherwise): a result that matches in all else goes to the worker that would train it."""
        cached = read_json(os.path.join(run.folder, "result.json"))
        if not cached:
            return None
        changed = what_changed(cached, *self.identity(run))
        # A result's settings hold `precision = auto` as set: what it resolved to is compared where it resolves.
        if not changed and here and cached.get("precision") != self.precision:
            changed = f"it trained in {cached.get('precision')} and would train in {self.precision} here"
        if changed:
            print(f"{run}: {changed}; training it again", file=sys.stderr)
            return None
        if not self.files_whole(run, cached):
            return None
        if not here:
            print(f"{run.name}: finished in {cached.get('precision')}; the Ray worker that would train it "
                  "compares that with the precision it resolves", file=sys.stderr)
            return None
        print(f"{run.name}: reusing the finished result in {run.folder}", file=sys.stderr)
        return cached

    def forget(self, run, names=("result.json", "checkpoint.pt")):
        """Remove the run's files of these names; by default its result and checkpoint (--retrain: it trains anew)."""
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(run.folder, name))

    def files_whole(self, run, cached):
        """Whether a finished run's history, model and test predictions are there as it wrote them."""
        for name in ("history.csv",) + SAVED_FILES:
            path = os.path.join(run.folder, name)
            problem = damage(path, cached.get("files", {}).get(name)) if name in SAVED_FILES else (
                None if os.path.exists(path) else "is missing")
            if problem:
                print(f"{run.name}: {path} {problem}; training the run again", file=sys.stderr)
                return False
        return True

    def starting_weights(self, run, upstream):
        """The finished upstream run's weights that run starts from; refused, naming the file, when they
        cannot be read or do not fit its model (the run would not be what its identity says)."""
        path = os.path.join(upstream.folder, "model.pt")
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
            build_model(upstream.model, len(self.data.classes), self.settings.width).load_state_dict(weights)
        except Exception as error:
            raise ExperimentError(f"{run.name}: {path} cannot be read as {upstream.name}'s weights ({type(error).__name__}), "
                                  f"and {run.name} starts from them: restore the file or train {upstream.name} again "
                                  "(--retrain)") from None
        return weights

    def new_run(self, run):
        """The object that trains run, given what it starts from."""
        from dendritic_experiment.continuation import ContinuedRun, DendriticRun  # only when something trains
        from dendritic_experiment.runs import BaselineRun
        from dendritic_experiment.train import TrainingSetup

        setup = TrainingSetup(self.settings, self.device, self.precision)
        if run.kind == "baseline":
            return BaselineRun(run.model, self.data, setup, run.seed)
        baseline_weights = self.starting_weights(run, run.baseline) if run.baseline else None
        if run.kind == "dendritic":
            return DendriticRun(run.model, self.data, setup, run.seed, run.folder, baseline_weights)
        dendritic = self.results[run.cycles_from]
        return ContinuedRun(run.model, self.data, setup, run.seed, baseline_weights, dendritic["cycles"], dendritic["lrs"])

    def train(self, run):
        from dendritic_experiment.runs import train_run

        settings, identity = self.identity(run)
        os.makedirs(run.folder, exist_ok=True)
        remove_temporary_files(run.folder)
        print(f"{run}: training on {self.device} ({self.precision})", file=sys.stderr)
        trainer = self.new_run(run)
        # An old result goes first: no result.json ever sits beside a history it did not make.
        self.forget(run, ["result.json"])
        checkpoint_key = dict(settings=settings, identity=identity, precision=self.precision)
        try:
            outcome = train_run(trainer, run.name, run.folder, checkpoint_key)
        except torch.OutOfMemoryError:
            size = self.settings.batch_size
            raise ExperimentError(f"{run.name}: out of {self.device} memory at --batch-size {size}; try "
                                  f"--batch-size {size // 2} (the learning rate scales with it)") from None
        result = dict(name=run.name, model=run.model, dendritic=run.kind == "dendritic", **run.description(),
                      seed=run.seed, dataset=self.settings.dataset, **outcome, classes=self.data.classes,
                      device=str(self.device), precision=self.precision,
                      finished_at=datetime.datetime.now().isoformat(), settings=settings, identity=identity,
                      code_commit=git_commit(),
                      files={name: os.path.getsize(os.path.join(run.folder, name)) for name in SAVED_FILES})
        write_json(os.path.join(run.folder, "result.json"), result)
        write_run_pictures(run.folder, run.name, self.data)
        self.forget(run, ["checkpoint.pt"])  # finished: result.json and model.pt are the run now
        self.trained.add(run)
        return result


SAVED_FILES = ("model.pt", "test_predictions.pt")  # a run's tensor files; result.json records their sizes


def damage(path, size):
    """What is wrong with a torch.save file (a zip archive) written size bytes long, or None: checked from
    its size and zip directory, so that a start does not load every model (the default plan's 12: ~0.7 GB)."""
    try:
        if os.path.getsize(path) != size:
            return f"is not the file the run wrote ({os.path.getsize(path)} bytes, not {size})"
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                return "is not a tensor file (no data.pkl in it)"
    except FileNotFoundError:
        return "is missing"
    except (OSError, zipfile.BadZipFile) as error:
        return f"cannot be read ({type(error).__name__})"
    return None


def train_in_order(settings, experiment, plan, tracking=None):
    """Every run of the plan in this process, one after the other."""
    progress = Progress(settings, plan, tracking)
    for run in plan:
        progress.done(run, experiment.result(run), run in experiment.trained)


class Progress:
    """After each run, a line with the runs done, the time elapsed and the time left: the planned epochs of the
    runs still to come (the most they can take) at the seconds per epoch measured so far, shared among the
    runs that train at once (--parallel-runs, or one)."""

    def __init__(self, settings, plan, tracking=None):
        self.settings, self.started, self.tracking = settings, time.time(), tracking
        self.left, self.total, self.seconds_per_epoch = list(plan), len(plan), {}

    def done(self, run, result, trained, where=None):
        self.left.remove(run)
        if self.tracking:
            self.tracking.run_finished(run, result, trained)
        if trained:
            print(f"{run}: finished on {where or result['device']}, test accuracy "
                  f"{result['test_accuracy']:.2f}%", file=sys.stderr)
            self.seconds_per_epoch.setdefault(run.name, []).append(result["seconds"] / max(1, result["epochs_trained"]))
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
        for run in self.left:
            rates = self.seconds_per_epoch.get(run.name, measured)
            seconds += sum(planned_epochs(run.kind, self.settings).values()) * sum(rates) / len(rates)
        return f"about {clock(seconds / (self.settings.parallel_runs or 1))} left"


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def reported_runs(settings, experiment, plan):
    """(the results of the runs --experiments names and the baselines they start from, each with its
    PlannedRun.description, for the report; {(name, seed): folder}). A run's baseline goes first: the headline
    compares with it."""
    starts_from = {run.name: run.baseline.name for run in plan if run.baseline}
    names = list(dict.fromkeys(name for run in run_names(settings) for name in (starts_from.get(run), run) if name))
    reported = [run for run in plan if run.name in names]
    reported.sort(key=lambda run: (run.seed, names.index(run.name)))
    runs = [dict({k: v for k, v in experiment.results[run].items() if k not in ("settings", "classes")},
                 macs=run_macs(experiment.results[run]), **run.description())
            for run in reported]
    return runs, {(run.name, run.seed): run.folder for run in reported}
