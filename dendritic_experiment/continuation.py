"""The runs that continue a finished baseline: DendriticRun (perforatedai's tracker adds dendrites, judges them on
validation, ends the run) and ContinuedRun, its control, which differs in the dendrites only (docs/method.md, "The
control"; its A/A check: tests/test_control.py): the same batches (Run.epoch_generator), learning rates (replayed),
keep rule (keep_rule.KeepRule) and warm-up (network_frozen)."""
import torch

from dendritic_experiment.contribution import contribution
from dendritic_experiment.data import prepare_batch
from dendritic_experiment.dendrites import (DendriteTracker, architecture_scores, copy_library_outputs, dendrite_method,
                                            library_version)
from dendritic_experiment.keep_rule import KeepRule
from dendritic_experiment.models import dendrite_modules_of
from dendritic_experiment.runs import Run
from dendritic_experiment.train import evaluate, network_group, warmup_cosine

CONTRIBUTION_IMAGES = 256  # validation images on which a dendritic run measures what its dendrites add


def cycle_schedule(settings, length):
    """(scheduler class, its arguments) for one dendrite cycle of `length` epochs, stepped once per
    epoch by the tracker: a cosine from the cycle's peak in fixed mode; in history mode a tenth of
    the learning rate whenever validation stalls. The control replays the rates this gave."""
    if settings.switch_mode == "history":
        return torch.optim.lr_scheduler.ReduceLROnPlateau, dict(
            mode="max", factor=0.1, patience=max(1, settings.history_epochs // 2))
    return torch.optim.lr_scheduler.LambdaLR, dict(lr_lambda=warmup_cosine(length, 0))


def network_frozen(settings, epoch_in_cycle):
    """Whether the network's own parameters stay frozen in this epoch (1 = the first) of a dendrite cycle:
    its first dendrite_warmup_epochs train the new dendrite alone (the control, with none, runs the batches)."""
    return epoch_in_cycle <= settings.dendrite_warmup_epochs


class DendriticRun(Run):
    """A run perforatedai's tracker drives. With baseline_weights, the first (neuron-only) phase is the
    finished baseline: its validation score is reported and the first dendrite added before any training."""

    def __init__(self, model_name, data, setup, seed, run_dir, baseline_weights=None):
        super().__init__(model_name, data, setup, seed)
        self.run_dir, self.baseline_weights = run_dir, baseline_weights
        self.first_phase, self.epochs_in_cycle = baseline_weights is None, 0
        self.keep = KeepRule(self.settings)  # which cycles the tracker keeps, and which epoch's model
        self.warming_up, self.warmup_scaler = False, None

    def convert(self, weights, resuming):
        model = self.setup.place(self.new_model(weights))
        modules = dendrite_modules_of(self.model_name, self.settings.dendrite_modules)
        self.dendrites = DendriteTracker(model, modules, self.settings, self.run_dir, str(self.setup.device), resuming)
        self.model = self.setup.place(self.dendrites.model)
        self.plain_params = self.dendrites.parameter_count()  # before any dendrite: what one costs is measured from it
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
        self.keep = KeepRule(self.settings, start_val_accuracy=val["accuracy"])

    def resume(self, state, epoch):
        self.convert(None, resuming=True)
        self.model = self.setup.place(self.dendrites.restore(state["dendrites"]))
        self.dendrites.restore_best_model_file(state["best_model_file"])
        self.first_phase, self.epochs_in_cycle = state["first_phase"], state["epochs_in_cycle"]
        self.keep.load_state_dict(state["keep"])
        self.new_cycle(self.first_phase)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["warmup_scaler"] is not None:
            self.warmup_scaler = self.setup.grad_scaler()
            self.warmup_scaler.load_state_dict(state["warmup_scaler"])

    def cycle_length(self, first_phase):
        """Epochs of the neuron-only first phase (from scratch), or of a dendrite's cycle."""
        return self.settings.epochs if first_phase else self.settings.dendrite_epochs

    def begin_epoch(self, epoch):
        """During a dendrite warm-up (network_frozen) the optimizer's group "network" gets no gradient;
        BatchNorm's running statistics still follow the batches. setup_optimizer unfreezes it at a rebuild."""
        self.warming_up = not self.first_phase and network_frozen(self.settings, self.epochs_in_cycle + 1)
        for parameter in network_group(self.optimizer)["params"]:
            parameter.requires_grad_(not self.warming_up)

    def epoch_scaler(self, scaler):
        """A warm-up's steps scale their loss with a copy of the run's scaler, made at its first epoch:
        the dendrites' steps still back off on an overflow, and the run's own scaler comes out of the
        warm-up as the frozen control's does, which takes no step then (fp16)."""
        if not self.warming_up:
            self.warmup_scaler = None
            return scaler
        if self.warmup_scaler is None:
            self.warmup_scaler = self.setup.grad_scaler()
            self.warmup_scaler.load_state_dict(scaler.state_dict())
        return self.warmup_scaler

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
        dendrites = self.dendrites.dendrite_count
        self.keep.add(epoch, val_accuracy, dendrites)
        model, restructured, self.complete = self.dendrites.end_epoch(
            val_accuracy, train_accuracy, self.epochs_in_cycle, self.cycle_length(self.first_phase))
        if restructured or self.complete:  # the cycle ended: the tracker removed its dendrite, or kept it
            self.keep.end_cycle(library_kept=self.dendrites.dendrite_count >= dendrites)
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
                "scheduler": self.scheduler.state_dict(), "keep": self.keep.state_dict(),
                "best_model_file": self.dendrites.best_model_file(),
                "warmup_scaler": self.warmup_scaler.state_dict() if self.warmup_scaler else None}

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
            "epochs": self.keep.kept_epoch,
            "epochs_including_baseline": self.keep.kept_epoch + (self.settings.epochs if warm else 0),
            # Epochs trained with each dendrite count, in order, and the network's learning rate in each
            # epoch: the continued control repeats these cycles at these rates.
            "cycles": [dendrite_counts.count(n) for n in sorted(set(dendrite_counts))],
            "lrs": [row["lr"] for row in history],
            # What the first dendrite added, kept or not: on every module of dendrite_modules, a copy and its scales.
            "params_per_dendrite": next((int(row["params"]) - self.plain_params for row in history if row["dendrites"] == 1), 0),
            "architectures": architecture_scores(self.run_dir, self.settings),
            "contribution": self.contribution(),  # of the dendrites kept
            "library": library_version(),
            "method": dendrite_method(),  # the library's own flag, at the end of the run
        }


