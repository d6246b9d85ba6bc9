"""What a run leaves on disk while it trains: its resume checkpoint (Checkpoint) and its history.csv (EpochLog)."""
import os
import sys
import time

import torch
from tqdm import tqdm

from dendritic_experiment.utils import save_torch, write_csv

CHECKPOINT_FORMAT = 4  # a checkpoint of another layout is ignored, not misread


class Checkpoint:
    """run_dir/checkpoint.pt: all a run needs to go on after an epoch it finished, used only with the same settings.
    Written at most every every_seconds: a ResNet-18's 90 MB take ~0.3 s (a CPU machine's disk), too much for every
    epoch when a GPU epoch takes seconds. A crash costs at most every_seconds of training plus the epoch in progress."""

    def __init__(self, run_dir, run_name, cache_key, device, every_seconds):
        self.path, self.run_name, self.device = os.path.join(run_dir, "checkpoint.pt"), run_name, device
        # Random state and optimizer options belong to a device type: resume only on the same kind.
        self.settings = dict(cache_key, device_type=device.type, checkpoint_format=CHECKPOINT_FORMAT)
        self.every_seconds, self.saved_at, self.epoch = every_seconds, time.monotonic(), None

    def load(self):
        """The saved state, or None to start from the beginning."""
        if not os.path.exists(self.path):
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            tqdm.write(f"{self.run_name}: {self.path} cannot be read ({type(error).__name__}); "
                       "training this run from the start", file=sys.stderr)
            return None
        if state.get("settings") != self.settings:
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
        save_torch(self.path, dict(state, settings=self.settings, rng=rng))
        self.saved_at, self.epoch = time.monotonic(), state["epoch"]


class EpochLog:
    """run_dir/history.csv, rewritten after every epoch, and a line per epoch on stderr."""

    def __init__(self, run_dir, run_name):
        self.path, self.run_name, self.rows = os.path.join(run_dir, "history.csv"), run_name, []

    def add(self, row):
        self.rows.append(row)
        write_csv(self.path, self.rows)
        extra = (f"  dendrites {row['dendrites']} ({row['dendrite_share']:.3%} of their layers' output variance)"
                 if "dendrites" in row else "")
        tqdm.write(
            f"{self.run_name} epoch {row['epoch']}: train loss {row['train_loss']:.3f} "
            f"acc {row['train_accuracy']:.2f}%  val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.2f}%  "
            f"lr {row['lr']:.4f}  {row['seconds']:.1f}s{extra}",
            file=sys.stderr,
        )
