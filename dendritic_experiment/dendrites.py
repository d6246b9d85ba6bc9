"""Everything that knows about perforatedai, the dendrite library: converting a model, its tracker, its process-wide
state, its buffers and its files; the baseline path never imports it. What a dendrite is, and why it is used so here:
docs/method.md, "The dendrites". Each internal of perforatedai 3.2.9 relied on is noted where it is used (found by
running the library on a CPU; tests/test_library.py checks each by name)."""
import contextlib
import csv
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import warnings

import torch
import torch.nn.functional as F

from dendritic_experiment import keep_rule
from dendritic_experiment.utils import ExperimentError, new_file_mode, write_atomic

SAVE_NAME = "PAI"  # the library's folder inside the run folder, and the prefix of its files
GRADIENT_DESCENT = "gradient-descent dendrites (perforatedai, open source)"
PERFORATED_BACKPROPAGATION = "Perforated Backpropagation (perforatedbp)"
PB_SWITCHED_OFF = ("perforatedbp {version} is installed, and perforatedai switches itself to Perforated Backpropagation "
                   "when imported; this project trains gradient-descent dendrites, which it was built and tested "
                   "for: it switches Perforated Backpropagation off for every run, and stops a run that finds it on "
                   "(docs/method.md)")
PB_FOUND_ON = ("perforatedai runs Perforated Backpropagation although this project switched it off before converting "
               "the model; it trains gradient-descent dendrites only (docs/method.md), so the run stops: remove any "
               "PAI config file that switches it on, or uninstall perforatedbp")
ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}  # a dendrite's output function
# The trained parameters of dendrites, in a wrapped <module>: the output scales <module>.dendrites_to_top.<k>, the
# copies <module>.dendrite_module.layers.<i>.* and the weights <module>.dendrite_module.dendrites_to_dendrites.<k>.
# Not matched: <module>.dendrite_module.parent_module.*, the hidden copy, never in a forward, never a gradient.
DENDRITE_PARAMETER = re.compile(r"\.(dendrites_to_top\.\d+|dendrite_module\.(layers\.\d+\..+|dendrites_to_dendrites\.\d+))$")


class LibraryInUse(RuntimeError):
    """A second live tracker in one process: perforatedai keeps one, and it would be replaced."""