def prepare_sample(data, setup, size=2):
    """A few training images, prepared as evaluation prepares them, with their labels."""
    images = prepare_batch(data.train_images[:size], memory_format=setup.memory_format, dataset=setup.settings.dataset)
    return images, data.train_labels[:size]


class ContinuedRun(Run):
    """The control for a warm-started dendritic run: the baseline trained on for the dendritic run's cycles
    at its learning rates (lrs, replayed: in history mode too the schedules are one), without dendrites.
    Each cycle is scored as if it had the dendritic run's dendrites (one per cycle); at every cycle's start
    it goes back to the model kept, as the tracker does at a switch, and after a cycle not kept it stops."""

    def __init__(self, model_name, data, setup, seed, baseline_weights, cycles, lrs):
        super().__init__(model_name, data, setup, seed)
        self.baseline_weights, self.cycles, self.lrs = baseline_weights, cycles, lrs
        # (cycle, epoch within it) of every epoch, numbered from 1
        self.plan = [(cycle, index) for cycle, length in enumerate(cycles) for index in range(1, length + 1)]
        if len(lrs) != len(self.plan):
            raise ValueError(f"{len(lrs)} learning rates for the {len(self.plan)} epochs of cycles {cycles}")

    def start(self):
        self.model = self.setup.place(self.new_model(self.baseline_weights))
        val = evaluate(self.model, self.data.val_images, self.data.val_labels, self.setup)
        self.keep = KeepRule(self.settings, start_val_accuracy=val["accuracy"])
        self.kept_model, self.cycle_best_model = clone_state(self.model), None

    def resume(self, state, epoch):
        self.model = self.setup.place(self.new_model(state["model"]))
        self.new_cycle()
        self.optimizer.load_state_dict(state["optimizer"])
        self.keep = KeepRule(self.settings)
        self.keep.load_state_dict(state["keep"])
        self.kept_model, self.cycle_best_model = state["kept_model"], state["cycle_best_model"]

    def new_cycle(self):
        """A new optimizer (momentum from zero), as the tracker's rebuild gives the dendritic run."""
        self.optimizer = self.setup.network_optimizer(self.model, self.setup.scaled_dendrite_lr)

    def begin_epoch(self, epoch):
        cycle, index_in_cycle = self.plan[epoch - 1]
        if index_in_cycle == 1:
            if cycle > 0:
                self.model.load_state_dict(self.kept_model)  # as the tracker rolls back at every switch
            self.new_cycle()
        network_group(self.optimizer)["lr"] = self.lrs[epoch - 1]
        # Frozen as the dendritic run's network is (BatchNorm's statistics follow the batches in both).
        for parameter in self.model.parameters():
            parameter.requires_grad_(not network_frozen(self.settings, index_in_cycle))

    def progress(self, epoch):
        return f"{epoch}/{len(self.plan)}"

    def end_epoch(self, epoch, val_accuracy, train_accuracy):
        cycle, index_in_cycle = self.plan[epoch - 1]
        if self.keep.add(epoch, val_accuracy, dendrites=cycle + 1):  # the dendritic run's cycle has cycle + 1
            self.cycle_best_model = clone_state(self.model)
        if index_in_cycle == self.cycles[cycle]:  # the cycle's last epoch
            if self.keep.end_cycle():
                self.kept_model = self.cycle_best_model
            else:
                self.complete = True  # rolls back and stops, as the dendritic run does
        self.complete = self.complete or epoch == len(self.plan)
        return False

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "keep": self.keep.state_dict(), "kept_model": self.kept_model,
                "cycle_best_model": self.cycle_best_model}

    def result(self, history):
        self.model.load_state_dict(self.kept_model)
        val = evaluate(self.model, self.data.val_images, self.data.val_labels, self.setup)
        return {"params": sum(p.numel() for p in self.model.parameters()), "dendrites": 0,
                "val_accuracy": val["accuracy"], "start": "baseline", "epochs": self.keep.kept_epoch,
                "epochs_including_baseline": self.keep.kept_epoch + self.settings.epochs}


def clone_state(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
