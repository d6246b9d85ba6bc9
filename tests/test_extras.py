"""ResNet-50, CIFAR-10 with CompactNet, run folders, pictures, the one-batch check, wandb's flag and sweep."""
import json

import pytest

from dendritic_experiment import main, settings

from fake_cifar import write_fake_cifar
from helpers import PACKAGE, read_history

SHORT = ["--seeds", "0", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "100", "--dendrite-epochs", "1",
         "--max-dendrites", "1"]


def test_resnet50_baseline_and_dendritic_runs_in_their_own_folder(tiny, data_dir, tmp_path):
    results = tmp_path / "results"
    main.main(["--data-dir", data_dir, "--results-dir", str(results), "--val-split", "150", "--run-name", "r50",
               "--experiments", "resnet50,resnet50_dendritic", "--no-control", *SHORT])
    run_dir = results / "r50" / "resnet50_dendritic"
    assert read_history(run_dir)[0]["dendrites"] == "1"
    runs = json.loads((results / "r50" / "summary.json").read_text())["runs"]
    assert [run["name"] for run in runs] == ["resnet50", "resnet50_dendritic"]
    assert not (results / "resnet50").exists()


def test_compactnet_on_cifar10_with_history_switching(tmp_path):
    write_fake_cifar(tmp_path / "data", "cifar10", train=600, test=100)
    results = tmp_path / "results"
    main.main(["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--results-dir", str(results),
               "--val-split", "100", "--experiments", "compactnet,compactnet_dendritic", "--switch-mode", "history",
               "--history-epochs", "1", *SHORT])
    runs = {run["name"]: run for run in json.loads((results / "summary.json").read_text())["runs"]}
    assert runs["compactnet"]["params"] < 200_000 and runs["compactnet"]["dataset"] == "cifar10"
    assert set(runs) == {"compactnet", "compactnet_dendritic", "compactnet_continued"}
    result = json.loads((results / "compactnet_dendritic" / "result.json").read_text())
    assert len(result["classes"]) == 10 and result["epochs"] >= 1
    for run in runs:
        for picture in ("curves.png", "misclassified.png"):
            assert (results / run / picture).read_bytes().startswith(b"\x89PNG")


def test_overfit_batch_reports_the_loss_falling(tiny, data_dir, tmp_path, capsys):
    main.main(["--overfit-batch", "--data-dir", data_dir, "--results-dir", str(tmp_path), "--val-split", "150",
               "--experiments", "resnet18,resnet18_dendritic", "--batch-size", "32"])
    out = capsys.readouterr().out
    assert out.count("wired correctly") == 1 and "resnet18: loss 4." in out
    assert not (tmp_path / "summary.json").exists()


def test_without_wandb_the_project_flag_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(settings, "installed", lambda module: module != "wandb")
    assert main.cli(["--wandb-project", "p", "--results-dir", str(tmp_path)]) == 2
    assert "wandb is not installed: pip install wandb" in capsys.readouterr().err


def test_sweep_file_uses_real_flags_and_maximises_what_the_experiment_reports():
    yaml = pytest.importorskip("yaml")
    from dendritic_experiment.tracking import SWEEP_METRIC

    with open(f"{PACKAGE}/sweep.yaml") as f:
        sweep = yaml.safe_load(f)
    assert sweep["metric"] == {"name": SWEEP_METRIC, "goal": "maximize"}
    flags = {option for action in settings.build_parser()._actions for option in action.option_strings}
    assert {"--" + name for name in sweep["parameters"]} <= flags
    for name, spec in sweep["parameters"].items():
        for value in spec["values"]:
            settings.build_parser().parse_args([f"--{name}={value}"])  # every value parses
