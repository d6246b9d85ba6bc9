"""benchmark.py: --project projects the default experiment's wall time from a short timed run."""
import json
import os

import benchmark

from dendritic_experiment.experiment import run_names
from dendritic_experiment.settings import parse_settings
from dendritic_experiment.utils import run_cli, write_csv, write_json


def write_history(results, run_name, seconds, dendrites=None):
    rows = [{"epoch": i + 1, "val_accuracy": 1.0, "seconds": s} for i, s in enumerate(seconds)]
    for row, count in zip(rows, dendrites or []):
        row["dendrites"] = count
    write_csv(str(results / run_name / "history.csv"), rows)


def test_projection_times_each_run_and_dendrite_count_by_its_epochs(tmp_path, capsys, monkeypatch):
    settings = parse_settings([])
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert run_names(settings) == ["resnet18", "resnet34", "resnet18_dendritic", "resnet18_continued"]
    write_history(tmp_path, "resnet18", [9, 2, 4])  # the first epoch (cuDNN's kernel search) is paid once
    write_history(tmp_path, "resnet34", [5])  # a lone epoch is all there is
    write_history(tmp_path, "resnet18_dendritic", [7, 3, 3, 6, 4], dendrites=[1, 1, 1, 2, 2])
    write_history(tmp_path, "resnet18_continued", [8, 2, 2, 3])
    assert run_cli(benchmark.main, ["--project", str(tmp_path)]) == 0
    projection = json.loads((tmp_path / "projection.json").read_text())
    runs = projection["runs"]
    assert runs["resnet18"]["projected_seconds"] == 3 * settings.epochs + (9 - 3)
    assert runs["resnet34"]["projected_seconds"] == 5 * settings.epochs
    # One cycle per dendrite; the third was never timed, so it costs what the second did.
    cycles = runs["resnet18_dendritic"]["cycles"]
    timings = [(c["dendrites"], c["seconds_per_epoch"], c["first_epoch_extra_seconds"], c["timed_with_dendrites"],
                c["epochs_timed"]) for c in cycles]
    assert timings == [(1, 3, 4, 1, 3), (2, 4, 2, 2, 2), (3, 4, 2, 2, 2)][:settings.max_dendrites]
    assert runs["resnet18_dendritic"]["projected_seconds"] == sum(
        settings.dendrite_epochs * c["seconds_per_epoch"] + c["first_epoch_extra_seconds"] for c in cycles)
    assert runs["resnet18_continued"]["projected_seconds"] == 2 * settings.max_dendrites * settings.dendrite_epochs + 6
    assert projection["seeds"] == 3  # config.py's seeds: each trains every run
    assert projection["projected_seconds"] == 3 * sum(run["projected_seconds"] for run in runs.values())
    assert "the default experiment, 3 seed(s)" in capsys.readouterr().out
    assert os.listdir(tmp_path / "cwd") == []  # nothing is written to the current directory


def test_projection_refuses_a_missing_run_or_one_timed_at_other_settings(tmp_path, capsys):
    settings = parse_settings([])
    write_history(tmp_path, "resnet18", [2, 2])
    assert run_cli(benchmark.main, ["--project", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "resnet34" / "history.csv") in error and "--warmup-epochs 1" in error
    for run_name in run_names(settings)[1:]:
        write_history(tmp_path, run_name, [2, 2])
    timed_with = {"batch_size": settings.batch_size // 2, "epochs": 3}  # fewer epochs are the point; a batch is not
    write_json(str(tmp_path / "resnet34" / "result.json"), {"device": "cuda", "settings": timed_with})
    assert run_cli(benchmark.main, ["--project", str(tmp_path)]) == 2
    assert f"resnet34 was timed with --batch-size {settings.batch_size // 2}" in capsys.readouterr().err
    # A run reused from another machine would mix two devices' speeds into one projection.
    write_json(str(tmp_path / "resnet34" / "result.json"), {"device": "NVIDIA H100", "settings": {"epochs": 3}})
    write_json(str(tmp_path / "resnet18" / "result.json"), {"device": "NVIDIA A100", "settings": {"epochs": 3}})
    assert run_cli(benchmark.main, ["--project", str(tmp_path)]) == 2
    assert "timed on different devices" in capsys.readouterr().err
    assert not (tmp_path / "projection.json").exists()
