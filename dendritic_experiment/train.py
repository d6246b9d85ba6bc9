"""Training: one epoch, evaluation, and the two kinds of run (baseline, with dendrites).

Data stays on the device; metrics are summed there and read once per epoch, so the hot loop
has no host-device synchronisation (the progress bar reads them every REFRESH_STEPS steps,
and only when it is drawn on a terminal).
"""
import contextlib
import csv
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models import Dendrites, build_model, dendrite_modules_of, to_device
from utils import ExperimentError, prepare_batch, save_torch, write_atomic, write_csv

REFRESH_STEPS = 25


class Trainer:
    """What every step needs: device, precision, loss and batch settings."""

    def __init__(self, settings, device, precision):
        self.settings, self.device, self.precision = settings, device, precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.scaled_lr = settings.lr * settings.batch_size / 128
        self.scaled_dendrite_lr = settings.dendrite_lr * settings.batch_size / 128
        self.tracking = None  # a wandb run when --wandb-project is set
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # batch shapes never change: pick the fastest kernels once
        self._compiled = self._compiled_for = None

    def autocast(self):
        if self.autocast_dtype is None:  # fp32; also where autocast does not exist (the tests' meta device)
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def optimizer_kwargs(self, lr):
        kwargs = dict(lr=lr, momentum=self.settings.momentum, nesterov=self.settings.nesterov,
                      weight_decay=self.settings.weight_decay)
        # One kernel for the whole update; on the CPU too, so that the tests take the fused code path.
        # Not under fp16's gradient scaler: a skipped first step leaves fused SGD's momentum uninitialised.
        if self.device.type in ("cuda", "cpu") and self.precision != "fp16":
            kwargs["fused"] = True
        return kwargs

    def grad_scaler(self):
        """Loss scaling for fp16, whose gradients would underflow; bf16 and fp32 need none."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def forward_module(self, model):
        """What the training step calls: the model, or its torch.compile wrapper (one per model object:
        the tracker needs the bare model). perforatedai restructures a model in place; the wrapper's
        guards see the new modules and recompile, and the dendrite modules run eagerly (the library is
        compiled code that torch.compile cannot trace)."""
        if not self.settings.compile:
            return model
        if self._compiled_for is not model:
            self._compiled, self._compiled_for = torch.compile(model), model
        return self._compiled

    def place(self, model):
        """On the device in the chosen layout (perforatedai restructures undo channels_last)."""
        return to_device(model, self.device, self.memory_format)


def training_step(model, images, labels, optimizer, trainer, scaler):
    """Augment a uint8 batch on its device, then one optimizer step. Returns (loss, logits), unsynced."""
    settings = trainer.settings
    x = prepare_batch(images, settings.augment, settings.cutout, trainer.memory_format, settings.dataset)
    with trainer.autocast():
        logits = trainer.forward_module(model)(x)
        loss = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


def train_one_epoch(model, images, labels, optimizer, trainer, scaler, step_scheduler=None, description=""):
    """One pass over the shuffled training set. Returns {'train_loss', 'train_accuracy'}."""
    settings = trainer.settings
    model.train()
    batch_size = min(settings.batch_size, len(images))
    steps = len(images) // batch_size  # the last partial batch is dropped: equal steps, stable BN
    order = torch.randperm(len(images), device=images.device)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    first_bad_step = torch.full((), -1, device=images.device)  # kept on the device: no sync per step
    interactive = sys.stderr.isatty()
    bar = tqdm(range(steps), desc=description, leave=False, disable=not interactive, dynamic_ncols=True)
    for step in bar:
        index = order[step * batch_size:(step + 1) * batch_size]
        y = labels[index]
        loss, logits = training_step(model, images[index], y, optimizer, trainer, scaler)
        if step_scheduler is not None:
            step_scheduler.step()
        loss_sum += loss.detach().float() * len(y)
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step + 1, first_bad_step)
        correct += (logits.argmax(1) == y).sum()
        if interactive and (step + 1) % REFRESH_STEPS == 0:
            seen = (step + 1) * batch_size
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.4f}")
    seen = steps * batch_size
    return {"train_loss": loss_sum.item() / seen, "train_accuracy": 100 * correct.item() / seen,
            "first_bad_step": int(first_bad_step)}


@torch.no_grad()
def evaluate(model, images, labels, trainer, batch_size=1024):
    """Loss and accuracy (percent) over a whole split, without augmentation."""
    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    predictions = []
    for start in range(0, len(images), batch_size):
        x = prepare_batch(images[start:start + batch_size], memory_format=trainer.memory_format,
                          dataset=trainer.settings.dataset)
        y = labels[start:start + batch_size]
        with trainer.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        predictions.append(logits.argmax(1))
    predictions = torch.cat(predictions)
    accuracy = 100 * (predictions == labels).sum().item() / len(images)
    return {"loss": loss_sum.item() / len(images), "accuracy": accuracy, "predictions": predictions}


def test_once(model, data, trainer, run_dir):
    """The only place the test split is read: after training, for the report. Keeps the
    per-image predictions (test_predictions.pt) for paired comparisons between runs."""
    test = evaluate(model, data.test_images, data.test_labels, trainer)
    save_torch(os.path.join(run_dir, "test_predictions.pt"),
               {"predicted": test["predictions"].cpu().short(), "labels": data.test_labels.cpu().short()})
    return test["accuracy"]


def overfit_one_batch(model_name, data, trainer, max_steps=500, target_loss=0.05):
    """Sanity check: fit one fixed batch, without augmentation, label smoothing or weight decay.
    A loss that does not fall to near zero (below target_loss) means the model, loss or optimizer is miswired.
    Returns (first loss, last loss, steps)."""
    torch.manual_seed(trainer.settings.seed)
    model = trainer.place(build_model(model_name, len(data.classes))).train()
    optimizer = torch.optim.SGD(model.parameters(), **dict(trainer.optimizer_kwargs(0.05), weight_decay=0))
    size = min(trainer.settings.batch_size, 128, len(data.train_images))
    x = prepare_batch(data.train_images[:size], memory_format=trainer.memory_format, dataset=trainer.settings.dataset)
    y = data.train_labels[:size]
    scaler = trainer.grad_scaler()
    losses = []
    for step in tqdm(range(1, max_steps + 1), desc=f"{model_name}: one batch of {size}", leave=False,
                     disable=not sys.stderr.isatty()):
        with trainer.autocast():
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())  # a sync per step is fine here: a few hundred steps, and it decides the stop
        if losses[-1] < target_loss:
            break
    return losses[0], losses[-1], len(losses)


def warmup_cosine(total_steps, warmup_steps):
    """LR factor: linear warm-up to 1, then cosine decay to 0 at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def check_finite(metrics, run_name, epoch, trainer, checkpoint):
    """Stop a run whose loss went NaN or infinite; its last checkpoint (of a good epoch) stays."""
    step = metrics.pop("first_bad_step")
    if step >= 0:
        kept = f"the checkpoint of epoch {checkpoint.epoch} is kept" if checkpoint.epoch else "no checkpoint was saved"
        raise ExperimentError(
            f"{run_name}: the training loss became {metrics['train_loss']} at epoch {epoch}, step {step}; "
            f"{kept}. Try a lower --lr (now {trainer.settings.lr}) "
            f"or --precision fp32 (now {trainer.precision})"
        )


