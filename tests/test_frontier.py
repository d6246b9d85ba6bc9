"""The width frontier and a run's distance to it, against values computed by hand."""
import math

import pytest

from dendritic_experiment import frontier
from dendritic_experiment.comparisons import frontier_entries
from dendritic_experiment.utils import ExperimentError

from helpers import as_planned

# A family of three widths, parameters 1M, 4M, 16M: each step is x4, so log-linear interpolation puts
# 2M halfway between the first two members and 8M halfway between the last two.
PARAMS = {"resnet18": 1e6, "resnet18_w2": 4e6, "resnet18_w4": 16e6}
ACCURACY = {  # by seed 0, 1
    "resnet18": (60.0, 62.0),
    "resnet18_w2": (66.0, 66.0),
    "resnet18_w4": (70.0, 72.0),
    "resnet18_dendritic": (64.0, 63.0),
}
T_975_1 = 12.7062  # Student's t, 97.5% quantile, 1 degree of freedom (tables)


def runs(dendritic_params=(2e6, 8e6), accuracy=ACCURACY):
    table = [dict(name=name, seed=seed, params=params, test_accuracy=accuracy[name][seed])
             for name, params in PARAMS.items() for seed in (0, 1)]
    return as_planned(table + [dict(name="resnet18_dendritic", seed=seed, params=dendritic_params[seed], dendrites=seed + 1,
                                    test_accuracy=accuracy["resnet18_dendritic"][seed]) for seed in (0, 1)])


def test_the_frontier_is_the_members_means_interpolated_in_log_parameters():
    line = frontier.family_frontier(runs(), "resnet18")
    assert [name for _, _, name in line.members] == ["resnet18", "resnet18_w2", "resnet18_w4"]
    assert line.seeds == (0, 1) and line.off == {}
    # means over seeds: 61, 66, 71
    assert line.accuracy_at(1e6) == pytest.approx(61.0) and line.accuracy_at(4e6) == pytest.approx(66.0)
    assert line.accuracy_at(2e6) == pytest.approx(63.5)  # halfway in log(parameters): (61 + 66) / 2
    assert line.accuracy_at(8e6) == pytest.approx(68.5)  # (66 + 71) / 2
    # a quarter of the way from 1M to 4M in log terms: 4 ** 0.25 = sqrt(2) M
    assert line.accuracy_at(math.sqrt(2) * 1e6) == pytest.approx(61.0 + 0.25 * 5.0)
    assert line.accuracy_at(0.99e6) is None and line.accuracy_at(17e6) is None  # no extrapolation
    assert line.weights_at(2e6) == (("resnet18", pytest.approx(0.5)), ("resnet18_w2", pytest.approx(0.5)))
    assert frontier.Frontier(**line.as_dict()) == line  # summary.json's form draws the same line


def distance(table, run_name, line):
    """run_name's entry against line, as the report computes it (the contrast of frontier.weights_against)."""
    return next(entry for entry in frontier_entries(table, run_dirs={}, lines=[line]) if entry["run"] == run_name)


def test_a_wider_member_that_scored_lower_is_off_the_frontier_which_stays_flat():
    # means 61, 66, 64: resnet18_w4 scored below the smaller resnet18_w2, so from 4M to 16M the frontier
    # is resnet18_w2's 66, never the falling line towards 64.
    dip = dict(ACCURACY, resnet18_w4=(63.0, 65.0), resnet18_dendritic=(66.5, 68.0))
    line = frontier.family_frontier(runs(dendritic_params=(8e6, 8e6), accuracy=dip), "resnet18")
    assert line.off == {"resnet18_w4": "resnet18_w2"}
    assert [name for _, _, name in line.on] == ["resnet18", "resnet18_w2"]
    assert line.accuracy_at(8e6) == pytest.approx(66.0) and line.accuracy_at(16e6) == pytest.approx(66.0)
    assert line.weights_at(8e6) == (("resnet18_w2", 1.0),)
    params = [1e6 * 1.1 ** k for k in range(30)]  # 1M to 15.9M
    assert all(line.accuracy_at(a) <= line.accuracy_at(b) for a, b in zip(params, params[1:]))
    entry = distance(runs(dendritic_params=(8e6, 8e6), accuracy=dip), "resnet18_dendritic", line)
    # each seed against its own resnet18_w2: 66.5 - 66, 68 - 66 = 0.5, 2.0 (the falling line would say 1.75, 2.5)
    assert entry["differences"] == [pytest.approx(0.5), pytest.approx(2.0)]
    assert entry["difference"] == pytest.approx(1.25)
    # sd of (0.5, 2.0) = 1.5 / sqrt(2); half width 12.706 * sd / sqrt(2) = 12.706 * 0.75
    assert (entry["low"], entry["high"]) == (pytest.approx(1.25 - T_975_1 * 0.75, abs=1e-3),
                                             pytest.approx(1.25 + T_975_1 * 0.75, abs=1e-3))


