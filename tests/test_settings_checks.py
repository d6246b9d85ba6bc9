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
