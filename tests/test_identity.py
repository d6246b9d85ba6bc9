"""A result belongs to what made it: its data, the code's result format, the dendrite method and
libraries, its settings and the runs it starts from. It is reused for that, and for nothing else."""
import json
import shutil

import pytest

from dendritic_experiment import config, identity, main, train
from dendritic_experiment.experiment import Experiment, plan_runs
from dendritic_experiment.settings import (DATA_SETTINGS, DENDRITE_SETTINGS, NOT_RESULT_SETTINGS, TRAINING_SETTINGS,
                                           parse_settings)

from fake_cifar import write_fake_cifar100
from helpers import TINY_WIDTH

ONE_EPOCH = ["--seeds", "0", "--val-split", "200", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100"]


def finished_at(results, run):
    return json.loads((results / run / "result.json").read_text())["finished_at"]


def test_a_result_is_reused_for_the_same_data_anywhere_and_trained_again_for_other_data(tiny, data_dir, tmp_path,
                                                                                          capsys):
    results = tmp_path / "results"
    args = ["--results-dir", str(results), "--experiments", "resnet18", *ONE_EPOCH]
    main.main(["--data-dir", data_dir, *args])
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


def test_a_new_result_format_trains_again_and_so_does_what_starts_from_it(tiny, data_dir, tmp_path, capsys,
                                                                           monkeypatch):
    results = tmp_path / "results"
    args = ["--data-dir", data_dir, "--results-dir", str(results), "--experiments", "resnet18,resnet18_dendritic",
            *ONE_EPOCH, "--dendrite-epochs", "1", "--max-dendrites", "1"]
    main.main(args)
    before = {run: finished_at(results, run) for run in ("resnet18", "resnet18_dendritic", "resnet18_continued")}
    monkeypatch.setattr(identity, "RESULT_FORMAT", identity.RESULT_FORMAT + 1)
    capsys.readouterr()
    main.main(args)
    log = capsys.readouterr().err
    assert f"resnet18 (seed 0): the result format changed ({identity.RESULT_FORMAT - 1} -> {identity.RESULT_FORMAT}" in log
    for run, finished in before.items():  # the baseline again, then both runs that start from it
        assert finished_at(results, run) != finished, run
    assert "resnet18_dendritic (seed 0): the result format changed" in log  # its own format changed first


def test_a_baseline_trained_again_trains_what_starts_from_it_again(tiny, data_dir, tmp_path, capsys):
    results = tmp_path / "results"
    args = ["--data-dir", data_dir, "--results-dir", str(results), "--experiments", "resnet18,resnet18_dendritic",
            *ONE_EPOCH, "--dendrite-epochs", "1", "--max-dendrites", "1"]
    main.main(args)
    (results / "resnet18" / "result.json").unlink()  # the baseline alone must train again
    capsys.readouterr()
    main.main(args)
    log = capsys.readouterr().err
    for run in ("resnet18_dendritic", "resnet18_continued"):
        assert f"{run} (seed 0): a run it starts from (baseline" in log and f"{run}: reusing" not in log


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


def test_the_recorded_method_is_the_librarys_and_perforated_backpropagation_is_switched_off(new_tracker, capsys):
    from perforatedai import globals_perforatedai as GPA

    from dendritic_experiment.dendrites import GRADIENT_DESCENT, PB_SWITCHED_OFF, dendrite_method

    assert dendrite_method() == GRADIENT_DESCENT and not GPA.pc.get_perforated_backpropagation()
    GPA.pc.set_perforated_backpropagation(True)  # what perforatedai's import does when perforatedbp is installed
    GPA.pc.set_no_extra_n_modes(False)
    try:
        new_tracker()
        assert not GPA.pc.get_perforated_backpropagation() and GPA.pc.get_no_extra_n_modes()
        assert capsys.readouterr().err.count(PB_SWITCHED_OFF) == 1
        assert dendrite_method() == GRADIENT_DESCENT
    finally:
        GPA.pc.set_perforated_backpropagation(False)
        GPA.pc.set_no_extra_n_modes(True)


def test_a_dendritic_result_records_the_method_in_its_result_summary_and_picture(tiny, data_dir, tmp_path,
                                                                                  monkeypatch):
    from dendritic_experiment import report
    from dendritic_experiment.dendrites import GRADIENT_DESCENT

    titles, real_save = {}, report.save_figure
    monkeypatch.setattr(report, "save_figure", lambda figure, path: (
        titles.__setitem__(path, figure._suptitle.get_text() if figure._suptitle else ""), real_save(figure, path)))
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), "--experiments", "resnet18,resnet18_dendritic",
               *ONE_EPOCH, "--dendrite-epochs", "1", "--max-dendrites", "1", "--no-control"])
    result = json.loads((results / "resnet18_dendritic" / "result.json").read_text())
    assert result["method"] == result["identity"]["libraries"]["method"] == GRADIENT_DESCENT
    assert f"Dendrites: {GRADIENT_DESCENT}, perforatedai 3.2.9" in (results / "summary.md").read_text()
    assert titles[str(results / "resnet18_dendritic" / "curves.png")] == f"resnet18_dendritic: {GRADIENT_DESCENT}"


def test_weights_that_cannot_start_a_run_are_refused_and_nothing_is_cached(tiny, data_dir, tmp_path, capsys):
    import torch

    from dendritic_experiment.models import build_model

    results = tmp_path / "results"
    args = ["--data-dir", data_dir, "--results-dir", str(results), *ONE_EPOCH, "--dendrite-epochs", "1",
            "--max-dendrites", "1"]
    main.main([*args, "--experiments", "resnet18"])
    model_pt = results / "resnet18" / "model.pt"
    torch.save(build_model("resnet34", width=TINY_WIDTH).state_dict(), model_pt)  # a readable file, but not resnet18's weights
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