def test_a_member_in_the_middle_that_dips_is_bridged():
    # means 61, 58, 71: resnet18_w2 is beaten by resnet18; the frontier runs from 1M straight to 16M,
    # and at 4M (halfway in log-parameters) it is (61 + 71) / 2 = 66.
    dip = dict(ACCURACY, resnet18_w2=(57.0, 59.0))
    line = frontier.family_frontier(runs(accuracy=dip), "resnet18")
    assert line.off == {"resnet18_w2": "resnet18"}
    assert line.accuracy_at(4e6) == pytest.approx(66.0)
    assert line.weights_at(4e6) == (("resnet18", pytest.approx(0.5)), ("resnet18_w4", pytest.approx(0.5)))


def test_one_member_is_no_frontier():
    only_resnet18 = [run for run in runs() if run["name"] in ("resnet18", "resnet18_dendritic")]
    assert frontier.family_frontier(only_resnet18, "resnet18") is None


def test_the_distance_is_paired_by_seed_at_each_seeds_own_parameters():
    table = runs()
    line = frontier.family_frontier(table, "resnet18")
    weights, outside = frontier.weights_against(table, "resnet18_dendritic", line)
    # seed 0 at 2M: halfway between resnet18 and resnet18_w2; seed 1 at 8M: between resnet18_w2 and resnet18_w4
    assert weights == {0: (("resnet18_dendritic", 1.0), ("resnet18", pytest.approx(-0.5)), ("resnet18_w2", pytest.approx(-0.5))),
                       1: (("resnet18_dendritic", 1.0), ("resnet18_w2", pytest.approx(-0.5)), ("resnet18_w4", pytest.approx(-0.5)))}
    entry = distance(table, "resnet18_dendritic", line)
    # seed 0: 64 - (60 + 66) / 2 = +1; seed 1: 63 - (66 + 72) / 2 = -6
    assert entry["seeds"] == [0, 1] and entry["differences"] == [pytest.approx(1.0), pytest.approx(-6.0)]
    assert entry["difference"] == pytest.approx(-2.5) and entry["outside"] == outside == {}
    # t interval over 2 seeds: sd of (1, -6) = 7 / sqrt(2), half width 12.706 * sd / sqrt(2) = 12.706 * 3.5
    assert (entry["low"], entry["high"]) == (pytest.approx(-2.5 - T_975_1 * 3.5, abs=1e-3),
                                             pytest.approx(-2.5 + T_975_1 * 3.5, abs=1e-3))
    assert not entry["distinguishable"]
    # where the picture draws it from: the run's mean over these seeds
    assert (entry["params"], entry["accuracy"]) == (5e6, 63.5)


def test_a_seed_outside_the_frontier_is_named_with_its_reason():
    table = runs(dendritic_params=(2e6, 20e6))
    weights, outside = frontier.weights_against(table, "resnet18_dendritic", frontier.family_frontier(table, "resnet18"))
    assert list(weights) == [0]  # seed 1 is not compared, and says why
    assert outside == {1: "kept 2 dendrite(s): 20,000,000 parameters, beyond the widest member resnet18_w4 (16,000,000)"}


def test_the_frontier_is_over_the_seeds_every_member_was_run_at():
    table = [run for run in runs() if (run["name"], run["seed"]) != ("resnet18_w4", 1)]
    line = frontier.family_frontier(table, "resnet18")
    assert line.seeds == (0,) and line.accuracy_at(16e6) == pytest.approx(70.0)
    weights, outside = frontier.weights_against(table, "resnet18_dendritic", line)
    assert list(weights) == [0] and outside == {}


def test_two_members_of_the_same_size_are_refused_by_name():
    same_size = runs() + as_planned([dict(name="resnet18_w1.01", seed=0, params=1e6, test_accuracy=60.0)])
    with pytest.raises(ExperimentError, match="resnet18, resnet18_w1.01 have the same parameter count"):
        frontier.family_frontier(same_size, "resnet18")
    two_of_one_size = [run for run in same_size if run["name"] in ("resnet18", "resnet18_w1.01")]
    with pytest.raises(ExperimentError, match="resnet18, resnet18_w1.01 have the same parameter count"):
        frontier.family_frontier(two_of_one_size, "resnet18")  # not silently no frontier
