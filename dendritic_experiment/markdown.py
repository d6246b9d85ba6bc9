"""summary.md: the report's numbers (comparisons.py) in words, the question answered first."""
import math

from dendritic_experiment.comparisons import SIGN_FLIP_SEEDS, aggregate, described, reference_networks
from dendritic_experiment.frontier import Frontier, mean

NEGLIGIBLE_SHARE = 0.001  # dendrites carrying under 0.1% of their layers' output variance do next to nothing
LATENCY_NOTE = "each run's model timed beside the others"


def summary_markdown(summary):
    """summary.md from summary.json alone."""
    runs, headline_entries, frontier = summary["runs"], summary.get("headline", []), summary.get("frontier", [])
    comparisons = summary.get("comparisons", [])
    seeds = sorted({run["seed"] for run in runs})
    lines = ["# Results", ""]
    if len(seeds) == 1:
        lines += [f"**Preliminary: one seed (seed {seeds[0]}).** Its intervals cover test-set noise for these "
                  "trained weights only, not the spread between seeds, which on CIFAR-100 is about the size "
                  "of the effects in question; run `--seeds 0,1,2` for a result.", ""]
    lines += headline_lines(headline_entries, described(runs))
    lines += frontier_lines(frontier, summary.get("frontiers", [])) + table_lines(runs)
    lines += error_removed_lines(summary.get("error_removed", []))
    lines += comparison_lines(comparisons) + power_lines([*headline_entries, *frontier, *comparisons])
    lines += contribution_lines(runs) + ["", "## Method", "", METHOD_NOTE.format(method=method_of(runs))]
    return "\n".join(lines) + "\n"


METHOD_NOTE = (
    "Dendrites: {method}, as the library reported it for each dendritic run: trained jointly with the network "
    "by ordinary backpropagation. This is not Perforated Backpropagation, the correlation-trained "
    "dendrites behind the library authors' published results, which is a separate paid add-on "
    "(perforatedbp) that this project switches off where it is installed. Test accuracy is measured once per run, "
    "after training; model selection and every dendrite decision used the validation split only. *val. acc.* is "
    "the validation accuracy of the model each run reports (the one tested): the last epoch's for a "
    "baseline; for a dendritic run and its control, the model kept by one rule (a cycle's best epoch, kept "
    "when it beats the best so far by more than dendrite_min_gain; otherwise the run goes back to the model "
    "it kept, the starting baseline's own included, and stops). A `_continued` run is the control: the "
    "baseline trained on for the dendritic run's cycles, with the same schedule and batches and no dendrites.")


def method_of(runs):
    """'gradient-descent dendrites (perforatedai, open source), perforatedai 3.2.9': each method and
    library version the dendritic runs recorded."""
    recorded = sorted({run.get("method", "method not recorded") for run in runs if run.get("library")})
    versions = sorted({run["library"] for run in runs if run.get("library")})
    return ", ".join(recorded + versions) or "none (no dendritic run)"


def headline_lines(entries, kinds):
    """Each dendritic run against each larger network, in words."""
    lines = []
    for e in entries:
        answer = (f"{e['run']} is {'below' if e['high'] < 0 else 'above'} {e['against']}" if e["distinguishable"]
                  else f"{e['run']} and {e['against']} cannot be told apart")
        lines += [f"## Does {e['run']} reach {e['against']}?", "",
                  f"- **{e['run']} − {e['against']}**: {interval_text(e)} ({e['method']}): {answer}.",
                  f"- **Share of the {e['small']} → {e['against']} gap that {closer(kinds[e['small']])} closes**: "
                  + gap_text(e), ""]
    return lines


