"""The three kinds of run, and the one loop that trains them, from the start or from a checkpoint:

    BaselineRun    warm-up + cosine stepped per batch; the last epoch's model is the result
    DendriticRun   perforatedai's tracker adds dendrites, judges them on validation, ends the run
    ContinuedRun   the control: the baseline trained on for the dendritic run's cycles, no dendrites

train_run owns what every run does (the epoch, the NaN check, validation, history.csv, the
checkpoint, the final test); a run class says only what differs: how it starts, its schedule,
what happens after an epoch and when it is complete.
"""
import abc
import os
import time

import torch

from dendritic_experiment.checkpoint import Checkpoint, EpochLog
from dendritic_experiment.contribution import contribution
from dendritic_experiment.data import prepare_batch
from dendritic_experiment.dendrites import DendriteTracker, architecture_scores, copy_library_outputs, library_version
from dendritic_experiment.models import build_model, dendrite_modules_of
from dendritic_experiment.train import evaluate, final_test, steps_per_epoch, train_one_epoch, warmup_cosine
from dendritic_experiment.utils import ExperimentError, save_torch

CONTRIBUTION_IMAGES = 256  # validation images on which a dendritic run measures what its dendrites add


def train_run(run, run_name, run_dir, cache_key, tracking=None):
    """Train run to completion (resuming from run_dir/checkpoint.pt when it fits); save model.pt
    and the test predictions. Returns the run's result (see each run's `result`)."""
    setup = run.setup
    checkpoint = Checkpoint(run_dir, run_name, cache_key, setup.device, setup.settings.checkpoint_seconds)
    log = EpochLog(run_dir, run_name, tracking)
    scaler = setup.grad_scaler()
    state, started = checkpoint.load(), time.time()
    try:
        if state:
            run.resume(state["run"], state["epoch"])
            scaler.load_state_dict(state["scaler"])
            log.rows, epoch, seconds = state["history"], state["epoch"], state["seconds"]
            checkpoint.restore_random_state(state)
        else:
            run.start()
            epoch, seconds = 0, time.time() - started  # a warm start scores the baseline first
        while not run.complete:
            epoch += 1
            row, restructured = train_epoch(run, run_name, epoch, scaler, checkpoint)
            seconds += row["seconds"]
            log.add(row)
            if not run.complete and checkpoint.due(force=restructured):  # the library's files change at a restructure
                checkpoint.save(epoch=epoch, seconds=seconds, history=log.rows, scaler=scaler.state_dict(),
                                run=run.state_dict())
        result = run.result(log.rows)
        save_torch(os.path.join(run_dir, "model.pt"), run.saved_model())
        test_accuracy = final_test(run.model, run.data, setup, run_dir)
    finally:
        run.close()
    return dict(result, test_accuracy=test_accuracy, epochs=epoch, seconds=seconds)


def train_epoch(run, run_name, epoch, scaler, checkpoint):
    """One epoch of any run: train, stop on a NaN, validate, let the run react.
    Returns (the history row, whether the model was restructured)."""
    setup, data, started = run.setup, run.data, time.time()
    run.begin_epoch(epoch)
    lr = run.optimizer.param_groups[-1]["lr"]  # the network's (a dendritic run's dendrites have a group first)
    metrics = train_one_epoch(run.model, data.train_images, data.train_labels, run.optimizer, setup, scaler,
                              run.batch_scheduler, f"{run_name} {run.progress(epoch)}")
    check_finite(metrics, run_name, epoch, setup, checkpoint)
    val = evaluate(run.model, data.val_images, data.val_labels, setup)
    row = dict(epoch=epoch, **metrics, val_loss=val["loss"], val_accuracy=val["accuracy"], lr=lr, **run.columns())
    restructured = run.end_epoch(epoch, val["accuracy"], metrics["train_accuracy"])
    return dict(row, seconds=time.time() - started), restructured


