"""The width frontier and a dendritic run's distance to it, against values computed by hand."""
import math

import pytest

from dendritic_experiment import frontier
from dendritic_experiment.utils import ExperimentError

# A family of three widths, parameters 1M, 4M, 16M: each step is x4, so log-linear interpolation puts
# 2M halfway between the first two members and 8M halfway between the last two.
PARAMS = {"resnet18": 1e6, "resnet18_w2": 4e6, "resnet18_w4": 16e6}
ACCURACY = {  # by seed 0, 1
    "resnet18": (60.0, 62.0),
    "resnet18_w2": (66.0, 66.0),
    "resnet18_w4": (70.0, 72.0),
    "resnet18_dendritic": (64.0, 63.0),
}


def runs(dendritic_params=(2e6, 8e6)):
    table = [dict(name=name, seed=seed, params=params, test_accuracy=ACCURACY[name][seed])
             for name, params in PARAMS.items() for seed in (0, 1)]
    return table + [dict(name="resnet18_dendritic", seed=seed, params=dendritic_params[seed],
                         test_accuracy=ACCURACY["resnet18_dendritic"][seed]) for seed in (0, 1)]


def test_names_split_into_family_and_width():
    assert frontier.baseline_width("resnet18") == ("resnet18", 1.0)
    assert frontier.baseline_width("resnet18_w1.25") == ("resnet18", 1.25)
    assert frontier.baseline_width("resnet18_dendritic") is None
    assert frontier.baseline_width("resnet18_w1.25_dendritic") is None
    assert frontier.family_of("resnet18_w1.25") == frontier.family_of("resnet18_dendritic") == "resnet18"


def test_the_frontier_is_the_members_means_interpolated_in_log_parameters():
    line = frontier.family_frontier(runs(), "resnet18")
    assert [name for _, _, name in line.points] == ["resnet18", "resnet18_w2", "resnet18_w4"]
    # means over seeds: 61, 66, 71
    assert line.accuracy_at(1e6) == pytest.approx(61.0) and line.accuracy_at(4e6) == pytest.approx(66.0)
    assert line.accuracy_at(2e6) == pytest.approx(63.5)  # halfway in log(parameters): (61 + 66) / 2
    assert line.accuracy_at(8e6) == pytest.approx(68.5)  # (66 + 71) / 2
    # a quarter of the way from 1M to 4M in log terms: 4 ** 0.25 = sqrt(2) M
    assert line.accuracy_at(math.sqrt(2) * 1e6) == pytest.approx(61.0 + 0.25 * 5.0)
    assert line.accuracy_at(0.99e6) is None and line.accuracy_at(17e6) is None  # no extrapolation
    assert line.weights_at(2e6) == (("resnet18", pytest.approx(0.5)), ("resnet18_w2", pytest.approx(0.5)))
    assert frontier.family_frontier(runs(), "resnet18", seed=1).accuracy_at(8e6) == pytest.approx((66.0 + 72.0) / 2)


def test_one_member_is_no_frontier():
    only_resnet18 = [run for run in runs() if run["name"] in ("resnet18", "resnet18_dendritic")]
    assert frontier.family_frontier(only_resnet18, "resnet18") is None
    assert frontier.distance_to_frontier(only_resnet18, "resnet18_dendritic") is None


def test_the_distance_is_paired_by_seed_at_each_seeds_own_parameters():
    distance = frontier.distance_to_frontier(runs(), "resnet18_dendritic")
    # seed 0 at 2M: 64 - (60 + 66) / 2 = +1; seed 1 at 8M: 63 - (66 + 72) / 2 = -6
    assert distance["per_seed"] == {0: pytest.approx(1.0), 1: pytest.approx(-6.0)}
    assert distance["difference"] == pytest.approx(-2.5)
    # t interval over 2 seeds: sd of (1, -6) = 7 / sqrt(2), half width 12.706 * sd / sqrt(2) = 12.706 * 3.5
    assert (distance["low"], distance["high"]) == (pytest.approx(-2.5 - 12.706 * 3.5), pytest.approx(-2.5 + 12.706 * 3.5))
    assert not distance["distinguishable"]
    # the picture's version: mean run (63.5 at 5M) against the mean frontier at 5M
    at_5m = 66.0 + (71.0 - 66.0) * math.log(5 / 4) / math.log(4)
    assert distance["params"] == 5e6 and distance["of_means"] == pytest.approx(63.5 - at_5m)


def test_a_seed_outside_its_frontier_is_left_out_not_extrapolated():
    distance = frontier.distance_to_frontier(runs(dendritic_params=(2e6, 20e6)), "resnet18_dendritic")
    assert distance["per_seed"] == {0: pytest.approx(1.0), 1: None}
    assert distance["seeds"] == [0] and distance["difference"] == pytest.approx(1.0)
    assert distance["low"] is None and distance["high"] is None and not distance["distinguishable"]
    # the mean of every seed (63.5 at 11M) lies inside the mean frontier, between 4M and 16M
    assert distance["of_means"] == pytest.approx(63.5 - (66.0 + 5.0 * math.log(11 / 4) / math.log(4)))


def test_two_members_of_the_same_size_are_refused_by_name():
    same_size = runs() + [dict(name="resnet18_w1.01", seed=0, params=1e6, test_accuracy=60.0)]
    with pytest.raises(ExperimentError, match="resnet18, resnet18_w1.01 have the same parameter count"):
        frontier.family_frontier(same_size, "resnet18")
    two_of_one_size = [run for run in same_size if run["name"] in ("resnet18", "resnet18_w1.01")]
    with pytest.raises(ExperimentError, match="resnet18, resnet18_w1.01 have the same parameter count"):
        frontier.family_frontier(two_of_one_size, "resnet18")  # not silently no frontier