class DendriteTracker:
    """perforatedai's tracker behind the few calls a training loop needs, and the owner of the library's process-wide
    state while a run uses it (close it, or use it as a context manager): one configuration (`GPA.pc`), one tracker
    (`GPA.pai_tracker`, made by `perforate_model`), files in ./<SAVE_NAME>/ of the current directory. A second live
    tracker would silently replace the first one's, so it is refused. Fixed mode: the tracker never switches itself
    (DOING_NO_SWITCH); we force a switch at the end of every dendrite_epochs cycle. History mode: it switches when
    validation has not improved for history_epochs epochs. Either way the tracker decides whether a dendrite helped,
    rolls back to the best model on validation, and says when training is complete."""

    live = None  # the one DendriteTracker of this process whose tracker is in use

    def __init__(self, model, module_names, settings, run_dir, device, resuming=False):
        if DendriteTracker.live is not None:
            raise LibraryInUse(f"perforatedai keeps one tracker per process and one is in use (for "
                               f"{DendriteTracker.live.run_dir}): close it first, or load this model in another process")
        GPA, UPA = library()
        self.GPA, self.UPA, self.run_dir, self.settings = GPA, UPA, run_dir, settings
        self.fixed_cycles = settings.switch_mode == "fixed"
        for name in module_names:
            module = model.get_submodule(name)
            parent_name, _, child = name.rpartition(".")
            # A BatchNorm beside a wrapped convolution stops the library in its debugger ("norm layer not accounted
            # for"), so a conv+bn pair (models.ConvBN, a Sequential) is wrapped whole, as one PAISequential; a linear
            # layer alone (the library finds its output's layout itself); a residual block whole: the library converts
            # a wrapped module as one unit without looking inside (its norm layers need nothing), so the dendrite copies
            # the block and its shortcut, and adds to its output after its last ReLU, as in the authors' ResNet example.
            parts = list(module) if isinstance(module, torch.nn.Sequential) else [module]
            setattr(model.get_submodule(parent_name), child, GPA.PAISequential(parts))
        configure(library_settings(), settings, device)
        os.makedirs(run_dir, exist_ok=True)
        if not resuming:
            # A leftover <save_name>_config.json would silently override the settings above.
            shutil.rmtree(library_folder(run_dir), ignore_errors=True)
        with self.library_call():
            self.model = UPA.perforate_model(
                # Drawing the graph at every score costs about 1.1 s per epoch (measured, ResNet-18 on a
                # CPU machine), more than a GPU epoch should take: draw_graphs draws it once, at the end.
                model, save_name=SAVE_NAME, making_graphs=False, maximizing_score=True
            )
        self.tracker = GPA.pai_tracker
        DendriteTracker.live = self

    def close(self):
        """The library's state is free for another run (the model keeps working)."""
        if DendriteTracker.live is self:
            DendriteTracker.live = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @contextlib.contextmanager
    def library_call(self):
        """Around every call into the library: it writes to ./PAI/ of the current directory (so that is
        the run's), prints to stdout (the results table's, so to stderr here), and steps the scheduler at a
        switch before any optimizer step, also at a warm start (PyTorch's warning about that order is
        expected, and silenced here only). Before and after, the run must be gradient descent."""
        require_gradient_descent()
        previous = os.getcwd()
        os.chdir(self.run_dir)
        try:
            with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
                yield
            require_gradient_descent()
        finally:
            os.chdir(previous)

    def setup_optimizer(self, optimizer_class, optimizer_kwargs, scheduler_class, scheduler_kwargs):
        """(optimizer, scheduler), new for the current architecture (after every restructure). The
        dendrites' parameters form the group "dendrites" (dendrite_lr_multiplier times the learning rate,
        dendrite_weight_decay), the rest the group "network", last: the library records "the" learning rate
        from the last group, so groups are found by name, never by position. The library drops every
        parameter that needs no gradient (and a group left empty), so all are made trainable first: a switch
        can come during a dendrite warm-up, and the frozen network would never train again."""
        self.tracker.set_optimizer(optimizer_class)
        self.tracker.set_scheduler(scheduler_class)
        dendrite, network = [], []
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(True)
            (dendrite if DENDRITE_PARAMETER.search(name) else network).append(parameter)
        groups = [dict(name="dendrites", params=dendrite, lr=optimizer_kwargs["lr"] * self.settings.dendrite_lr_multiplier,
                       weight_decay=self.settings.dendrite_weight_decay),
                  dict(name="network", params=network)]
        with self.library_call():
            return self.tracker.setup_optimizer(self.model, dict(optimizer_kwargs, params=groups), scheduler_kwargs)

    def learn_shapes(self, images, labels):
        """The library learns its tensor shapes from one backward pass; eval mode leaves the
        BatchNorm statistics alone. Needed before a score is reported on an untrained step."""
        self.model.eval()
        F.cross_entropy(self.model(images), labels).backward()
        self.model.zero_grad(set_to_none=True)

    def end_epoch(self, val_accuracy, train_accuracy, epochs_in_cycle, cycle_length=0, force_switch=False):
        """Report one epoch; in fixed mode a cycle ends (a switch) after cycle_length epochs. Returns the
        library's (model, restructured, complete): always use that model, rebuild optimizer and scheduler
        after a restructure, stop when complete. The tracker steps the scheduler itself, once per call, and
        rolls back to the best model at every switch; on every new best it saves the whole model
        (best_model.pt), which makes every parameter contiguous (channels_last is lost). It sees the keep
        rule's score (keep_rule.score), so that it decides as the rule does; architecture_scores undoes it."""
        force_switch = force_switch or (self.fixed_cycles and epochs_in_cycle >= cycle_length)
        self.tracker.add_extra_score(train_accuracy, "Train")
        score = keep_rule.score(val_accuracy, self.dendrite_count, self.settings)
        with self.library_call():
            model, restructured, complete = self.tracker.add_validation_score(score, self.model, force_switch=force_switch)
        self.model = model
        if complete:  # where the library draws it itself (mid-run its records can be between states)
            self.draw_graphs()
        return model, bool(restructured), bool(complete)

    def start_from_baseline(self, val_accuracy, train_accuracy):
        """A finished baseline's scores as the whole first phase; the tracker adds the first dendrite.
        The library counts a first validation score as the best to beat only with more than
        initial_history_after_switches epochs since a switch; a warm start reports the baseline once, so
        for that call the setting is -1 (else the first dendrite would be kept even when it made validation
        worse), and at once 0 again, because setup_optimizer steps the new scheduler by it."""
        self.GPA.pc.set_initial_history_after_switches(-1)
        try:
            return self.end_epoch(val_accuracy, train_accuracy, 0, force_switch=True)
        finally:
            self.GPA.pc.set_initial_history_after_switches(0)

    def draw_graphs(self):
        """The library's growth graph (<run_dir>/PAI/PAI.png) and its CSVs, from its records: at the end,
        every epoch up to the kept model's (completing, the tracker reloads that model's records)."""
        self.tracker.making_graphs = True
        try:
            with self.library_call():
                self.tracker.save_graphs()
        finally:
            self.tracker.making_graphs = False

    def checkpoint_state(self):
        """Model weights (dendrites included) and the tracker's whole history, for a checkpoint."""
        return {"model": self.model.state_dict(), "tracker": self.tracker.to_string()}

    def best_model_file(self):
        """The bytes of <run_dir>/PAI/best_model.pt, or None before the library wrote one. The tracker reloads it at
        every switch, so a checkpoint carries it: else a resumed run could roll back to a model it never scored."""
        path = os.path.join(library_folder(self.run_dir), "best_model.pt")
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)

    def restore_best_model_file(self, contents):
        """Put back the best-model file a checkpoint carried, whatever is there now: after a crash the folder can
        hold a newer best that the resumed run never scored."""
        path = os.path.join(library_folder(self.run_dir), "best_model.pt")
        if contents is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        else:
            write_atomic(path, contents.numpy().tobytes())

    def restore(self, state):
        """Undo checkpoint_state() into this model, freshly converted with the same settings; returns the model.
        UPA.load_net_from_dict, as a plain load_state_dict fails (the dendrites do not exist yet); a state that does
        not fit stops in the debugger. A wrapped module learns its output shape in its first backward, by a hook that
        reads a flag from the device (`current_d_init.item()`) until a Python flag, `_fb_init_done`, removes it. A
        restore brings back the device flag only: set the Python one, or every backward would wait for the device."""
        self.model = self.UPA.load_net_from_dict(self.model, state["model"])
        self.tracker.reset_module_vector(self.model, True)
        self.tracker.from_string(state["tracker"])
        for module in wrapped_modules(self.model):
            if bool(module.dendrite_module.dendrite_values[0].current_d_init.item()):  # once, on restore
                module._fb_init_done = True
        return self.model

    @property
    def dendrite_count(self):
        """Dendrites in the current model."""
        return int(self.tracker.member_vars["num_dendrites_added"])

    def parameter_count(self):
        """The parameters that run in a forward pass, as in the model rebuilt without the library
        (plain_model.py). Left out: each wrapped module's hidden copy (kept to grow new dendrites), every
        output scale but the newest (each switch appends a longer copy) and the next dendrite's scaffold of
        dendrite-to-dendrite weights. (UPA.count_params leaves out the hidden copy only.)"""
        unused = {id(parameter) for module in wrapped_modules(self.model)
                  for parameter in [*module.dendrite_module.parent_module.parameters(), *module.dendrites_to_top[:-1],
                                    *module.dendrite_module.dendrites_to_candidates]}
        return sum(parameter.numel() for parameter in self.model.parameters() if id(parameter) not in unused)