def check_finite(metrics, run_name, epoch, setup, checkpoint):
    """Stop a run whose loss went NaN or infinite; its last checkpoint (of a good epoch) stays."""
    step = metrics.pop("first_bad_step")
    if step >= 0:
        kept = f"the checkpoint of epoch {checkpoint.epoch} is kept" if checkpoint.epoch else "no checkpoint was saved"
        raise ExperimentError(
            f"{run_name}: the training loss became {metrics['train_loss']} at epoch {epoch}, step {step}; "
            f"{kept}. Try a lower --lr (now {setup.settings.lr}) "
            f"or --precision fp32 (now {setup.precision})"
        )


def cycle_schedule(settings, length):
    """(scheduler class, its arguments) for one dendrite cycle of `length` epochs, stepped once per
    epoch: a cosine from the cycle's peak in fixed mode; in history mode a tenth of the learning
    rate whenever validation stalls."""
    if settings.switch_mode == "history":
        return torch.optim.lr_scheduler.ReduceLROnPlateau, dict(
            mode="max", factor=0.1, patience=max(1, settings.history_epochs // 2))
    return torch.optim.lr_scheduler.LambdaLR, dict(lr_lambda=warmup_cosine(length, 0))


class Run(abc.ABC):
    """One training run: its model, optimizer and schedule, and what happens around each epoch.

    train_run calls start() or resume(), then for each epoch begin_epoch(), trains self.model with
    self.optimizer (and self.batch_scheduler), validates, and calls end_epoch(), until self.complete;
    state_dict() goes into the checkpoint, result() and saved_model() into the results, and close()
    always comes last. The methods without a body here are what every run must provide."""

    batch_scheduler = None  # a schedule stepped after every batch (the baseline's), else None
    complete = False  # set by end_epoch when the run has trained its last epoch

    def __init__(self, model_name, data, setup, seed):
        self.model_name, self.data, self.setup, self.seed = model_name, data, setup, seed
        self.settings = setup.settings

    def new_model(self, weights=None):
        """The run's architecture, drawn from its seed, optionally with weights loaded."""
        torch.manual_seed(self.seed)
        model = build_model(self.model_name, len(self.data.classes))
        if weights is not None:
            model.load_state_dict(weights)
        return model

    @abc.abstractmethod
    def start(self):
        """Model, optimizer and schedule for the first epoch."""

    @abc.abstractmethod
    def resume(self, state, epoch):
        """The same from state_dict(), saved after epoch `epoch`."""

    @abc.abstractmethod
    def end_epoch(self, epoch, val_accuracy, train_accuracy):
        """After an epoch's validation; sets self.complete. Returns whether the model was restructured."""

    @abc.abstractmethod
    def state_dict(self):
        """Everything resume() needs, for the checkpoint."""

    @abc.abstractmethod
    def result(self, history):
        """The run's result: params, dendrites, val_accuracy (of the model it reports), ...; the
        model it reports is self.model from then on."""

    def begin_epoch(self, epoch):
        """Before an epoch trains: nothing, unless a run starts a new cycle there."""

    def progress(self, epoch):
        return str(epoch)

    def columns(self):
        """Extra history.csv columns, read before end_epoch."""
        return {}

    def saved_model(self):
        """What model.pt holds."""
        return self.model.state_dict()

    def close(self):
        """After the run, finished or not: nothing, unless it holds process-wide state."""


class BaselineRun(Run):
    """Warm-up + cosine schedule stepped per batch; the last epoch's model is the result."""

    def start(self):
        self.model = self.setup.place(self.new_model())
        self.optimizer = torch.optim.SGD(self.model.parameters(), **self.setup.optimizer_kwargs(self.setup.scaled_lr))
        steps = steps_per_epoch(len(self.data.train_images), self.settings.batch_size)
        self.batch_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.settings.epochs * steps, self.settings.warmup_epochs * steps))

    def resume(self, state, epoch):
        self.start()
        for name in ("model", "optimizer", "batch_scheduler"):
            getattr(self, name).load_state_dict(state[name])

    def progress(self, epoch):
        return f"{epoch}/{self.settings.epochs}"

    def end_epoch(self, epoch, val_accuracy, train_accuracy):
        self.complete = epoch == self.settings.epochs
        return False

    def state_dict(self):
        return {name: getattr(self, name).state_dict() for name in ("model", "optimizer", "batch_scheduler")}

    def result(self, history):
        return {"params": sum(p.numel() for p in self.model.parameters()), "dendrites": 0,
                "val_accuracy": history[-1]["val_accuracy"]}


