"""latency.measure_latency: models timed side by side, in turn, in eval mode, without gradients, on the
threads asked for. What it measures is not tested here (speed belongs in a benchmark: tests/latency_table.py)."""
import torch

from dendritic_experiment.export import export_program
from dendritic_experiment.latency import measure_latency
from dendritic_experiment.models import build_model

from helpers import TINY_WIDTH


def test_every_model_gets_a_median_per_batch_size_and_any_module_or_exported_program_works():
    eager = build_model("resnet18", 100, TINY_WIDTH).train()
    exported = export_program(build_model("resnet18", 100, TINY_WIDTH)).module()
    previous = torch.get_num_threads()
    latency = measure_latency({"eager": eager, "exported": exported}, batch_sizes=(1, 3), seconds=0.01)
    assert set(latency) == {"eager", "exported"}
    assert all(set(times) == {1, 3} and all(ms > 0 for ms in times.values()) for times in latency.values())
    assert not eager.training and torch.get_num_threads() == previous


def test_models_are_called_in_turn_each_round_starting_with_the_next_one_on_the_threads_asked_for():
    calls = []

    def recorder(name):
        def model(images):
            calls.append((name, images.shape[0], torch.is_grad_enabled(), torch.get_num_threads()))
        return model

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        latency = measure_latency({name: recorder(name) for name in "abc"}, batch_sizes=(4,), threads=1, seconds=0,
                                  warmup_rounds=1, min_rounds=3, max_rounds=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert "".join(name for name, *_ in calls) == "abc" + "abc" + "bca" + "cab"  # the warm-up round, then 3 rounds
    assert {(batch, grad, threads) for _, batch, grad, threads in calls} == {(4, False, 1)}
    assert set(latency) == {"a", "b", "c"} and all(set(times) == {4} for times in latency.values())
