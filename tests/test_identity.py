"""A result belongs to what made it: its data, the code's result format, the dendrite method and
libraries, its settings and the runs it starts from. It is reused for that, and for nothing else."""
import dataclasses
import json
import os
import shutil
import sys

import pytest

from dendritic_experiment import config, identity, main, train
from dendritic_experiment.experiment import Experiment, plan_runs
from dendritic_experiment.identity import DATA_SETTINGS, DENDRITE_SETTINGS, NOT_RESULT_SETTINGS, TRAINING_SETTINGS
from dendritic_experiment.settings import parse_settings
from dendritic_experiment.utils import write_json

from fake_cifar import write_fake_cifar, write_fake_cifar100
from helpers import TINY_WIDTH, copy_results, read_history

ONE_EPOCH = ["--seeds", "0", "--val-split", "200", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100"]
ONE_DENDRITE = ["--experiments", "resnet18,resnet18_dendritic", *ONE_EPOCH, "--dendrite-epochs", "1", "--max-dendrites", "1"]


@pytest.fixture
def one_dendrite(trained_once, tmp_path):
    """ONE_DENDRITE's finished runs (resnet18, its dendritic run and control), trained once for the
    suite and copied here: tmp_path / "results"."""
    return copy_results(trained_once("one_dendrite", ONE_DENDRITE), tmp_path / "results")


def finished_at(results, run):
    return json.loads((results / run / "result.json").read_text())["finished_at"]


def test_a_result_is_reused_for_the_same_data_anywhere_and_trained_again_for_other_data(tiny, data_dir, tmp_path,
                                                                                          capsys, one_dendrite):
    results = one_dendrite
    args = ["--results-dir", str(results), "--experiments", "resnet18", *ONE_EPOCH]
    main.main(["--data-dir", data_dir, *args])
    assert "resnet18: reusing" in capsys.readouterr().err  # trained in another folder, on the same files
    first = finished_at(results, "resnet18")
    moved = tmp_path / "moved"
    shutil.copytree(data_dir, moved)  # the same files in another folder
    capsys.readouterr()
    main.main(["--data-dir", str(moved), *args])
    assert "resnet18: reusing" in capsys.readouterr().err and finished_at(results, "resnet18") == first

    write_fake_cifar100(tmp_path / "other", train=1000, test=200, seed=1)  # the same format, other images
    main.main(["--data-dir", str(tmp_path / "other"), *args])
    assert "resnet18 (seed 0): the data changed (fingerprint" in capsys.readouterr().err
    assert finished_at(results, "resnet18") != first


def test_a_new_result_format_trains_again_and_so_does_what_starts_from_it(tiny, data_dir, capsys, monkeypatch,
                                                                           one_dendrite):
    results = one_dendrite
    args = ["--data-dir", data_dir, "--results-dir", str(results), *ONE_DENDRITE]
    before = {run: finished_at(results, run) for run in ("resnet18", "resnet18_dendritic", "resnet18_continued")}
    monkeypatch.setattr(identity, "RESULT_FORMAT", identity.RESULT_FORMAT + 1)
    capsys.readouterr()
    main.main(args)
    log = capsys.readouterr().err
    assert f"resnet18 (seed 0): the result format changed ({identity.RESULT_FORMAT - 1} -> {identity.RESULT_FORMAT}" in log
    for run, finished in before.items():  # the baseline again, then both runs that start from it
        assert finished_at(results, run) != finished, run
    assert "resnet18_dendritic (seed 0): the result format changed" in log  # its own format changed first


def test_a_baseline_trained_again_trains_what_starts_from_it_again(tiny, data_dir, capsys, one_dendrite):
    results = one_dendrite
    args = ["--data-dir", data_dir, "--results-dir", str(results), *ONE_DENDRITE]
    (results / "resnet18" / "result.json").unlink()  # the baseline alone must train again
    capsys.readouterr()
    main.main(args)
    log = capsys.readouterr().err
    for run in ("resnet18_dendritic", "resnet18_continued"):
        assert f"{run} (seed 0): the baseline" in log and f"{run}: reusing" not in log

    before = {run: finished_at(results, run) for run in ("resnet18", "resnet18_continued")}
    (results / "resnet18_dendritic" / "result.json").unlink()  # the dendritic run alone: its control repeats its cycles
    main.main(args)
    log = capsys.readouterr().err
    assert "resnet18: reusing" in log and finished_at(results, "resnet18") == before["resnet18"]
    assert "resnet18_continued (seed 0): the dendritic run it starts from changed (trained again, or another run)" in log
    assert finished_at(results, "resnet18_continued") != before["resnet18_continued"]


def test_every_setting_is_part_of_a_result_or_listed_as_unable_to_change_one():
    settings = {name for name in vars(config) if not name.startswith("_")}
    in_result = set(DATA_SETTINGS + TRAINING_SETTINGS + DENDRITE_SETTINGS) | {"precision"}
    assert not in_result & set(NOT_RESULT_SETTINGS)
    assert settings == in_result | set(NOT_RESULT_SETTINGS), "a setting of config.py is in neither list"


def test_the_key_does_not_depend_on_where_the_driver_runs(tiny, data_dir, tmp_path):
    """A Ray driver on a head without a GPU reuses runs its GPU workers finished in bf16: the key
    holds the precision setting (auto), not what it resolved to; the result records both."""
    settings = parse_settings(["--data-dir", data_dir, "--results-dir", str(tmp_path), "--experiments", "resnet18"])
    run = plan_runs(settings)[0]
    on_gpu, on_cpu = Experiment(settings), Experiment(settings)
    on_gpu.device, on_gpu.precision = "cuda", "bf16"  # as a GPU worker resolves them
    assert on_cpu.precision == "fp32" and on_gpu.identity(run) == on_cpu.identity(run)
    assert on_cpu.identity(run)[0]["precision"] == "auto"


def test_the_method_is_read_as_the_library_runs_it_and_a_run_that_finds_perforated_backpropagation_on_stops(
        new_tracker):
    from perforatedai import globals_perforatedai as GPA

    from dendritic_experiment.dendrites import GRADIENT_DESCENT, PB_FOUND_ON, PERFORATED_BACKPROPAGATION, dendrite_method
    from dendritic_experiment.utils import ExperimentError

    GPA.pc.set_perforated_backpropagation(True)  # what perforatedai's import does when perforatedbp is installed
    GPA.pc.set_no_extra_n_modes(False)
    try:
        assert dendrite_method() == PERFORATED_BACKPROPAGATION  # read as it is: nothing is forced first
        tracker = new_tracker()  # a run switches it off before converting its model
        assert dendrite_method() == GRADIENT_DESCENT and GPA.pc.get_no_extra_n_modes()
        GPA.pc.set_perforated_backpropagation(True)  # on again behind the run's back
        with pytest.raises(ExperimentError) as error:
            with tracker.library_call():
                pass
        assert str(error.value) == PB_FOUND_ON
    finally:
        GPA.pc.set_perforated_backpropagation(False)
        GPA.pc.set_no_extra_n_modes(True)


def test_a_dendritic_result_records_the_method_in_its_result_summary_and_picture(tiny, data_dir, tmp_path,
                                                                                  monkeypatch):
    from dendritic_experiment import figures
    from dendritic_experiment.dendrites import GRADIENT_DESCENT

    titles, real_save = {}, figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda figure, path: (
        titles.__setitem__(path, figure._suptitle.get_text() if figure._suptitle else ""), real_save(figure, path)))
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), "--experiments", "resnet18,resnet18_dendritic",
               *ONE_EPOCH, "--dendrite-epochs", "1", "--max-dendrites", "1", "--no-control"])
    result = json.loads((results / "resnet18_dendritic" / "result.json").read_text())
    assert result["method"] == result["identity"]["libraries"]["method"] == GRADIENT_DESCENT
    assert result["library"] == "perforatedai 3.2.9, perforatedbp not installed"  # test_library.py: a stand-in
    assert f"Dendrites: {GRADIENT_DESCENT}, perforatedai 3.2.9, perforatedbp not installed" in (
        results / "summary.md").read_text()
    assert titles[str(results / "resnet18_dendritic" / "curves.png")] == f"resnet18_dendritic: {GRADIENT_DESCENT}"