class DendriticRun(Run):
    """A run the perforatedai tracker drives: it adds dendrites, judges them on validation,
    rolls back to the best model and says when to stop.

    With baseline_weights, the first (neuron-only) phase is the finished baseline: its
    validation score is reported and the first dendrite added before any training.
    """

    def __init__(self, model_name, data, setup, seed, run_dir, baseline_weights=None):
        super().__init__(model_name, data, setup, seed)
        self.run_dir, self.baseline_weights = run_dir, baseline_weights
        self.first_phase, self.epochs_in_cycle = baseline_weights is None, 0

    def convert(self, weights, resuming):
        model = self.setup.place(self.new_model(weights))
        modules = dendrite_modules_of(self.model_name, self.settings.dendrite_modules)
        self.dendrites = DendriteTracker(model, modules, self.settings, self.run_dir, str(self.setup.device), resuming)
        self.model = self.setup.place(self.dendrites.model)
        # The same validation images every epoch, so that the contribution figures compare.
        self.probe_images = prepare_batch(self.data.val_images[:CONTRIBUTION_IMAGES], memory_format=self.setup.memory_format,
                                          dataset=self.settings.dataset)

    def start(self):
        self.convert(self.baseline_weights, resuming=False)
        self.new_cycle(first_phase=True)  # the tracker needs an optimizer before any score
        if self.baseline_weights is not None:
            self.warm_start()
            self.new_cycle(first_phase=False)

    def warm_start(self):
        """Give the tracker the finished baseline's scores as its first phase; it adds the first dendrite."""
        data, setup = self.data, self.setup
        self.dendrites.learn_shapes(*prepare_sample(data, setup))
        train = evaluate(self.model, data.train_images, data.train_labels, setup)
        val = evaluate(self.model, data.val_images, data.val_labels, setup)
        model, _, _ = self.dendrites.start_from_baseline(val["accuracy"], train["accuracy"])
        self.model = setup.place(model)

    def resume(self, state, epoch):
        self.convert(None, resuming=True)
        self.model = self.setup.place(self.dendrites.restore(state["dendrites"]))
        self.first_phase, self.epochs_in_cycle = state["first_phase"], state["epochs_in_cycle"]
        self.new_cycle(self.first_phase)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def cycle_length(self, first_phase):
        """Epochs of the neuron-only first phase (from scratch), or of a dendrite's cycle."""
        return self.settings.epochs if first_phase else self.settings.dendrite_epochs

    def new_cycle(self, first_phase):
        """Optimizer and per-epoch schedule for one cycle; the tracker steps the schedule."""
        peak = self.setup.scaled_lr if first_phase else self.setup.scaled_dendrite_lr
        self.optimizer, self.scheduler = self.dendrites.setup_optimizer(
            torch.optim.SGD, self.setup.optimizer_kwargs(peak), *cycle_schedule(self.settings, self.cycle_length(first_phase)))

    def progress(self, epoch):
        return f"{epoch} (dendrites {self.dendrites.dendrite_count})"

    def columns(self):
        return {"dendrites": self.dendrites.dendrite_count, "params": self.dendrites.parameter_count(),
                **self.contribution()}

    def contribution(self):
        return contribution(self.model, self.probe_images, self.settings.max_dendrites)

    def end_epoch(self, epoch, val_accuracy, train_accuracy):
        self.epochs_in_cycle += 1
        model, restructured, self.complete = self.dendrites.end_epoch(
            val_accuracy, train_accuracy, self.epochs_in_cycle, self.cycle_length(self.first_phase))
        # Load-bearing: the library's save of a new best made every parameter contiguous, undoing
        # channels_last, and a restructure adds new modules: place() puts the layout back.
        self.model = self.setup.place(model)
        if restructured and not self.complete:
            self.new_cycle(first_phase=False)
            self.first_phase, self.epochs_in_cycle = False, 0
        return restructured

    def state_dict(self):
        return {"dendrites": self.dendrites.checkpoint_state(), "first_phase": self.first_phase,
                "epochs_in_cycle": self.epochs_in_cycle, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def saved_model(self):
        return self.dendrites.checkpoint_state()

    def close(self):
        if hasattr(self, "dendrites"):
            self.dendrites.close()

    def result(self, history):
        copy_library_outputs(self.run_dir)
        val = evaluate(self.model, self.data.val_images, self.data.val_labels, self.setup)
        dendrite_counts = [row["dendrites"] for row in history]
        warm = self.baseline_weights is not None
        return {
            "params": self.dendrites.parameter_count(),
            "val_accuracy": val["accuracy"],
            "dendrites": self.dendrites.dendrite_count,
            "start": "baseline" if warm else "scratch",
            "epochs_including_baseline": len(history) + (self.settings.epochs if warm else 0),
            # Epochs trained with each dendrite count, in order: the continued control repeats these cycles.
            "cycles": [dendrite_counts.count(n) for n in sorted(set(dendrite_counts))],
            "architectures": architecture_scores(self.run_dir, self.settings.dendrite_min_gain),
            "contribution": self.contribution(),  # of the dendrites kept
            "library": library_version(),
        }


def prepare_sample(data, setup, size=2):
    """A few training images, prepared as evaluation prepares them, with their labels."""
    images = prepare_batch(data.train_images[:size], memory_format=setup.memory_format, dataset=setup.settings.dataset)
    return images, data.train_labels[:size]


class ContinuedRun(Run):
    """The control for a warm-started dendritic run: the same baseline, trained on for the same
    cycles with the same schedule, without dendrites; like the tracker, it rolls back to the best
    weights on validation at each cycle's end and keeps them (the baseline's own included)."""

    def __init__(self, model_name, data, setup, seed, baseline_weights, cycles):
        super().__init__(model_name, data, setup, seed)
        self.baseline_weights, self.cycles = baseline_weights, cycles
        # (cycle, epoch within it) of every epoch, numbered from 1
        self.plan = [(cycle, index) for cycle, length in enumerate(cycles) for index in range(1, length + 1)]

    def start(self):
        self.model = self.setup.place(self.new_model(self.baseline_weights))
        val = evaluate(self.model, self.data.val_images, self.data.val_labels, self.setup)
        self.best = {"val_accuracy": val["accuracy"], "model": clone_state(self.model)}

    def resume(self, state, epoch):
        self.model = self.setup.place(self.new_model(state["model"]))
        self.new_cycle(self.cycles[self.plan[epoch - 1][0]])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best = state["best"]

    def new_cycle(self, length):
        self.optimizer = torch.optim.SGD(self.model.parameters(),
                                         **self.setup.optimizer_kwargs(self.setup.scaled_dendrite_lr))
        scheduler_class, arguments = cycle_schedule(self.settings, length)
        self.scheduler = scheduler_class(self.optimizer, **arguments)

    def begin_epoch(self, epoch):
        cycle, index_in_cycle = self.plan[epoch - 1]
        if index_in_cycle == 1:
            if cycle > 0:
                self.model.load_state_dict(self.best["model"])  # as the tracker rolls back at every switch
            self.new_cycle(self.cycles[cycle])

    def progress(self, epoch):
        return f"{epoch}/{len(self.plan)}"

    def end_epoch(self, epoch, val_accuracy, train_accuracy):
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_accuracy)  # as the tracker steps it: once per epoch, on validation
        else:
            self.scheduler.step()
        if val_accuracy > self.best["val_accuracy"]:
            self.best = {"val_accuracy": val_accuracy, "model": clone_state(self.model)}
        self.complete = epoch == len(self.plan)
        return False

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "best": self.best}

    def result(self, history):
        self.model.load_state_dict(self.best["model"])
        return {"params": sum(p.numel() for p in self.model.parameters()), "dendrites": 0,
                "val_accuracy": self.best["val_accuracy"], "start": "baseline",
                "epochs_including_baseline": len(self.plan) + self.settings.epochs}


def clone_state(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
