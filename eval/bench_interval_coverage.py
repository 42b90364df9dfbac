"""How often the paired accuracy interval misses the true drop, old bootstrap against the score
interval, when a variant breaks only a handful of the baseline's predictions.

Simulation (issue 18's design): the baseline is right on each held-out sample with probability
0.92; the variant breaks each of the baseline's correct predictions with probability
``drop / 0.92`` and fixes none, so the true drop is known. Each row draws ``--sets`` held-out sets
and computes, for each, the 95% interval of the change with

- the paired percentile bootstrap compress used before (2,000 resamples, seeded per set), and
- ``compress.measure.stats.paired_diff_interval`` (the corrected Tango score interval).

It prints a Markdown table: how often the interval's upper bound of the drop is below the truth
(the gate's risk, nominal 2.5%), with a one-sided 95% Clopper-Pearson upper bound of that rate
over the sets and the exact rate for the score interval (a sum over every possible count); how often the lower bound of the drop is above the truth (the other end); how often
the interval is [0, 0]; and the mean upper bound of the drop.

    python eval/bench_interval_coverage.py --sets 2000
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats as sps

from compress.measure.stats import paired_diff_interval, paired_score_interval

BASELINE_TOP1 = 0.92
ROWS = ((1000, 0.2), (1000, 0.3), (1000, 0.5), (539, 0.5), (5000, 0.1))


def old_bootstrap(variant: np.ndarray, baseline: np.ndarray, seed: int,
                  n_resamples: int = 2000) -> tuple[float, float]:
    """The paired percentile bootstrap of compress before issue 18, in points (low, high)."""
    n = variant.size
    counts = np.array([np.count_nonzero(variant & ~baseline), np.count_nonzero(~variant & baseline)])
    draws = np.random.default_rng(seed).multinomial(
        n, np.append(counts, n - counts.sum()) / n, n_resamples
    )
    low, high = np.quantile(100.0 * (draws[:, 0] - draws[:, 1]) / n, [0.025, 0.975])
    return float(low), float(high)


def upper_bound_of_rate(misses: int, sets: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a miss rate, in percent."""
    return 100.0 * (1.0 if misses == sets else float(sps.beta.ppf(0.95, misses + 1, sets - misses)))


def exact_miss_rates(n: int, drop_points: float) -> tuple[float, float]:
    """Exact chance, in percent, that the score interval's drop upper bound is below the truth and
    that its drop lower bound is above it: here the broken count is Binomial(n, drop) and no
    prediction is fixed, so the sum over every possible count replaces the simulation."""
    rate = drop_points / 100.0
    counts = np.arange(0, int(n * rate + 12 * np.sqrt(n * rate) + 15))
    weights = sps.binom.pmf(counts, n, rate)
    below = above = 0.0
    for k, w in zip(counts, weights, strict=True):
        interval = paired_score_interval(0, int(k), n)
        below += w * (interval.low > -drop_points)
        above += w * (interval.high < -drop_points)
    return 100.0 * below, 100.0 * above


def row(n: int, drop_points: float, sets: int, rng: np.random.Generator) -> dict:
    truth = -drop_points
    break_rate = drop_points / 100.0 / BASELINE_TOP1
    out = {name: {"below": 0, "above": 0, "zero": 0, "upper_sum": 0.0} for name in ("old", "new")}
    for s in range(sets):
        baseline = rng.random(n) < BASELINE_TOP1
        variant = baseline & ~(rng.random(n) < break_rate)
        new = paired_diff_interval(variant, baseline)
        for name, (low, high) in (("old", old_bootstrap(variant, baseline, seed=s)),
                                  ("new", (new.low, new.high))):
            tally = out[name]
            tally["below"] += low > truth + 1e-12  # drop upper bound below the true drop
            tally["above"] += high < truth - 1e-12  # drop lower bound above the true drop
            tally["zero"] += low == high == 0.0
            tally["upper_sum"] += -low
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=2000, help="simulated held-out sets per row")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.sets} simulated held-out sets per row; baseline {100 * BASELINE_TOP1:.0f}% "
          "correct; the variant breaks a fraction of the baseline's correct predictions.\n")
    print("| n held-out | true drop | drop upper bound below the truth: old bootstrap | "
          "score interval (95% upper bound of the rate) | score interval, exact | "
          "drop lower bound above the truth: old / score (exact) | interval [0, 0]: old / score | "
          "mean upper bound of the drop: old / score |")
    print("|---|---|---|---|---|---|---|---|")
    for n, drop in ROWS:
        r = row(n, drop, args.sets, rng)
        old, new = r["old"], r["new"]
        exact_below, exact_above = exact_miss_rates(n, drop)
        pct = lambda k: 100.0 * k / args.sets  # noqa: E731
        print(f"| {n:,} | {drop:.2f} pt | {pct(old['below']):.1f}% | {pct(new['below']):.1f}% "
              f"(<= {upper_bound_of_rate(new['below'], args.sets):.1f}%) | {exact_below:.2f}% | "
              f"{pct(old['above']):.1f}% / {pct(new['above']):.1f}% ({exact_above:.2f}%) | "
              f"{pct(old['zero']):.1f}% / {pct(new['zero']):.1f}% | "
              f"{old['upper_sum'] / args.sets:.2f} / {new['upper_sum'] / args.sets:.2f} pt |",
              flush=True)


if __name__ == "__main__":
    main()