def test_weights_that_cannot_start_a_run_are_refused_and_nothing_is_cached(tiny, data_dir, tmp_path, capsys,
                                                                              trained_once):
    import torch

    from dendritic_experiment.models import build_model

    results = copy_results(trained_once("one_dendrite", ONE_DENDRITE), tmp_path / "results", "resnet18")
    args = ["--data-dir", data_dir, "--results-dir", str(results), *ONE_EPOCH, "--dendrite-epochs", "1",
            "--max-dendrites", "1"]
    model_pt = results / "resnet18" / "model.pt"
    torch.save(build_model("resnet34", width=TINY_WIDTH).state_dict(), model_pt)  # a readable file, but not resnet18's weights
    result = json.loads((results / "resnet18" / "result.json").read_text())
    result["files"]["model.pt"] = model_pt.stat().st_size  # of the size the run recorded: the lookup takes it
    (results / "resnet18" / "result.json").write_text(json.dumps(result))
    assert main.cli([*args, "--experiments", "resnet18,resnet18_dendritic"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: resnet18_dendritic: ") and str(model_pt) in error and "--retrain" in error
    assert not (results / "resnet18_dendritic" / "result.json").exists()
    assert not (results / "resnet18_continued").exists()


def test_a_retrain_that_dies_leaves_no_old_result_beside_its_history(run_twice_killed_in_the_second):
    results, first, history_rows = run_twice_killed_in_the_second
    assert not (results / "resnet18" / "result.json").exists()  # the old result went before training began
    assert history_rows == 1  # the aborted run's history: one epoch of its two


@pytest.fixture
def run_twice_killed_in_the_second(tiny, data_dir, tmp_path, monkeypatch):
    """A baseline trained, then trained again at another --lr and stopped by a NaN in its second
    epoch: (results folder, the first result's finished_at, epochs in history.csv)."""
    results = tmp_path / "results"
    args = ["--data-dir", data_dir, "--results-dir", str(results), "--experiments", "resnet18", *ONE_EPOCH,
            "--epochs", "2"]
    main.main(args)
    first = finished_at(results, "resnet18")
    real_step, calls = train.training_step, []

    def nan_in_the_second_epoch(*step_args):
        calls.append(1)
        loss, logits = real_step(*step_args)
        return (loss * float("nan"), logits) if len(calls) == 9 else (loss, logits)  # 8 steps per epoch

    monkeypatch.setattr(train, "training_step", nan_in_the_second_epoch)
    assert main.cli([*args, "--lr", "0.05"]) == 2
    monkeypatch.setattr(train, "training_step", real_step)
    history = (results / "resnet18" / "history.csv").read_text().strip().splitlines()
    yield results, first, len(history) - 1
    main.main(args)  # the first settings again: trained again, its history and result from one run
    assert finished_at(results, "resnet18") != first
    result = json.loads((results / "resnet18" / "result.json").read_text())
    assert len((results / "resnet18" / "history.csv").read_text().strip().splitlines()) - 1 == result["epochs"] == 2


# ---------------------------------------------------------------------------------------------
# One finished baseline, looked up again with one thing changed: Experiment.cached decides.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    """A finished tiny baseline: (its flags, its PlannedRun, its result). Tests look it up, never change it."""
    results = tmp_path_factory.mktemp("finished") / "results"
    flags = ["--width", str(TINY_WIDTH), "--data-dir", data_dir, "--results-dir", str(results), "--experiments",
             "resnet18", *ONE_EPOCH]
    main.main(flags)
    run = plan_runs(parse_settings(flags))[0]
    return flags, run, json.loads((results / "resnet18" / "result.json").read_text())


def lookup(flags, run, capsys, experiment=None):
    """(the cached result or None, what the lookup said)."""
    capsys.readouterr()
    result = (experiment or Experiment(parse_settings(flags))).cached(run)
    return result, capsys.readouterr().err


def reused(looked_up, result):
    """Whether a lookup reused the finished result, and said so."""
    cached, said = looked_up
    return cached is not None and cached["finished_at"] == result["finished_at"] and "resnet18: reusing" in said


def test_a_comment_keeps_a_result_and_a_code_change_trains_it_again_naming_the_module(finished, tmp_path,
                                                                                   monkeypatch, capsys):
    flags, run, result = finished
    clone = tmp_path / "dendritic_experiment"
    shutil.copytree(identity.PACKAGE, clone, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(identity, "PACKAGE", str(clone))
    train_py, experiment_py = clone / "train.py", clone / "experiment.py"

    def edited(path, old, new):
        """The lookup with one edit made to the clone's code (undone after it)."""
        text = path.read_text()
        assert text.count(old) == 1
        path.write_text(text.replace(old, new))
        try:
            return lookup(flags, run, capsys)
        finally:
            path.write_text(text)

    def trains_again(looked_up, changed):
        cached, said = looked_up
        return cached is None and said.strip() == f"resnet18 (seed 0): the code changed ({changed}); training it again"

    assert reused(lookup(flags, run, capsys), result)  # the same code elsewhere
    assert reused(edited(clone / "report.py", "import os\n", "import io\nimport os\n"), result)  # not a result's code
    assert reused(edited(train_py, "import contextlib\n", "# a comment\nimport contextlib  # and another\n"), result)
    assert reused(edited(train_py, "Training steps:", "The training steps:"), result)  # the module's docstring
    assert reused(edited(train_py, "REFRESH_STEPS = 25", "REFRESH_STEPS  =  (\n    25)"), result)  # formatting
    assert trains_again(edited(train_py, "\nclass TrainingSetup:", "\ndef unused():\n    return 1\n\n\nclass TrainingSetup:"),
                        "train.py")
    assert trains_again(edited(train_py, "return num_images // min(batch_size, num_images)",  # inside a function
                               "return num_images // max(1, min(batch_size, num_images))"), "train.py")
    # experiment.py is not a result's module, but a function of it is (identity.RESULT_FUNCTIONS)
    assert reused(edited(experiment_py, "return f\"{seconds // 3600}", "return f\"{int(seconds) // 3600}"), result)
    assert trains_again(edited(experiment_py, "return BaselineRun(run.model, self.data, setup, run.seed)",
                               "return BaselineRun(run.model, self.data, setup, int(run.seed))"),
                        "experiment.Experiment.new_run")


def test_every_module_is_part_of_a_result_or_listed_as_unable_to_change_one():
    """A new module is listed with a reason, and every module a kind of run imports too."""
    import ast

    def imports(name):
        with open(os.path.join(identity.PACKAGE, name + ".py")) as f:
            tree = ast.parse(f.read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "dendritic_experiment":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for module in [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]:
                    if module and module.startswith("dendritic_experiment."):
                        found.add(module.split(".")[1])
        return found

    def imported_by(root):
        seen, todo = set(), [root]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += imports(name)
        return seen

    modules = {name[:-3] for name in os.listdir(identity.PACKAGE) if name.endswith(".py")}
    for kind in identity.RESULT_FUNCTIONS:  # each function named exists (a renamed one would fingerprint nothing)
        assert set(identity.code_fingerprint(kind)) == set(identity.RESULT_MODULES[kind] + identity.RESULT_FUNCTIONS[kind])
    in_results = set().union(*identity.RESULT_MODULES.values())
    assert not in_results & set(identity.NOT_RESULT_MODULES)
    assert modules == in_results | set(identity.NOT_RESULT_MODULES), "a module is in neither list"
    for kind, root in (("baseline", "runs"), ("control", "continuation"), ("dendritic", "continuation")):
        used = imported_by(root)
        assert set(identity.RESULT_MODULES[kind]) <= used, kind
        unlisted = used - set(identity.RESULT_MODULES[kind]) - set(identity.NOT_RESULT_MODULES)
        assert unlisted == set(identity.NOT_RESULT_FOR.get(kind, {})), kind


def test_one_byte_changed_in_any_data_file_trains_again_naming_the_data(tmp_path, capsys):
    folder = write_fake_cifar(str(tmp_path / "data"), "cifar10", train=50, test=10)
    flags = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
             "--experiments", "resnet18", "--seeds", "0", "--val-split", "10"]
    run = plan_runs(parse_settings(flags))[0]
    kept_settings, kept_identity = Experiment(parse_settings(flags)).identity(run)
    write_json(os.path.join(run.folder, "result.json"), dict(settings=kept_settings, identity=kept_identity))
    names = sorted(os.listdir(folder))
    assert len(names) == 7  # CIFAR-10's five training batches, its test batch and its class names
    for name in names:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 1
        with open(path, "wb") as f:
            f.write(data)
        cached, said = lookup(flags, run, capsys)
        assert cached is None and said.startswith("resnet18 (seed 0): the data changed (fingerprint"), name
        data[len(data) // 2] ^= 1
        with open(path, "wb") as f:
            f.write(data)
    assert Experiment(parse_settings(flags)).identity(run) == (kept_settings, kept_identity)


def test_a_data_file_whose_modification_time_alone_changed_is_reused(finished, data_dir, tmp_path, capsys):
    flags, run, result = finished
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1e9, 1e9))
    assert reused(lookup([*flags, "--data-dir", str(copy)], run, capsys), result)


def test_a_changed_library_version_and_a_result_from_before_identities_train_again(finished, tmp_path, monkeypatch,
                                                                                   capsys):
    flags, run, result = finished
    real_version = identity.importlib.metadata.version
    with monkeypatch.context() as patch:
        patch.setattr(identity.importlib.metadata, "version", lambda name: "2.99.0" if name == "torch" else real_version(name))
        cached, said = lookup(flags, run, capsys)
    torch_version = ".".join(real_version("torch").split(".")[:2])
    assert cached is None and f"changed: torch {torch_version!r} -> '2.99'" in said

    copy = tmp_path / "results" / "resnet18"
    shutil.copytree(run.folder, copy)
    old = {key: value for key, value in result.items() if key != "identity"}
    write_json(str(copy / "result.json"), old)
    cached, said = lookup(flags, dataclasses.replace(run, folder=str(copy)), capsys)
    assert cached is None and identity.NO_IDENTITY in said


def test_the_precision_a_run_trained_in_is_compared_where_it_is_resolved(finished, capsys):
    """--precision auto is auto in the lookup; a machine that resolves it otherwise trains the run
    again. A Ray driver of a cluster cannot resolve it as a worker would: it leaves the run to one."""
    flags, run, result = finished
    assert result["precision"] == "fp32" and result["settings"]["precision"] == "auto"
    on_gpu = Experiment(parse_settings(flags))
    on_gpu.precision = "bf16"  # what auto resolves to on a recent GPU
    cached, said = lookup(flags, run, capsys, on_gpu)
    assert cached is None and "resnet18 (seed 0): it trained in fp32 and would train in bf16 here" in said

    was_imported = "dendritic_experiment.cluster" in sys.modules
    from dendritic_experiment.cluster import reuse_finished
    from dendritic_experiment.experiment import Progress
    try:
        local = parse_settings([*flags, "--parallel-runs", "2"])  # a Ray on this machine: its workers resolve as here
        assert reuse_finished(local, Experiment(local), [run], Progress(local, [run])) == []
        cluster = parse_settings([*flags, "--parallel-runs", "2", "--ray-address", "auto"])
        assert reuse_finished(cluster, Experiment(cluster), [run], Progress(cluster, [run])) == [run]
        assert "resnet18: finished in fp32; the Ray worker that would train it compares" in capsys.readouterr().err
    finally:
        if not was_imported:  # tests/test_parallel.py checks that nothing else imports it
            sys.modules.pop("dendritic_experiment.cluster", None)


def test_changing_every_dendrite_setting_leaves_a_baselines_history_bit_identical(finished, tmp_path, capsys):
    """A setting filed among DENDRITE_SETTINGS is left out of a baseline's identity: it must not change a
    baseline. Every one of them changed, the baseline is reused, and trained again it is the same run."""
    flags, run, result = finished
    changed = []
    for name in DENDRITE_SETTINGS:
        flag, value = "--" + name.replace("_", "-"), getattr(config, name)
        if isinstance(value, bool):
            changed.append("--no-" + flag[2:] if value else flag)
        else:
            words = {"dendrite_modules": "fc", "switch_mode": "history", "dendrite_activation": "relu"}
            changed += [flag, str(words[name] if isinstance(value, str) else value + 1 if isinstance(value, int)
                                  else value / 2 or 0.1)]
    assert reused(lookup([*flags, *changed], run, capsys), result)
    results = tmp_path / "results"
    main.main([*flags, *changed, "--results-dir", str(results)])
    columns = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert columns(read_history(results / "resnet18")) == columns(read_history(run.folder))
    trained = json.loads((results / "resnet18" / "result.json").read_text())
    assert (trained["val_accuracy"], trained["test_accuracy"]) == (result["val_accuracy"], result["test_accuracy"])
