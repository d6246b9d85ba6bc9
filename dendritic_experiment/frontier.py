"""The width frontier: the best test accuracy a family (a model and its width variants, `resnet18_w1.25`; a run's
family is data of its plan) reaches at a parameter count by spending parameters on width, and each run's distance to
it, paired by seed. The rules and the why: docs/method.md, "The width frontier"."""
import bisect
import math
from dataclasses import dataclass

from dendritic_experiment.utils import ExperimentError


@dataclass(frozen=True)
class Frontier:
    """A family's members over `seeds`: (parameters, mean test accuracy in points, run name), sorted
    by parameters; at least two, of different sizes. As data: dict(family, seeds, members)."""
    family: str
    seeds: tuple
    members: tuple

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(tuple(member) for member in self.members))
        object.__setattr__(self, "seeds", tuple(self.seeds))

    @property
    def params_range(self):
        return self.members[0][0], self.members[-1][0]

    @property
    def on(self):
        """The members on the frontier, in order of size: each scores at least as high as every smaller one."""
        best, on = -math.inf, []
        for member in self.members:
            if member[1] >= best:
                on.append(member)
                best = member[1]
        return on

    @property
    def off(self):
        """{member off the frontier: the smaller member that scored highest, which beats it}."""
        on = self.on
        return {member[2]: max((smaller for smaller in on if smaller[0] < member[0]), key=lambda m: m[1])[2]
                for member in self.members if member not in on}

    def weights_at(self, params):
        """The frontier at params as members' weights, ((name, weight), ...) summing to 1, or None outside
        the members' range. Weights, not an accuracy: they apply to each seed's accuracies and to per-image
        correctness alike, so a run is paired with the frontier seed by seed and image by image."""
        low, high = self.params_range
        if not low <= params <= high:
            return None
        on = self.on
        sizes = [member[0] for member in on]
        if params >= sizes[-1]:  # flat beyond the best member: a wider one scored lower
            return ((on[-1][2], 1.0),)
        upper = bisect.bisect_left(sizes, params)
        if sizes[upper] == params:
            return ((on[upper][2], 1.0),)
        (small, _, small_name), (large, _, large_name) = on[upper - 1], on[upper]
        toward_large = (math.log(params) - math.log(small)) / (math.log(large) - math.log(small))
        return (small_name, 1.0 - toward_large), (large_name, toward_large)

    def accuracy_at(self, params):
        """The frontier's accuracy (points) at params; None outside the members' range."""
        weights = self.weights_at(params)
        if weights is None:
            return None
        mean_of = {name: accuracy for _, accuracy, name in self.members}
        return sum(weight * mean_of[name] for name, weight in weights)

    def as_dict(self):
        return dict(family=self.family, seeds=list(self.seeds), members=[list(member) for member in self.members])


def family_frontier(runs, family):
    """The frontier of family's baselines in runs (dicts with name, kind, family, seed, params,
    test_accuracy), over the seeds at which every member was run. None with fewer than two members or
    no such seed; two members of the same size (widths that round to the same channels) are refused."""
    members = {}
    for run in runs:
        if run["kind"] == "baseline" and run["family"] == family:
            members.setdefault(run["name"], {})[run["seed"]] = run
    sizes = {name: mean(run["params"] for run in by_seed.values()) for name, by_seed in members.items()}
    if len(set(sizes.values())) < len(sizes):  # settings.check_runs refuses such a plan before training
        duplicated = sorted(name for name, size in sizes.items() if list(sizes.values()).count(size) > 1)
        raise ExperimentError(f"{', '.join(duplicated)} have the same parameter count, so they draw no width "
                              "frontier: list width variants whose channel counts differ in --experiments")
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in members.values()))) if members else []
    if len(members) < 2 or not seeds:
        return None
    points = sorted((sizes[name], mean(by_seed[seed]["test_accuracy"] for seed in seeds), name)
                    for name, by_seed in members.items())
    return Frontier(family, seeds, points)


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def weights_against(runs, run_name, frontier):
    """run_name against frontier at each seed's own parameter count (a dendritic run's seeds may keep
    different numbers of dendrites), over the frontier's seeds, as a contrast over runs: ({seed:
    ((run_name, 1), (member, -weight), ...)} inside the members' range, {seed: why not} outside it)."""
    weights, outside = {}, {}
    for run in runs:
        if run["name"] == run_name and run["seed"] in frontier.seeds:
            members = frontier.weights_at(run["params"])
            if members is None:
                outside[run["seed"]] = outside_reason(run, frontier)
            else:
                weights[run["seed"]] = ((run_name, 1.0), *((name, -weight) for name, weight in members))
    return weights, outside


def outside_reason(run, frontier):
    """Why a seed's run lies outside the frontier, in words."""
    (smallest, _, narrowest), (largest, _, widest) = frontier.members[0], frontier.members[-1]
    kept = f"kept {run['dendrites']} dendrite(s): " if run.get("dendrites") else ""
    where = (f"beyond the widest member {widest} ({largest:,.0f})" if run["params"] > largest
             else f"below the narrowest member {narrowest} ({smallest:,.0f})")
    return f"{kept}{run['params']:,.0f} parameters, {where}"
