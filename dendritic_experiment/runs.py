"""The one loop that trains every run, from its start or a checkpoint (train_run), the protocol a run provides to it
(Run) and the baseline (BaselineRun); the runs that continue a finished baseline are in continuation.py."""
import abc
import hashlib
import os
import time

import torch

from dendritic_experiment.checkpoint import Checkpoint, EpochLog
from dendritic_experiment.models import build_model
from dendritic_experiment.train import (evaluate, final_test, network_group, steps_per_epoch, train_one_epoch,
                                        warmup_cosine)
from dendritic_experiment.utils import ExperimentError, save_torch


def train_run(run, run_name, run_dir, cache_key):
    """Train run to completion (resuming from run_dir/checkpoint.pt when it fits); save model.pt and the
    test predictions. Returns the run's result."""
    setup = run.setup
    checkpoint = Checkpoint(run_dir, run_name, cache_key, setup.device, setup.settings.checkpoint_seconds)
    log = EpochLog(run_dir, run_name)
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
    return dict(result, test_accuracy=test_accuracy, epochs_trained=epoch, seconds=seconds)


def train_epoch(run, run_name, epoch, scaler, checkpoint):
    """One epoch of any run. Returns (the history row, whether the model was restructured)."""
    setup, data, started = run.setup, run.data, time.time()
    run.begin_epoch(epoch)
    scaler = run.epoch_scaler(scaler)
    lr = network_group(run.optimizer)["lr"]  # a dendritic run's dendrites have a group of their own
    metrics = train_one_epoch(run.model, data.train_images, data.train_labels, run.optimizer, setup, scaler,
                              run.batch_scheduler, f"{run_name} {run.progress(epoch)}", run.epoch_generator(epoch))
    check_finite(metrics, run_name, epoch, setup, checkpoint)
    val = evaluate(run.model, data.val_images, data.val_labels, setup)
    row = dict(epoch=epoch, **metrics, val_loss=val["loss"], val_accuracy=val["accuracy"], lr=lr, **run.columns())
    restructured = run.end_epoch(epoch, val["accuracy"], metrics["train_accuracy"])
    return dict(row, seconds=time.time() - started), restructured


def check_finite(metrics, run_name, epoch, setup, checkpoint):
    """Stop a run whose loss went NaN or infinite; its last checkpoint (of a good epoch) stays. The advice
    says what it costs: a changed setting of the run's identity starts it over."""
    step = metrics.pop("first_bad_step")
    if step >= 0:
        kept = (f"its checkpoint of epoch {checkpoint.epoch} is kept, and resumes it only with these settings"
                if checkpoint.epoch else "no checkpoint was saved")
        fp32 = f" or --precision fp32 (now {setup.precision})" if setup.precision != "fp32" else ""
        raise ExperimentError(
            f"{run_name}: the training loss became {metrics['train_loss']} at epoch {epoch}, step {step}; {kept}. "
            f"A lower --lr (now {setup.settings.lr}){fp32} trains the run again from its start"
        )


class Run(abc.ABC):
    """One training run: how it starts, its model, optimizer and schedule, what happens around each epoch and when it
    is complete; train_run does the rest. It calls start() or resume(), then per epoch begin_epoch(), trains,
    validates and calls end_epoch(), until self.complete; close() always comes last."""

    batch_scheduler = None  # a schedule stepped after every batch (the baseline's), else None
    complete = False  # set by end_epoch when the run has trained its last epoch
    data_stream = "continuation"  # whose batches: a dendritic run and its control share theirs

    def __init__(self, model_name, data, setup, seed):
        self.model_name, self.data, self.setup, self.seed = model_name, data, setup, seed
        self.settings = setup.settings

    def new_model(self, weights=None):
        """The run's architecture, drawn from its seed, optionally with weights loaded."""
        torch.manual_seed(self.seed)
        model = build_model(self.model_name, len(self.data.classes), self.settings.width)
        if weights is not None:
            model.load_state_dict(weights)
        return model

    def epoch_generator(self, epoch):
        """The random numbers of an epoch's batches (order, crops, flips, cutouts), seeded by the run's seed,
        data_stream and epoch, on the CPU whatever device trains: a run and its control share them across
        devices, nothing drawn for weights (a new dendrite's) shifts them, and a resumed epoch draws what an
        uninterrupted one would."""
        generator = torch.Generator()
        key = hashlib.sha256(f"{self.seed}/{self.data_stream}/{epoch}".encode()).digest()
        return generator.manual_seed(int.from_bytes(key[:8], "little"))

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
        """The run's result: params, dendrites, val_accuracy and epochs (of the model it reports,
        its epochs counted from the run's start), ...; the model it reports is self.model from then on."""

    def begin_epoch(self, epoch):
        """Before an epoch trains: nothing, unless a run starts a new cycle there."""

    def epoch_scaler(self, scaler):
        """The gradient scaler (fp16) this epoch's steps use."""
        return scaler

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

    data_stream = "baseline"

    def start(self):
        self.model = self.setup.place(self.new_model())
        self.optimizer = self.setup.network_optimizer(self.model, self.setup.scaled_lr)
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
                "val_accuracy": history[-1]["val_accuracy"], "epochs": len(history)}
