"""The width frontier: what a network's own family buys with parameters spent as width, and how far
a dendritic run lies above or below it at its own parameter count.

A family is a model and its width variants: `resnet18`, `resnet18_w1.25`, `resnet18_w1.5` (a run
named `<model>_w<multiple>` is `<model>` with every channel count times the multiple). Its
frontier is one point per member, the member's mean test accuracy over seeds against its
parameters, joined by straight lines in log(parameters): equal steps in accuracy per equal
*ratio* of parameters. The points are the members' own means, not an upper hull, so seed noise
moves the line both ways rather than only up.

Outside the members' range of parameters there is no frontier: nothing is extrapolated, and
`Frontier.accuracy_at` returns None ("outside the frontier"). A family needs two members of
different sizes to have a frontier at all.

The distance of a dendritic run to the frontier is paired by seed: at each seed, the run's test
accuracy at its own parameter count (a seed's run may keep a different number of dendrites) minus
the frontier drawn from that same seed's baselines; then the mean with a 95% t interval over the
seeds (`intervals.seed_interval`). Accuracies are in points (percent).

    frontier = family_frontier(runs, "resnet18")            # every seed, means per member
    frontier.accuracy_at(12.4e6)                            # points, or None outside the range
    distance_to_frontier(runs, "resnet18_dendritic")        # per seed, mean, 95% interval
"""
import bisect
import math
from dataclasses import dataclass

from dendritic_experiment.intervals import seed_interval
from dendritic_experiment.models import model_and_width
from dendritic_experiment.settings import split_run_name
from dendritic_experiment.utils import ExperimentError

def baseline_width(name):
    """(family, width multiple) of a baseline's run name, or None for any other run:
    'resnet18' -> ('resnet18', 1.0), 'resnet18_w1.25' -> ('resnet18', 1.25),
    'resnet18_dendritic' and 'resnet18_continued' -> None."""
    model, kind = split_run_name(name)
    return model_and_width(model) if kind == "baseline" else None


def family_of(name):
    """The model a run belongs to ('resnet18_w1.25' and 'resnet18_dendritic' -> 'resnet18')."""
    return model_and_width(split_run_name(name)[0])[0]


@dataclass(frozen=True)
class Frontier:
    """One family's members as points (parameters, mean test accuracy in points, run name),
    sorted by parameters; at least two, of different sizes."""
    family: str
    points: tuple

    @property
    def params_range(self):
        return self.points[0][0], self.points[-1][0]

    def weights_at(self, params):
        """The frontier at params as a weighted sum of its members' accuracies: ((name, weight), ...)
        with weights summing to 1 (one member exactly at a point, else the two around params), or
        None outside the range. The same weights apply to per-image correctness, so the frontier's
        accuracy is paired with a run's image by image, too."""
        sizes = [point[0] for point in self.points]
        if not sizes[0] <= params <= sizes[-1]:
            return None
        upper = bisect.bisect_left(sizes, params)
        if sizes[upper] == params:
            return ((self.points[upper][2], 1.0),)
        (small, _, small_name), (large, _, large_name) = self.points[upper - 1], self.points[upper]
        toward_large = (math.log(params) - math.log(small)) / (math.log(large) - math.log(small))
        return (small_name, 1.0 - toward_large), (large_name, toward_large)

    def accuracy_at(self, params):
        """The frontier's accuracy (points) at params, linear in log(params) between the two members
        around it; None outside the members' range (no extrapolation)."""
        weights = self.weights_at(params)
        if weights is None:
            return None
        accuracy = {name: accuracy for _, accuracy, name in self.points}
        return sum(weight * accuracy[name] for name, weight in weights)


def family_frontier(runs, family, seed=None):
    """The frontier of family's baselines in runs (dicts with name, seed, params, test_accuracy):
    each member's mean over its seeds (only seed `seed` when given). None when fewer than two members
    were run; two members of the same size (widths that round to the same channels) are refused."""
    members = {}
    for run in runs:
        width = baseline_width(run["name"])
        if width and width[0] == family and (seed is None or run["seed"] == seed):
            members.setdefault(run["name"], []).append(run)
    points = sorted((mean(run["params"] for run in member), mean(run["test_accuracy"] for run in member), name)
                    for name, member in members.items())
    if len({params for params, _, _ in points}) < len(points):  # settings.check_runs refuses such a plan
        duplicated = sorted(name for params, _, name in points if [p for p, _, _ in points].count(params) > 1)
        raise ExperimentError(f"{', '.join(duplicated)} have the same parameter count, so they draw no width "
                              "frontier: list width variants whose channel counts differ in --experiments")
    if len(points) < 2:
        return None
    return Frontier(family, tuple(points))


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def distance_to_frontier(runs, run_name):
    """run_name's test accuracy minus its family's width frontier at its own parameter count, paired by
    seed: at every seed where run_name and at least two baselines of its family were run, the
    frontier of that seed's baselines. Returns None when no seed has a frontier, else a dict:
      per_seed: {seed: difference in points, or None where the run lies outside that seed's frontier},
      seeds: the seeds with a difference; difference, low, high: their mean and 95% t interval
      (low and high None with fewer than two), distinguishable: whether the interval excludes 0,
      of_means: the mean run's accuracy minus the mean frontier at the mean run's parameters
      (what a picture of the means shows; None outside), params: the run's mean parameters,
      frontier: the mean frontier's points."""
    family = family_of(run_name)
    own = {run["seed"]: run for run in runs if run["name"] == run_name}
    per_seed = {}
    for seed, run in sorted(own.items()):
        frontier = family_frontier(runs, family, seed)
        if frontier is not None:
            at_params = frontier.accuracy_at(run["params"])
            per_seed[seed] = None if at_params is None else run["test_accuracy"] - at_params
    if not per_seed:
        return None
    seeds = [seed for seed, difference in per_seed.items() if difference is not None]
    differences = [per_seed[seed] for seed in seeds]
    difference, low, high = (seed_interval(differences) if len(differences) > 1
                             else (differences[0] if differences else None, None, None))
    frontier = family_frontier(runs, family)
    params = mean(own[seed]["params"] for seed in per_seed)
    at_mean = frontier.accuracy_at(params)
    return dict(run=run_name, family=family, per_seed=per_seed, seeds=seeds, difference=difference, low=low,
                high=high, distinguishable=low is not None and (low > 0 or high < 0),
                of_means=None if at_mean is None else mean(own[s]["test_accuracy"] for s in per_seed) - at_mean,
                params=params, frontier=[list(point) for point in frontier.points])
