"""95% intervals of paired contrasts and ratios (over seeds, or a paired bootstrap over test images
with one seed) and the power of paired seeds; accuracies in points (percent). The rules and the
why: docs/method.md, "Seeds and intervals"."""
import itertools
import math

import numpy as np

BOOTSTRAP_RESAMPLES = 10000
POWER = 0.8  # the chance that a true difference of the stated size is found (two-sided 5% t test)
EXACT_SIGN_FLIPS = 16  # up to 2^16 sign patterns are enumerated; beyond, as many are drawn at random


def t_975(degrees_of_freedom):
    """The two-sided 95% quantile of Student's t."""
    from scipy import stats  # where an interval is computed: importing it costs every run of main.py 0.7 s

    return float(stats.t.ppf(0.975, degrees_of_freedom))


def mean_and_covariance(xs, ys):
    n = len(xs)
    x_mean, y_mean = sum(xs) / n, sum(ys) / n
    covariance = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys)) / (n - 1)
    return x_mean, covariance


def sd(values):
    """The sample standard deviation (n - 1) of at least two values."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def seed_interval(differences):
    """Mean and 95% t interval of paired per-seed differences (at least two)."""
    n = len(differences)
    mean, variance = mean_and_covariance(differences, differences)
    half = t_975(n - 1) * math.sqrt(variance / n)
    return mean, mean - half, mean + half


def seed_ratio_interval(numerators, denominators):
    """mean(numerators) / mean(denominators) with Fieller's 95% interval (the ratios r for which a t test
    does not reject mean(numerator - r * denominator) = 0), from paired per-seed values (at least two).
    (ratio, low, high), or None when the denominator's mean cannot be told from zero: no bounded interval."""
    n = len(numerators)
    a, aa = mean_and_covariance(numerators, numerators)
    b, bb = mean_and_covariance(denominators, denominators)
    _, ab = mean_and_covariance(numerators, denominators)
    q = t_975(n - 1) ** 2 / n
    # (a - r b)^2 <= q (aa - 2 r ab + r^2 bb), as A r^2 - 2 B r + C <= 0:
    big_a, big_b, big_c = b * b - q * bb, a * b - q * ab, a * a - q * aa
    if big_a <= 0:
        return None
    root = math.sqrt(max(0.0, big_b * big_b - big_a * big_c))
    return a / b, (big_b - root) / big_a, (big_b + root) / big_a


def resampled_accuracies(correct):
    """(the k accuracies, BOOTSTRAP_RESAMPLES x k accuracies of resampled image sets) from correct: k runs'
    per-image correctness on the same n images. Each image is one of 2^k right/wrong patterns, so a
    resample is a multinomial draw of the patterns' counts: 10,000 of them cost nothing."""
    correct = np.asarray(correct, dtype=bool)
    k, n = correct.shape
    patterns = (correct * (1 << np.arange(k))[:, None]).sum(axis=0)
    counts = np.bincount(patterns, minlength=2 ** k)
    right_in = (np.arange(2 ** k)[:, None] >> np.arange(k)) & 1  # pattern -> which runs are right
    draws = np.random.default_rng(0).multinomial(n, counts / n, size=BOOTSTRAP_RESAMPLES)  # a fixed draw: reproducible
    return 100 * counts @ right_in / n, 100 * draws @ right_in / n


def percentile_interval(samples):
    """The 2.5th and 97.5th percentiles of samples, leaving out NaN (a resampled share of 0 / 0)."""
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_contrast(weighted):
    """A weighted sum of runs' accuracies (weighted: [(per-image correctness, weight)]; a - b is
    [(a, 1), (b, -1)]) with its paired bootstrap 95% interval over test images."""
    observed, resampled = resampled_accuracies([correct for correct, _ in weighted])
    weights = np.array([weight for _, weight in weighted])
    return (float(observed @ weights), *percentile_interval(resampled @ weights))


def bootstrap_ratio_interval(correct_run, correct_small, correct_large):
    """From one paired bootstrap: the gap large - small with its 95% interval, and (run - small) /
    (large - small) with its 95% interval, or None when the gap's includes zero."""
    observed, resampled = resampled_accuracies([correct_run, correct_small, correct_large])
    gap = resampled[:, 2] - resampled[:, 1]
    gap_interval = (float(observed[2] - observed[1]), *percentile_interval(gap))
    if gap_interval[1] <= 0 <= gap_interval[2]:
        return gap_interval, None
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample with no gap at all: an infinite share
        shares = (resampled[:, 0] - resampled[:, 1]) / gap
    share = float((observed[0] - observed[1]) / (observed[2] - observed[1]))
    return gap_interval, (share, *percentile_interval(shares))


def bootstrap_error_removed(correct_run, correct_against):
    """The share of against's remaining error that run removes, with a paired bootstrap 95% interval."""
    observed, resampled = resampled_accuracies([correct_run, correct_against])
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample where against gets every image right
        shares = (resampled[:, 0] - resampled[:, 1]) / (100 - resampled[:, 1])
    return (float((observed[0] - observed[1]) / (100 - observed[1])), *percentile_interval(shares))


def t_test_power(effect, seeds):
    """The chance that a two-sided 5% paired t test over `seeds` seeds finds a true mean difference of
    `effect` sds of the per-seed differences. The lower tail is taken as the upper tail of -effect:
    scipy computes that without underflow."""
    from scipy import stats

    df, noncentrality = seeds - 1, effect * math.sqrt(seeds)
    critical = t_975(df)
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality))


def resolved_difference(sd_difference, seeds):
    """The difference (points) that `seeds` paired seeds find with POWER, given the sd of the per-seed differences."""
    from scipy import optimize

    effect = optimize.brentq(lambda effect: t_test_power(effect, seeds) - POWER, 0.0, 100.0, xtol=1e-6)
    return effect * sd_difference


def seeds_needed(sd_difference, difference):
    """The fewest paired seeds (at least 2: an interval needs two) that find `difference` points with
    POWER, given the sd of the per-seed differences (0.5 sd: 34 seeds, 1 sd: 10, 1.5 sd: 6)."""
    effect = difference / sd_difference if sd_difference > 0 else math.inf
    enough = 2  # doubled until enough, then bisected: power rises with seeds, and a small effect needs thousands
    while t_test_power(effect, enough) < POWER:
        enough *= 2
    too_few = enough // 2 if enough > 2 else 1
    while enough - too_few > 1:
        middle = (too_few + enough) // 2
        too_few, enough = (too_few, middle) if t_test_power(effect, middle) >= POWER else (middle, enough)
    return enough


def sign_flip_p(differences):
    """Two-sided p of the exact sign-flip test of paired differences: the share of the 2^n sign patterns
    whose mean is at least as far from zero as the observed one (at least 2 / 2^n: 0.25 at 3 seeds)."""
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    if n <= EXACT_SIGN_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(2 ** EXACT_SIGN_FLIPS, n))
    observed = abs(differences.mean())
    return float(np.mean(np.abs(signs @ differences / n) >= observed - 1e-9))