class Checkpoint:
    """run_dir/checkpoint.pt: all a run needs to go on after an epoch it finished.

    Written atomically, at most every every_seconds (settings.checkpoint_seconds): a ResNet-18's
    90 MB take ~0.3 s to write (measured on a CPU machine's disk), too much to pay every epoch when
    a GPU epoch takes seconds. A crash costs at most every_seconds of training plus the epoch in
    progress. Only a checkpoint from the same settings is used.
    """

    def __init__(self, run_dir, run_name, depends, device, every_seconds):
        self.path, self.run_name, self.device = os.path.join(run_dir, "checkpoint.pt"), run_name, device
        # Random state and optimizer options belong to a device type: resume only on the same kind.
        self.depends = dict(depends, device_type=device.type)
        self.every_seconds, self.saved_at, self.epoch = every_seconds, time.monotonic(), None

    def load(self):
        """The saved state (random state restored), or None to start from the beginning."""
        if not os.path.exists(self.path):
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            tqdm.write(f"{self.run_name}: {self.path} cannot be read ({type(error).__name__}); "
                       "training this run from the start", file=sys.stderr)
            return None
        if state.get("settings") != self.depends:
            tqdm.write(f"{self.run_name}: the checkpoint is from other settings; training from the start",
                       file=sys.stderr)
            return None
        tqdm.write(f"{self.run_name}: resuming after epoch {state['epoch']}", file=sys.stderr)
        self.epoch = state["epoch"]
        return state

    def restore_random_state(self, state):
        """Call last before training: building models draws random numbers too."""
        torch.set_rng_state(state["rng"]["cpu"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def due(self, force=False):
        return force or time.monotonic() - self.saved_at >= self.every_seconds

    def save(self, **state):
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        save_torch(self.path, dict(state, settings=self.depends, rng=rng))
        self.saved_at, self.epoch = time.monotonic(), state["epoch"]

    def remove(self):
        if os.path.exists(self.path):
            os.remove(self.path)


class EpochLog:
    """history.csv of a run, rewritten after every epoch, and a one-line summary per epoch."""

    def __init__(self, run_dir, run_name, tracking=None):
        self.path, self.run_name, self.rows = os.path.join(run_dir, "history.csv"), run_name, []
        self.tracking = tracking  # a wandb run, or None

    def add(self, row):
        previous_dendrites = self.rows[-1].get("dendrites", 0) if self.rows else 0
        if self.tracking and row.get("dendrites", 0) > previous_dendrites:
            self.tracking.log({"dendrite_added": row["dendrites"]}, commit=False)
        self.rows.append(row)
        write_csv(self.path, self.rows)
        if self.tracking:
            self.tracking.log(row)
        extra = f"  dendrites {row['dendrites']}" if "dendrites" in row else ""
        tqdm.write(
            f"{self.run_name} epoch {row['epoch']}: train loss {row['train_loss']:.3f} "
            f"acc {row['train_accuracy']:.2f}%  val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.2f}%  "
            f"lr {row['lr']:.4f}  {row['seconds']:.1f}s{extra}",
            file=sys.stderr,
        )


def train_baseline(run_name, model_name, data, trainer, run_dir, depends):
    """Warm-up + cosine schedule stepped per batch; the last epoch's model is the result."""
    settings = trainer.settings
    torch.manual_seed(settings.seed)
    model = trainer.place(build_model(model_name, len(data.classes)))
    optimizer = torch.optim.SGD(model.parameters(), **trainer.optimizer_kwargs(trainer.scaled_lr))
    steps_per_epoch = len(data.train_images) // min(settings.batch_size, len(data.train_images))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch)
    )
    scaler = trainer.grad_scaler()
    log = EpochLog(run_dir, run_name, trainer.tracking)
    checkpoint = Checkpoint(run_dir, run_name, depends, trainer.device, settings.checkpoint_seconds)
    parts = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
    state = checkpoint.load()
    if state:
        for name, part in parts.items():
            part.load_state_dict(state[name])
        log.rows = state["history"]
        checkpoint.restore_random_state(state)
    first_epoch, seconds = (state["epoch"] + 1, state["seconds"]) if state else (1, 0.0)
    for epoch in range(first_epoch, settings.epochs + 1):
        epoch_start = time.time()
        lr = optimizer.param_groups[0]["lr"]
        metrics = train_one_epoch(model, data.train_images, data.train_labels, optimizer, trainer, scaler,
                                  scheduler, f"{run_name} {epoch}/{settings.epochs}")
        check_finite(metrics, run_name, epoch, trainer, checkpoint)
        val = evaluate(model, data.val_images, data.val_labels, trainer)
        seconds += time.time() - epoch_start
        log.add(dict(epoch=epoch, **metrics, val_loss=val["loss"], val_accuracy=val["accuracy"], lr=lr,
                     seconds=time.time() - epoch_start))
        if checkpoint.due():
            checkpoint.save(epoch=epoch, seconds=seconds, history=log.rows,
                            **{name: part.state_dict() for name, part in parts.items()})
    save_torch(os.path.join(run_dir, "model.pt"), model.state_dict())
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "val_accuracy": log.rows[-1]["val_accuracy"],
        "test_accuracy": test_once(model, data, trainer, run_dir),
        "dendrites": 0,
        "epochs": settings.epochs,
        "seconds": seconds,
    }