def frontier_lines(entries, lines):
    """Each family's width frontier, and each dendritic run and control against it, in words."""
    text = []
    for line in (Frontier(**line) for line in lines):  # summary.json's form
        off = line.off
        members = ", ".join(f"{name} {params / 1e6:.2f}M {accuracy:.2f}%" + (
            f" (off the frontier: the smaller {off[name]} scored higher)" if name in off else "")
            for params, accuracy, name in line.members)
        text.append(f"- **The {line.family} width frontier** over seed(s) {seed_text(line.seeds)} (mean test accuracy; "
                    f"it never falls as parameters grow: docs/method.md): {members}.")
    for e in entries:
        outside = "; ".join(f"seed {seed} {why}" for seed, why in e["outside"].items())
        if e["difference"] is None:
            text.append(f"- **{e['run']}** lies outside the {e['family']} width frontier in every seed ({outside}): "
                        "nothing is extrapolated; train a wider (or narrower) width variant to place it.")
            continue
        side = "above" if e["difference"] > 0 else "below"
        over = (f" Over seed(s) {seed_text(e['seeds'])} only: {outside}, outside the frontier." if outside else "")
        text.append(f"- **{e['run']} ({e['params'] / 1e6:.2f}M parameters)** is {side} the {e['family']} width "
                    f"frontier by {abs(e['difference']):.2f} points at equal parameters: 95% interval {bounds(e)} "
                    f"({e['method']}); {verdict(e)}.{over}")
    if any(e["kind"] == "control" for e in entries):
        text.append("- A warm-started run trained its baseline's epochs and then its cycles, the frontier's baselines "
                    "theirs only: read the dendritic run's distance beside its control's (the same extra epochs, no "
                    "dendrites).")
    return ["## Dendrites or width: against the width frontier", "", *text, ""] if entries else []


def seed_text(seeds):
    return ", ".join(map(str, seeds))


def verdict(entry):
    return ("distinguishable from zero" if entry["distinguishable"]
            else "not distinguishable from zero (the interval includes 0)")


def power_lines(entries):
    """What each paired comparison's seeds resolve (comparisons.power), in words."""
    lines = []
    for e in entries:
        p = e.get("power")
        if p is None:
            continue
        needed = ", ".join(f"±{target} points {count}" for target, count in p["seeds_needed"].items())
        sign_flip = (f" Exact sign-flip test: p = {p['sign_flip_p']:.3g}." if p["sign_flip_p"] is not None else
                     f" (An exact sign-flip test needs {SIGN_FLIP_SEEDS} or more seeds to reach p < 0.05: its "
                     f"smallest p at {p['seeds']} seeds is {2 / 2 ** p['seeds']:.3g}.)")
        lines.append(f"- **{e['run']} − {e.get('against', 'the width frontier')}**: per-seed differences have sd "
                     f"{p['sd']:.2f} points; these {p['seeds']} seeds resolve ±{p['resolves']:.2f} points; "
                     f"seeds needed for {needed}.{sign_flip}")
    if not lines:
        return []
    return ["", "## How many seeds each difference needs", "",
            "From the paired per-seed differences and the same t test as the intervals: the difference found with "
            "80% power at a two-sided 5% level, from the noncentral t with seeds − 1 degrees of freedom.",
            "", *lines]


def closer(small):
    """What the share of a gap from small (a run's record) measures: from a baseline, the dendritic run's
    extra epochs count too."""
    if small["kind"] == "control":
        return "the dendritic run, beyond equal extra training,"
    return "the dendritic run (its dendrites and its extra epochs together)"


def bounds(entry, fmt="+.2f"):
    """An entry's 95% interval as '[low, high]', the way summary.md and comparison.png write it."""
    return f"[{entry['low']:{fmt}}, {entry['high']:{fmt}}]"


def interval_text(entry):
    return f"{entry['difference']:+.2f} points, 95% interval {bounds(entry)}"


def gap_text(entry):
    gap, share = entry["gap"], entry["gap_closed"]
    if share is None:
        return (f"undefined: the gap itself ({interval_text(gap)}) cannot be told apart from zero, so there is "
                "no gap to close.")
    return f"{share['share']:.0%}, 95% interval {bounds(share, '.0%')} (the gap: {interval_text(gap)})."


