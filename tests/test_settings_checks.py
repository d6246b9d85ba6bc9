"""Settings that would make the control stop being a control, or silently drop what the user asked for."""
import pytest

from dendritic_experiment.settings import parse_settings
from dendritic_experiment.utils import ExperimentError


def test_a_warm_up_that_history_modes_patience_cannot_outlast_is_refused():
    """History mode can end a cycle after history_epochs epochs: a warm-up as long would leave the
    network no epoch to train in it."""
    with pytest.raises(ExperimentError) as refused:
        parse_settings(["--switch-mode", "history", "--history-epochs", "2", "--dendrite-warmup-epochs", "2"])
    message = str(refused.value)
    assert message.startswith("--dendrite-warmup-epochs 2 is not allowed: use 0 to 1") and "--history-epochs 2" in message
    assert "\n" not in message
    assert parse_settings(["--switch-mode", "history", "--history-epochs", "2", "--dendrite-warmup-epochs", "1"])


def test_smoke_shrinks_only_the_settings_no_flag_gave_and_says_which(capsys):
    settings = parse_settings(["--smoke", "--dendrite-epochs", "3", "--dendrite-warmup-epochs", "1", "--epochs", "4"])
    assert (settings.dendrite_epochs, settings.dendrite_warmup_epochs, settings.epochs) == (3, 1, 4)  # as given
    assert (settings.batch_size, settings.max_dendrites, settings.switch_mode, settings.seeds) == (64, 1, "fixed", "0")
    said = capsys.readouterr().err
    assert "--smoke: --batch-size 64, --warmup-epochs 1, --max-dendrites 1, --switch-mode fixed, --seeds 0" in said
    assert "--epochs" not in said and "--dendrite-epochs" not in said
    # A warm-up alone: smoke's dendrite cycles grow to leave the network an epoch.
    assert parse_settings(["--smoke", "--dendrite-warmup-epochs", "2"]).dendrite_epochs == 3


def test_a_dendritic_run_that_can_outgrow_its_widest_width_variant_is_refused_before_training(tmp_path):
    """Its seeds would lie outside the width frontier, known only after all the training. By hand, at
    --width 0.125 (8-64 channels): ResNet-18 has 182,252 parameters; layer4.0 holds 18,432 + 36,864 +
    2,048 conv weights and 3 x 128 BatchNorm ones (57,728), layer4.1 2 x (36,864 + 128) = 73,984; one
    dendrite copies both and adds 64 output scales to each: 182,252 + 131,712 + 128 = 314,092."""
    from dendritic_experiment import main
    from dendritic_experiment.models import build_model

    plan = ["--width", "0.125", "--results-dir", str(tmp_path / "results"), "--data-dir", str(tmp_path / "none"),
            "--experiments", "resnet18,resnet18_w1.25,resnet18_dendritic", "--max-dendrites", "1"]
    with pytest.raises(ExperimentError) as refused:
        main.main([*plan, "--dendrite-modules", "layer4.0,layer4.1"])
    message = str(refused.value)
    assert "resnet18_dendritic can reach 314,092 parameters with --max-dendrites 1, beyond its widest width " \
           "variant resnet18_w1.25 (282,270)" in message and "\n" not in message
    named = float(message.split("add resnet18_w")[1].split(" ")[0])
    assert "(the narrowest multiple of 0.05 that covers it)" in message

    def params(multiple):
        return sum(p.numel() for p in build_model(f"resnet18_w{multiple:g}", 100, 0.125).parameters())

    assert params(named) >= 314_092 > params(round(named - 0.05, 2))
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())  # nothing trained
    assert main.cli([*plan, "--dendrite-modules", "layer4.0,layer4.1"]) == 2
    # On layer3's two blocks (14,528 + 18,560 parameters and 2 x 32 scales) it stays within: 215,404 < 282,270
    assert parse_settings([*plan, "--dendrite-modules", "layer3.0,layer3.1"])


def test_an_unknown_dataset_is_refused_in_one_line_whatever_runs_are_planned():
    """The checks of single settings come before those of the runs, which use them (a dendritic run
    with a width frontier looks up the dataset's classes): an unknown dataset is named, not a KeyError."""
    with pytest.raises(ExperimentError) as refused:
        parse_settings(["--experiments", "resnet18,resnet18_w1.5,resnet18_dendritic", "--dataset", "mnist"])
    assert str(refused.value) == "--dataset 'mnist' is not allowed: use cifar100 or cifar10"


def test_a_device_name_main_py_refuses_is_refused_alike_where_a_tool_picks_its_device():
    """predict.py's --device reaches settings.pick_device unchecked: the same one line, not torch's error."""
    from dendritic_experiment.settings import pick_device

    for refuse in (parse_settings, pick_device):
        with pytest.raises(ExperimentError) as refused:
            refuse(["--device", "gpu"] if refuse is parse_settings else "gpu")
        assert str(refused.value) == "--device 'gpu' is not allowed: use auto, cpu, mps, cuda or cuda:N"
