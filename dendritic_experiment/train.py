"""Training steps: one optimizer step, one epoch, evaluation, the final test, the one-batch check;
runs.py strings epochs into the three kinds of run. Data stays on the device and metrics are summed
there, read once per epoch, so the hot loop has no host-device synchronisation."""
import contextlib
import math
import os
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dendritic_experiment.data import epoch_draws, prepare_batch
from dendritic_experiment.dendrites import to_device
from dendritic_experiment.models import build_model
from dendritic_experiment.utils import save_torch

REFRESH_STEPS = 25  # how often the progress bar, drawn only on a terminal, reads the metrics


class TrainingSetup:
    """What every step needs and no run changes: the settings, device, precision and memory layout."""

    def __init__(self, settings, device, precision):
        self.settings, self.device, self.precision = settings, device, precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.scaled_lr = settings.lr * settings.batch_size / 128
        self.scaled_dendrite_lr = settings.dendrite_lr * settings.batch_size / 128
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

    def network_optimizer(self, model, lr):
        """SGD over all of model's parameters, in one group named "network" (a dendritic run's
        optimizer has that group too, beside its "dendrites": network_group finds it by name)."""
        return torch.optim.SGD([dict(name="network", params=list(model.parameters()))], **self.optimizer_kwargs(lr))

    def grad_scaler(self):
        """Loss scaling for fp16, whose gradients would underflow; bf16 and fp32 need none."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def forward_module(self, model):
        """The model, or its torch.compile wrapper (one per model object: the tracker needs the bare
        model). When perforatedai restructures the model in place, the wrapper's guards recompile; the
        dendrite modules run eagerly (the library is compiled code that torch.compile cannot trace)."""
        if not self.settings.compile:
            return model
        if self._compiled_for is not model:
            self._compiled, self._compiled_for = torch.compile(model), model
        return self._compiled

    def place(self, model):
        """On the device in the chosen layout (perforatedai restructures undo channels_last)."""
        if self.memory_format == torch.channels_last and self.device.type == "cpu" and crashes_in_channels_last(model):
            print("channels_last is off for this run: on the CPU, torch crashes (double free) in the backward of a "
                  "1x1 stride-2 convolution with fewer than 8 input channels in that layout", file=sys.stderr)
            self.memory_format = torch.contiguous_format  # the same numbers (identity.NOT_RESULT_SETTINGS)
        return to_device(model, self.device, self.memory_format)


def crashes_in_channels_last(model):
    """Whether model has a 1x1 strided convolution with fewer than 8 input channels, whose CPU backward
    in channels_last frees memory twice in torch 2.14.1 (an abort or a segfault): a ResNet's layer1
    projection shortcut at --width x multiple < 0.125."""
    return any(isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.stride != (1, 1)
               and module.in_channels < 8 for module in model.modules())


def training_step(model, images, labels, optimizer, setup, scaler, draws=None):
    """Augment a uint8 batch on its device (draws: data.augmentation_draws there; None: drawn now), then
    one optimizer step. Returns (loss, logits), unsynced."""
    settings = setup.settings
    x = prepare_batch(images, settings.augment, settings.cutout, setup.memory_format, settings.dataset, draws=draws)
    with setup.autocast():
        logits = setup.forward_module(model)(x)
        loss = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
    # Else every parameter is frozen (a control's dendrite warm-up): the forward only, and the scaler left
    # as it is, as the dendritic run's is (its warm-up scales with a copy: DendriticRun.epoch_scaler).
    if loss.requires_grad:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss, logits


def network_group(optimizer):
    """The optimizer's parameter group named "network" (every optimizer here names its groups)."""
    for group in optimizer.param_groups:
        if group.get("name") == "network":
            return group
    names = [group.get("name") for group in optimizer.param_groups]
    raise KeyError(f"the optimizer has no parameter group named 'network', only {names}")


def steps_per_epoch(num_images, batch_size):
    """Whole batches only: the last partial batch is dropped (equal steps, stable BatchNorm)."""
    return num_images // min(batch_size, num_images)