def library():
    """perforatedai's globals and utils modules (GPA, UPA), imported here only. When the paid perforatedbp
    add-on (Perforated Backpropagation: correlation-trained dendrites) is importable, the globals module
    imports perforatedbp.globals_pbp and switches itself to it (set_perforated_backpropagation(True),
    set_no_extra_n_modes(False)), and the modules, tracker and utils modules import perforatedbp's
    modules_pbp, tracker_pbp and utils_pbp. The import prints "Building dendrites with/without Perforated
    Backpropagation" on stdout, which is the summary's alone, so it goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        from perforatedai import globals_perforatedai as GPA
        from perforatedai import utils_perforatedai as UPA
    return GPA, UPA


def library_settings():
    """The library's process-wide settings (GPA.pc) for a run, Perforated Backpropagation switched off as the
    library's own gradient-descent examples do (why: docs/method.md, "The dendrites")."""
    pc = library()[0].pc
    pc.set_perforated_backpropagation(False)
    pc.set_no_extra_n_modes(True)  # the open-source default, which perforatedbp's import turns off
    return pc


def dendrite_method():
    """The dendrite method the library runs now, read from its own flag (nothing is set first)."""
    return PERFORATED_BACKPROPAGATION if library()[0].pc.get_perforated_backpropagation() else GRADIENT_DESCENT


def require_gradient_descent():
    """A run stops, in one line, when the library runs Perforated Backpropagation after all."""
    if dendrite_method() != GRADIENT_DESCENT:
        raise ExperimentError(PB_FOUND_ON)


def perforatedbp_version():
    """perforatedbp's version ('version unknown' without its package record) when perforatedai would
    import it, else None. Read without importing either."""
    if importlib.util.find_spec("perforatedbp") is None:
        return None
    try:
        return importlib.metadata.version("perforatedbp")
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


def perforatedbp_note():
    """One line for the start of an experiment with a dendritic run when perforatedbp is installed, else None."""
    version = perforatedbp_version()
    return PB_SWITCHED_OFF.format(version=version) if version else None