def train_dendritic(run_name, model_name, data, trainer, run_dir, depends, baseline_weights=None):
    """A run the perforatedai tracker drives: it adds dendrites, judges them on validation,
    rolls back to the best model and says when to stop.

    With baseline_weights, the first (neuron-only) phase is the finished baseline: its
    validation score is reported and the first dendrite added before any training.
    """
    settings = trainer.settings
    torch.manual_seed(settings.seed)
    checkpoint = Checkpoint(run_dir, run_name, depends, trainer.device, settings.checkpoint_seconds)
    state = checkpoint.load()
    model = build_model(model_name, len(data.classes))
    if baseline_weights is not None and not state:
        model.load_state_dict(baseline_weights)
    dendrites = Dendrites(trainer.place(model), dendrite_modules_of(model_name, settings.dendrite_modules), settings,
                          run_dir, str(trainer.device), resuming=bool(state))
    model = trainer.place(dendrites.restore(state["dendrites"]) if state else dendrites.model)
    scaler = trainer.grad_scaler()
    log = EpochLog(run_dir, run_name, trainer.tracking)

    def new_cycle(first_phase):
        """Optimizer and per-epoch schedule for one cycle; the tracker steps it once per epoch."""
        length = settings.epochs if first_phase else settings.dendrite_epochs
        peak = trainer.scaled_lr if first_phase else trainer.scaled_dendrite_lr
        if settings.switch_mode == "history":
            scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau,
                         dict(mode="max", factor=0.1, patience=max(1, settings.history_epochs // 2)))
        else:
            scheduler = (torch.optim.lr_scheduler.LambdaLR, dict(lr_lambda=warmup_cosine(length, 0)))
        return dendrites.setup_optimizer(torch.optim.SGD, trainer.optimizer_kwargs(peak), *scheduler)

    if state:
        first_phase = state["first_phase"]
        optimizer, scheduler = new_cycle(first_phase)
        for name, part in dict(optimizer=optimizer, scheduler=scheduler, scaler=scaler).items():
            part.load_state_dict(state[name])
        log.rows = state["history"]
        epoch, epochs_in_cycle, seconds = state["epoch"], state["epochs_in_cycle"], state["seconds"]
        checkpoint.restore_random_state(state)
    else:
        first_phase = baseline_weights is None
        optimizer, scheduler = new_cycle(first_phase=True)  # the tracker needs one before any score
        epoch, epochs_in_cycle, seconds = 0, 0, 0.0
        if baseline_weights is not None:
            started = time.time()
            model = trainer.place(report_baseline(model, dendrites, data, trainer))
            optimizer, scheduler = new_cycle(first_phase=False)
            seconds += time.time() - started

    complete = False
    while not complete:
        epoch += 1
        epochs_in_cycle += 1
        epoch_start = time.time()
        lr = optimizer.param_groups[0]["lr"]
        metrics = train_one_epoch(model, data.train_images, data.train_labels, optimizer, trainer, scaler,
                                  description=f"{run_name} {epoch} (dendrites {dendrites.count})")
        check_finite(metrics, run_name, epoch, trainer, checkpoint)
        val = evaluate(model, data.val_images, data.val_labels, trainer)
        row = dict(epoch=epoch, **metrics, val_loss=val["loss"], val_accuracy=val["accuracy"], lr=lr,
                   dendrites=dendrites.count, params=dendrites.parameters())
        cycle_length = settings.epochs if first_phase else settings.dendrite_epochs
        model, restructured, complete = dendrites.end_epoch(val["accuracy"], metrics["train_accuracy"],
                                                            epochs_in_cycle, cycle_length)
        model = trainer.place(model)
        if restructured and not complete:
            optimizer, scheduler = new_cycle(first_phase=False)
            first_phase, epochs_in_cycle = False, 0
        seconds += time.time() - epoch_start
        log.add(dict(row, seconds=time.time() - epoch_start))
        if not complete and checkpoint.due(force=restructured):  # the library's files change at a restructure
            checkpoint.save(epoch=epoch, epochs_in_cycle=epochs_in_cycle, first_phase=first_phase, seconds=seconds,
                            history=log.rows, dendrites=dendrites.state(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict())

    keep_library_outputs(run_dir)
    save_torch(os.path.join(run_dir, "model.pt"), dendrites.state())
    val = evaluate(model, data.val_images, data.val_labels, trainer)
    dendrite_counts = [row["dendrites"] for row in log.rows]
    return {
        "params": dendrites.parameters(),
        "val_accuracy": val["accuracy"],
        "test_accuracy": test_once(model, data, trainer, run_dir),
        "dendrites": dendrites.count,
        "epochs": epoch,
        "seconds": seconds,
        "start": "baseline" if baseline_weights is not None else "scratch",
        "epochs_including_baseline": epoch + (settings.epochs if baseline_weights is not None else 0),
        # Epochs trained with each dendrite count, in order: the continued control repeats these cycles.
        "cycles": [dendrite_counts.count(n) for n in sorted(set(dendrite_counts))],
        "architectures": library_architecture_scores(run_dir),
    }


def library_architecture_scores(run_dir):
    """[(params, best validation accuracy)] per dendrite count, from the library's own table."""
    path = os.path.join(run_dir, f"{Dendrites.SAVE_NAME}_best_arch_scores.csv")
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return [(int(float(row[0])), float(row[1])) for row in rows if row]


def train_continued(run_name, model_name, data, trainer, run_dir, depends, baseline_weights, cycles):
    """The control for a warm-started dendritic run: the same baseline, trained on for the same
    cycles with the same schedule, without dendrites; like the tracker, it keeps the weights with
    the best validation accuracy (the baseline's own included)."""
    settings = trainer.settings
    torch.manual_seed(settings.seed)
    model = build_model(model_name, len(data.classes))
    model.load_state_dict(baseline_weights)
    model = trainer.place(model)
    scaler = trainer.grad_scaler()
    log = EpochLog(run_dir, run_name, trainer.tracking)
    checkpoint = Checkpoint(run_dir, run_name, depends, trainer.device, settings.checkpoint_seconds)

    def new_cycle(length):
        optimizer = torch.optim.SGD(model.parameters(), **trainer.optimizer_kwargs(trainer.scaled_dendrite_lr))
        if settings.switch_mode == "history":  # as the tracker steps it: once per epoch, on validation
            return optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.1, patience=max(1, settings.history_epochs // 2))
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(length, 0))

    plan = [(cycle, index) for cycle, length in enumerate(cycles) for index in range(1, length + 1)]
    state = checkpoint.load()
    if state:
        model.load_state_dict(state["model"])
        optimizer, scheduler = new_cycle(cycles[plan[state["epoch"] - 1][0]])
        for name, part in dict(optimizer=optimizer, scheduler=scheduler, scaler=scaler).items():
            part.load_state_dict(state[name])
        best, log.rows, epoch, seconds = state["best"], state["history"], state["epoch"], state["seconds"]
        checkpoint.restore_random_state(state)
    else:
        val = evaluate(model, data.val_images, data.val_labels, trainer)
        best = {"val_accuracy": val["accuracy"], "model": clone_state(model)}
        epoch, seconds = 0, 0.0
    for epoch in range(epoch + 1, len(plan) + 1):
        epoch_start = time.time()
        cycle, index_in_cycle = plan[epoch - 1]
        if index_in_cycle == 1:
            if cycle > 0:
                model.load_state_dict(best["model"])  # as the tracker rolls back at every switch
            optimizer, scheduler = new_cycle(cycles[cycle])
        lr = optimizer.param_groups[0]["lr"]
        metrics = train_one_epoch(model, data.train_images, data.train_labels, optimizer, trainer, scaler,
                                  description=f"{run_name} {epoch}/{sum(cycles)}")
        check_finite(metrics, run_name, epoch, trainer, checkpoint)
        val = evaluate(model, data.val_images, data.val_labels, trainer)
        if settings.switch_mode == "history":
            scheduler.step(val["accuracy"])
        else:
            scheduler.step()
        if val["accuracy"] > best["val_accuracy"]:
            best = {"val_accuracy": val["accuracy"], "model": clone_state(model)}
        seconds += time.time() - epoch_start
        log.add(dict(epoch=epoch, **metrics, val_loss=val["loss"], val_accuracy=val["accuracy"], lr=lr,
                     seconds=time.time() - epoch_start))
        if checkpoint.due():
            checkpoint.save(epoch=epoch, seconds=seconds, history=log.rows, best=best,
                            model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict())
    model.load_state_dict(best["model"])
    save_torch(os.path.join(run_dir, "model.pt"), model.state_dict())
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "val_accuracy": best["val_accuracy"],
        "test_accuracy": test_once(model, data, trainer, run_dir),
        "dendrites": 0,
        "epochs": sum(cycles),
        "seconds": seconds,
        "start": "baseline",
        "epochs_including_baseline": sum(cycles) + settings.epochs,
    }


def clone_state(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def report_baseline(model, dendrites, data, trainer):
    """Give the tracker the finished baseline's scores as its first phase; it adds the first dendrite."""
    # The library learns tensor shapes from one backward pass; eval mode leaves BN statistics alone.
    model.eval()
    x = prepare_batch(data.train_images[:2], memory_format=trainer.memory_format, dataset=trainer.settings.dataset)
    F.cross_entropy(model(x), data.train_labels[:2]).backward()
    model.zero_grad(set_to_none=True)
    train = evaluate(model, data.train_images, data.train_labels, trainer)
    val = evaluate(model, data.val_images, data.val_labels, trainer)
    model, _, _ = dendrites.report_baseline(val["accuracy"], train["accuracy"])
    return model


def keep_library_outputs(run_dir):
    """Copy the library's final growth graph and CSVs from its folder into the run folder."""
    library_dir = os.path.join(run_dir, Dendrites.SAVE_NAME)
    for name in os.listdir(library_dir):
        final = name.startswith(Dendrites.SAVE_NAME) and "before" not in name and "noImprove" not in name
        if final and name.endswith((".png", ".csv")):
            with open(os.path.join(library_dir, name), "rb") as f:
                write_atomic(os.path.join(run_dir, name), f.read())