def train_one_epoch(model, images, labels, optimizer, setup, scaler, batch_scheduler=None, description="",
                    generator=None):
    """One pass over the shuffled training set, batch_scheduler stepped after every batch, its random numbers drawn
    at the start from generator (a CPU one; None: the global one; data.epoch_draws). Returns {'train_loss',
    'train_accuracy', 'first_bad_step'}: the first step whose loss was not finite, 1-based; -1 when none."""
    batch_size = min(setup.settings.batch_size, len(images))
    steps = steps_per_epoch(len(images), batch_size)
    model.train()
    order, draws = epoch_draws(images, batch_size, steps, setup.settings.augment, setup.settings.cutout, generator)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    first_bad_step = torch.full((), -1, device=images.device)  # kept on the device: no sync per step
    interactive = sys.stderr.isatty()
    bar = tqdm(range(steps), desc=description, leave=False, disable=not interactive, dynamic_ncols=True)
    for step in bar:
        batch = slice(step * batch_size, (step + 1) * batch_size)
        index = order[batch]
        y = labels[index]
        loss, logits = training_step(model, images[index], y, optimizer, setup, scaler,
                                     {key: value[batch] for key, value in draws.items()})
        if batch_scheduler is not None:
            batch_scheduler.step()
        loss_sum += loss.detach().float() * len(y)
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step + 1, first_bad_step)
        correct += (logits.argmax(1) == y).sum()
        if interactive and (step + 1) % REFRESH_STEPS == 0:
            seen = (step + 1) * batch_size
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}",
                            lr=f"{network_group(optimizer)['lr']:.4f}")
    seen = steps * batch_size
    return {"train_loss": loss_sum.item() / seen, "train_accuracy": 100 * correct.item() / seen,
            "first_bad_step": int(first_bad_step)}


@torch.no_grad()
def evaluate(model, images, labels, setup, batch_size=1024):
    """Loss and accuracy (percent) over a whole split, without augmentation. The loss is the
    training loss's definition (with its label smoothing), so that the two compare."""
    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    predictions = []
    for start in range(0, len(images), batch_size):
        x = prepare_batch(images[start:start + batch_size], memory_format=setup.memory_format,
                          dataset=setup.settings.dataset)
        y = labels[start:start + batch_size]
        with setup.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=setup.settings.label_smoothing)
        predictions.append(logits.argmax(1))
    predictions = torch.cat(predictions)
    accuracy = 100 * (predictions == labels).sum().item() / len(images)
    return {"loss": loss_sum.item() / len(images), "accuracy": accuracy, "predictions": predictions}


def final_test(model, data, setup, run_dir):
    """The only place the test split is read: once, after training, for the report. Keeps the
    per-image predictions (test_predictions.pt) for paired comparisons between runs."""
    test = evaluate(model, data.test_images, data.test_labels, setup)
    save_torch(os.path.join(run_dir, "test_predictions.pt"),
               {"predicted": test["predictions"].cpu().short(), "labels": data.test_labels.cpu().short()})
    return test["accuracy"]


def overfit_one_batch(model_name, data, setup, seed, max_steps=500, target_loss=0.05):
    """Sanity check: fit one fixed batch, without augmentation, label smoothing or weight decay; a loss that does not
    fall below target_loss means the model, loss or optimizer is miswired. Returns (first loss, last loss, steps)."""
    torch.manual_seed(seed)
    model = setup.place(build_model(model_name, len(data.classes), setup.settings.width)).train()
    optimizer = torch.optim.SGD(model.parameters(), **dict(setup.optimizer_kwargs(0.05), weight_decay=0))
    size = min(setup.settings.batch_size, 128, len(data.train_images))
    x = prepare_batch(data.train_images[:size], memory_format=setup.memory_format, dataset=setup.settings.dataset)
    y = data.train_labels[:size]
    scaler = setup.grad_scaler()
    losses = []
    for step in tqdm(range(1, max_steps + 1), desc=f"{model_name}: one batch of {size}", leave=False,
                     disable=not sys.stderr.isatty()):
        with setup.autocast():
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