def table_lines(runs):
    def cell(row, key, fmt, scale=1):
        return format(row[key] / scale, fmt) if key in row and not math.isnan(row[key]) else "n/a"

    rows = aggregate(runs)
    small, large = (name or "n/a" for name in reference_networks(runs))
    several_seeds = any(len(row["accuracies"]) > 1 for row in rows)
    lines = [
        "## Every run", "",
        "| run | test acc. (%) | " + ("± sd | seeds | " if several_seeds else "") +
        "val. acc. (%) | params (M) | MACs per image (M) | dendrites | + params per dendrite (M) | epochs | start | "
        f"acc. gained vs {small} (points) | {small} error removed | params saved vs {large} | "
        "CPU latency, batch 1 / 32 (ms) | latency vs its baseline |",
        "|---|---:|" + ("---:|---|" if several_seeds else "") +
        "---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    latency_of = {row["name"]: row["latency"] for row in rows}
    for row in rows:
        spread = (f"{cell(row, 'test_sd', '.2f')} | {', '.join(f'{a:.2f}' for a in row['accuracies'])} | "
                  if several_seeds else "")
        lines.append(
            f"| {row['name']} | {row['test_accuracy']:.2f} | {spread}{row['val_accuracy']:.2f} | "
            f"{row['params'] / 1e6:.2f} | {cell(row, 'macs', ',.1f', 1e6)} | {row['dendrites']} | "
            f"{per_dendrite(row)} | {row['epochs']} | {row.get('start', 'scratch')} | "
            f"{cell(row, 'accuracy_gained', '+.2f')} | {cell(row, 'error_removed', '.1%')} | "
            f"{cell(row, 'params_saved', '.1%')} | {latency_text(row)} | "
            f"{latency_ratio(row, latency_of.get(row['family'], math.nan))} |"
        )
    return lines + ["", f"*Error removed*: the share of {small}'s test error that the run removes (of the means; per "
                    "seed with an interval below). *Params saved*: how many fewer parameters than "
                    f"{large}. *MACs per image*: multiply-accumulates of one inference, convolutions and linear layers "
                    "(costs.py); a dendrite adds its module's once more. *CPU latency*: median time of one forward "
                    f"pass of the run's model on this machine's CPU, 1 thread ({LATENCY_NOTE}, dendrites rebuilt in "
                    "plain PyTorch as export.py exports them: latency.py); *vs its baseline*: at batch 1, against its "
                    "family's plain network."]


def latency_text(row):
    times = row.get("latency_ms")
    return "n/a" if not times else " / ".join(f"{ms:.1f}" for ms in times.values())


def latency_ratio(row, baseline):
    return "n/a" if math.isnan(row["latency"]) or math.isnan(baseline) else f"{row['latency'] / baseline:.2f}x"


def error_removed_lines(entries):
    """Each dendritic run's share of the remaining error removed, per seed and with its interval."""
    lines = []
    for e in entries:
        per_seed = ", ".join(f"{share:.1%}" for share in e["shares"])
        lines.append(f"- **{e['run']} against {e['against']}**: {e['share']:.1%}, 95% interval {bounds(e, '.1%')} "
                     f"({e['method']}); per seed ({seed_text(e['seeds'])}): {per_seed}.")
    return ["", "## Remaining error removed", "",
            "(error of the network it is measured against − error of the run) / error of that network, per seed: "
            "the share of the remaining test error the run removes.", "", *lines] if lines else []


def per_dendrite(row):
    """What one dendrite adds, in millions of parameters ('-' for a run without dendrites)."""
    return f"{row['params_per_dendrite'] / 1e6:.3f}" if row.get("params_per_dendrite") else "-"


def comparison_lines(comparisons):
    lines = ["", "## Is each difference real?", ""] if comparisons else []
    for c in comparisons:
        lines.append(f"- **{c['run']} − {c['against']}** ({c['meaning']}): {interval_text(c)} ({c['method']}); "
                     f"{verdict(c)}.")
    return lines


def contribution_lines(runs):
    """What the kept dendrites of each dendritic run add to their layers, in words (mean over seeds)."""
    lines = []
    for name in dict.fromkeys(run["name"] for run in runs if run.get("contribution")):
        seeds = [run for run in runs if run["name"] == name]
        kept = [run["contribution"] for run in seeds if run["dendrites"]]
        if not kept:
            lines.append(f"- **{name}**: no dendrite was kept in any of {len(seeds)} seed(s).")
            continue
        share = mean(f["dendrite_share"] for f in kept)
        scale = mean(f["dendrite_scale"] for f in kept)
        reading = ("next to nothing: in effect the run is its control with unused parameters, and any gain "
                   "over the baseline comes from the extra epochs" if share < NEGLIGIBLE_SHARE
                   else "a measurable part of what those layers compute")
        lines.append(f"- **{name}**: {len(kept)} of {len(seeds)} seed(s) kept dendrites; they carry {share:.3%} of "
                     f"their layers' output variance (mean |dendrites_to_top| {scale:.4f}; measured after training on "
                     f"a fixed batch of validation images): {reading}.")
    return ["", "## What the dendrites contribute", "", *lines] if lines else []