def configure(pc, settings, device):
    """The library's process-wide settings for one run (all before perforate_model)."""
    pc.set_configuration_confirmed(True)  # else an interactive setup screen opens (without a terminal: it raises)
    pc.set_testing_dendrite_capacity(False)  # else a test mode adds 3 dendrites and ends
    pc.set_unwrapped_modules_confirmed(True)  # the other layers stay plain on purpose
    pc.set_checked_skipped_modules(True)
    pc.set_weight_decay_accepted(True)
    pc.set_silent(True)
    pc.set_device(device)
    pc.set_module_names_to_perforate(["PAISequential"])  # only the pairs wrapped above
    pc.set_switch_mode(pc.DOING_NO_SWITCH if settings.switch_mode == "fixed" else pc.DOING_HISTORY)
    pc.set_n_epochs_to_switch(settings.history_epochs)
    pc.set_max_dendrites(settings.max_dendrites)
    # At a switch a dendrite whose cycle set no new best of the run is removed and the best model reloaded;
    # with one try, that ends the run.
    pc.set_max_dendrite_tries(1)
    # A score is a new best (of the cycle, and of the run) when new * (1 - improvement_threshold) > best and
    # new - improvement_threshold_raw > best: at 0, the keep rule's `>` (keep_rule.py applies dendrite_min_gain).
    pc.set_improvement_threshold(0.0)
    pc.set_improvement_threshold_raw(0.0)
    pc.set_find_best_lr(False)  # our cycles use one known schedule, not an LR search
    pc.set_dont_give_up_unless_learning_rate_lowered(False)
    pc.set_test_saves(False)  # skip the library's large intermediate checkpoints
    # A new dendrite is a copy of the module it joins, every parameter re-drawn as this (library: 0.01) * N(0, 1).
    pc.set_candidate_weight_initialization_multiplier(settings.dendrite_init_scale)
    pc.set_pai_forward_function(ACTIVATIONS[settings.dendrite_activation])  # read at every forward (library: sigmoid)


def wrapped_modules(model):
    """The library's modules that hold dendrites (or can grow them), in model order. Each computes
        y = main(x) + sum_i dendrites_to_top[-1][i, c] * act(D_i(x) + earlier dendrites' terms)
    (act: pai_forward_function; in full: plain_model.py). dendrites_to_top[-1] (dendrites x channels) starts
    at zero, so a new dendrite leaves the output unchanged and at first only that scale gets a gradient."""
    return [module for module in model.modules() if hasattr(module, "dendrites_to_top")]


def library_version():
    """'perforatedai 3.2.9, perforatedbp not installed': what a dendritic result came from (perforatedbp,
    if installed, was switched off: the run checked)."""
    version = perforatedbp_version()
    return (f"perforatedai {importlib.metadata.version('perforatedai')}, "
            + (f"perforatedbp {version} installed (switched off)" if version else "perforatedbp not installed"))


def to_device(model, device, memory_format=torch.preserve_format):
    """model.to(device, memory_format), except perforatedai's 0-dim `this_node_index` buffers, which stay on
    the host: its modules test `dim == self.this_node_index` in every forward, and on a GPU each test would
    wait for the device (16 waits per training step with one dendrite on two modules)."""
    indices = {module: index.cpu() for module in model.modules()
               if (index := module._buffers.get("this_node_index")) is not None and index.dim() == 0}
    model = model.to(device, memory_format=memory_format)
    for module, index in indices.items():
        module._buffers["this_node_index"] = index
    return model


# The library's files, in <run_dir>/PAI/: its growth graph, its score tables, its checkpoints.

def library_folder(run_dir):
    return os.path.join(run_dir, SAVE_NAME)


def copy_library_outputs(run_dir):
    """Copy the library's final growth graph and CSVs into the run folder, and give its own files the
    mode any new file gets (it writes its checkpoints with mode 0600)."""
    folder = library_folder(run_dir)
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), new_file_mode())
        final = name.startswith(SAVE_NAME) and "before" not in name and "noImprove" not in name
        if final and name.endswith((".png", ".csv")):
            with open(os.path.join(folder, name), "rb") as f:
                write_atomic(os.path.join(run_dir, name), f.read())


def architecture_scores(run_dir, settings):
    """[(params, best validation accuracy)] per dendrite count 0, 1, ..., from the library's own
    table (columns: parameters, best validation score, ...), the keep rule's score undone."""
    with open(os.path.join(run_dir, f"{SAVE_NAME}_best_arch_scores.csv")) as f:
        rows = [row for row in list(csv.reader(f))[1:] if row]
    return [(int(float(row[0])), keep_rule.val_accuracy_of(float(row[1]), count, settings))
            for count, row in enumerate(rows)]
