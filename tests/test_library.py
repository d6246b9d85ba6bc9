"""The perforatedai internals this project relies on (dendrites.py), each checked by name: a new
release that drops or changes one fails here, naming it, instead of silently changing results."""
import csv
import importlib.metadata
import json
import os

import pytest
import torch

from dendritic_experiment import keep_rule
from dendritic_experiment.dendrites import DENDRITE_PARAMETER, SAVE_NAME, wrapped_modules

from helpers import run_main, script_environment

REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")
SETTINGS_USED = ("configuration_confirmed", "testing_dendrite_capacity", "unwrapped_modules_confirmed",
                 "checked_skipped_modules", "weight_decay_accepted", "silent", "device", "module_names_to_perforate",
                 "switch_mode", "n_epochs_to_switch", "max_dendrites", "max_dendrite_tries", "find_best_lr",
                 "dont_give_up_unless_learning_rate_lowered", "test_saves", "candidate_weight_initialization_multiplier",
                 "pai_forward_function", "improvement_threshold", "improvement_threshold_raw",
                 "initial_history_after_switches")


def internal(condition, name, what):
    assert condition, (f"perforatedai internal `{name}` {what}: dendrites.py relies on it; install the "
                       "perforatedai release requirements.txt pins, or adapt dendrites.py and the note beside the code that relies on it")


def test_the_installed_release_is_the_pinned_one():
    with open(REQUIREMENTS) as f:
        pinned = next(line.split("==")[1].split()[0] for line in f if line.startswith("perforatedai=="))
    assert importlib.metadata.version("perforatedai") == pinned


def test_every_setting_used_has_a_setter_and_the_switch_modes_exist():
    from perforatedai import globals_perforatedai as GPA

    for name in SETTINGS_USED:
        internal(callable(getattr(GPA.pc, f"set_{name}", None)), f"GPA.pc.set_{name}", "is missing")
    for mode in ("DOING_NO_SWITCH", "DOING_HISTORY"):
        internal(hasattr(GPA.pc, mode), f"GPA.pc.{mode}", "is missing")


@pytest.fixture
def grown(new_tracker):
    """A converted tiny ResNet-18 through a warm start's first dendrite and one more epoch's score."""
    dendrites = new_tracker("--max-dendrites", "2")
    for method in ("set_optimizer", "set_scheduler", "setup_optimizer", "add_extra_score", "add_validation_score",
                   "save_graphs", "to_string", "from_string", "reset_module_vector"):
        internal(callable(getattr(dendrites.tracker, method, None)), f"pai_tracker.{method}", "is missing")
    internal("num_dendrites_added" in dendrites.tracker.member_vars, "pai_tracker.member_vars['num_dendrites_added']",
             "is missing")
    sample = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])

    def new_cycle():
        dendrites.setup_optimizer(torch.optim.SGD, dict(lr=0.1), torch.optim.lr_scheduler.LambdaLR,
                                  dict(lr_lambda=lambda epoch: 1.0))
        dendrites.learn_shapes(*sample)

    new_cycle()
    dendrites.start_from_baseline(50.0, 50.0)
    new_cycle()
    dendrites.end_epoch(60.0, 60.0, 1, force_switch=True)
    return dendrites, new_cycle


def test_a_grown_model_has_the_modules_buffers_and_parameters_relied_on(grown):
    grown, _ = grown
    wrapped = [m for m in wrapped_modules(grown.model) if getattr(m, "dendrite_modules_added", 0) > 0]
    internal(len(wrapped) == 2, "PAINeuronModule.dendrite_modules_added", "does not count the dendrites added")
    for module in wrapped:
        internal(hasattr(module, "_fb_init_done"), "PAINeuronModule._fb_init_done", "is missing")
        internal(module.dendrite_module.dendrite_values[0].current_d_init.dim() == 1,
                 "dendrite_values[0].current_d_init", "is no longer a 1-element buffer")
        internal(module.dendrites_to_top[-1].shape[0] == grown.dendrite_count == 2, "PAINeuronModule.dendrites_to_top[-1]",
                 "is not (dendrites x channels)")
        index = module._buffers.get("this_node_index")
        internal(index is not None and index.dim() == 0, "this_node_index", "is no longer a 0-dim buffer")
    names = [name for name, _ in grown.model.named_parameters()]
    internal(any(DENDRITE_PARAMETER.search(name) and "layers.1." in name for name in names),
             "<module>.dendrite_module.layers.<i>", "no longer names the dendrite copies")
    internal(any(name.endswith("dendrites_to_top.1") for name in names), "<module>.dendrites_to_top.<k>",
             "no longer names the output scales")


