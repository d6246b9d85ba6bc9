"""The keep rule (keep_rule.py), without training: validation scores given by hand to a dendritic
run (whose tracker, perforatedai's, decides too, and is checked against the rule) and to its control
must give the same decisions, the same kept epoch and the same end, each computed here by hand."""
import pytest
import torch

from dendritic_experiment import continuation, keep_rule
from dendritic_experiment.continuation import ContinuedRun, DendriticRun
from dendritic_experiment.data import Data
from dendritic_experiment.models import build_model
from dendritic_experiment.settings import parse_settings
from dendritic_experiment.train import TrainingSetup

from helpers import TINY_WIDTH

# (the baseline's validation accuracy, each epoch's, min gain, max dendrites; by hand: the decision at
# each cycle's end, the kept epoch, the epochs trained). History mode, patience 2: a cycle ends after
# two epochs without a new best of the cycle (a tie is none), so the cycles are of unequal length.
CASES = {
    # Cycle 1 (epochs 1-4) peaks at 50.75 twice (a tie: the first is kept), 0.75 above the baseline: kept.
    # Cycle 2 (epochs 5-7), with a second dendrite, must beat 50.75 by 0.5 again: 51.25 only ties it.
    "ties and a second cycle that needs twice the gain": (
        50.0, [50.25, 50.75, 50.75, 50.0, 51.25, 51.0, 50.5], 0.5, 3, [True, False], 2, 7),
    # 0.5 above a start of 0.0 is not more than the gain: back to the baseline (the library reads a best
    # score of 0 as none, so without keep_rule's shift it would keep this dendrite).
    "a 0.0 start": (0.0, [0.0, 0.25, 0.5, 0.25, 0.25], 0.5, 3, [False], 0, 5),
    # Cycle 1 (epochs 1-3) 0.5 above: kept at epoch 1. Cycle 2 (epochs 4-7): 60.75 ties 60.5 + 0.25, 61.0
    # beats it (epoch 5, then a tie); the second dendrite is the last allowed: the run ends there.
    "two kept, then the most dendrites": (
        60.0, [60.5, 60.0, 60.0, 60.75, 61.0, 61.0, 60.0], 0.25, 2, [True, True], 5, 7),
}


@pytest.fixture
def decisions(monkeypatch):
    """Every KeepRule.end_cycle's answer, in order."""
    answers, real_end_cycle = [], keep_rule.KeepRule.end_cycle

    def end_cycle(self, library_kept=None):
        answers.append(real_end_cycle(self, library_kept))
        return answers[-1]

    monkeypatch.setattr(keep_rule.KeepRule, "end_cycle", end_cycle)
    return answers


def given_start(monkeypatch, start):
    """Both runs score the finished baseline (evaluate) at start: that is the score they start from."""
    monkeypatch.setattr(continuation, "evaluate", lambda *args, **kwargs: {"accuracy": start})


@pytest.mark.parametrize("case", CASES)
def test_a_dendritic_run_and_its_control_keep_the_same_cycles(case, tiny, tmp_path, monkeypatch, decisions):
    start, scores, min_gain, max_dendrites, expected_decisions, kept_epoch, end = CASES[case]
    settings = parse_settings(["--switch-mode", "history", "--history-epochs", "2", "--dendrite-min-gain",
                               str(min_gain), "--max-dendrites", str(max_dendrites)])
    setup = TrainingSetup(settings, torch.device("cpu"), "fp32")
    images, labels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.tensor([1, 2, 3, 4])
    data = Data(images, labels, images, labels, images, labels, [f"class {i}" for i in range(100)])
    baseline = build_model("resnet18", width=TINY_WIDTH).state_dict()
    given_start(monkeypatch, start)

    dendritic = DendriticRun("resnet18", data, setup, 1, str(tmp_path / "run"), baseline)
    dendrite_counts = []
    try:
        dendritic.start()
        for epoch, score in enumerate(scores, 1):
            dendrite_counts.append(dendritic.dendrites.dendrite_count)
            if dendritic.end_epoch(epoch, score, score) and not dendritic.complete:
                dendritic.dendrites.learn_shapes(*continuation.prepare_sample(data, setup))  # as the next epoch's first backward would
            if dendritic.complete:
                break
    finally:
        dendritic.close()
    assert (decisions, dendritic.keep.kept_epoch, epoch) == (expected_decisions, kept_epoch, end)
    assert dendritic.dendrites.dendrite_count == sum(expected_decisions)
    cycles = [dendrite_counts.count(n) for n in sorted(set(dendrite_counts))]

    decisions.clear()
    control = ContinuedRun("resnet18", data, setup, 1, baseline, cycles, lrs=[0.01] * sum(cycles))
    control.start()
    for epoch, score in enumerate(scores, 1):
        control.begin_epoch(epoch)
        control.end_epoch(epoch, score, score)
        if control.complete:
            break
    assert (decisions, control.keep.kept_epoch, epoch) == (expected_decisions, kept_epoch, end)


def test_the_library_deciding_otherwise_than_the_rule_stops_the_run(tmp_path):
    """The one place the library's decision meets the rule's: a disagreement is an error, not a guess."""
    settings = parse_settings(["--dendrite-min-gain", "0.5"])
    rule = keep_rule.KeepRule(settings, start_val_accuracy=50.0)
    rule.add(1, 50.25, dendrites=1)  # 0.25 above the start: not enough
    with pytest.raises(keep_rule.LibraryDisagrees, match="perforatedai kept the dendrite of the cycle that ended at "
                       "epoch 1, but the keep rule removes it"):
        rule.end_cycle(library_kept=True)