def test_the_tracker_state_and_tables_read_back(grown):
    grown, new_cycle = grown
    state = grown.checkpoint_state()
    internal(isinstance(state["tracker"], str), "pai_tracker.to_string", "no longer returns a string")
    new_cycle()
    _, _, complete = grown.end_epoch(55.0, 55.0, 1, force_switch=True)  # worse: the second dendrite goes
    internal(complete and grown.dendrite_count == 1, "pai_tracker.add_validation_score", "no longer ends a run whose "
             "dendrite did not improve validation")
    with open(os.path.join(grown.run_dir, SAVE_NAME, f"{SAVE_NAME}_best_arch_scores.csv")) as f:
        rows = list(csv.reader(f))[1:]
    baseline_score = keep_rule.score(50.0, 0, grown.settings)  # the tracker sees the keep rule's score
    internal(rows and int(float(rows[0][0])) > 0 and float(rows[0][1]) == baseline_score,
             f"{SAVE_NAME}_best_arch_scores.csv", "no longer holds (parameters, best validation score) per row")


def write_stand_in_perforatedbp(folder, version):
    """A package named perforatedbp with the real one's effect at import: perforatedai's globals module
    imports its globals_pbp when it can, then prints "Building dendrites with Perforated Backpropagation"
    and switches itself to it (set_perforated_backpropagation(True), set_no_extra_n_modes(False)); its
    modules, tracker and utils modules import modules_pbp, tracker_pbp and utils_pbp (a missing one
    stops the import). Every module is empty, and a package record gives its version."""
    package = folder / "perforatedbp"
    package.mkdir(parents=True)
    for name in ("__init__", "globals_pbp", "modules_pbp", "tracker_pbp", "utils_pbp"):
        (package / f"{name}.py").write_text("")
    record = folder / f"perforatedbp-{version}.dist-info"
    record.mkdir()
    (record / "METADATA").write_text(f"Metadata-Version: 2.1\nName: perforatedbp\nVersion: {version}\n")


def test_with_perforatedbp_installed_stdout_is_the_summary_and_the_run_is_gradient_descent_and_says_so(data_dir,
                                                                                                       tmp_path):
    from dendritic_experiment.dendrites import GRADIENT_DESCENT, PB_SWITCHED_OFF

    write_stand_in_perforatedbp(tmp_path / "site", "9.9.1")
    path = os.pathsep.join([str(tmp_path / "site"), script_environment()["PYTHONPATH"]])
    process = run_main(["--data-dir", data_dir, "--results-dir", "results", "--experiments", "resnet18,resnet18_dendritic",
                        "--no-control", "--seeds", "0", "--val-split", "200", "--epochs", "1", "--warmup-epochs", "0",
                        "--batch-size", "100", "--dendrite-epochs", "1", "--max-dendrites", "1"],
                       cwd=tmp_path, PYTHONPATH=path)
    assert process.returncode == 0, process.stderr
    assert "Building dendrites with Perforated Backpropagation" in process.stderr  # the stand-in took effect
    assert PB_SWITCHED_OFF.format(version="9.9.1") in process.stderr
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert process.stdout.startswith("# Results") and process.stdout.strip() == summary.strip()
    result = json.loads((tmp_path / "results" / "resnet18_dendritic" / "result.json").read_text())
    assert result["method"] == GRADIENT_DESCENT
    assert result["library"] == "perforatedai 3.2.9, perforatedbp 9.9.1 installed (switched off)"
    assert f"{GRADIENT_DESCENT}, perforatedai 3.2.9, perforatedbp 9.9.1 installed (switched off)" in summary
