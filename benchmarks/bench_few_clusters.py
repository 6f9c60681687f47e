"""Seeded simulation: one-sided miss of CR1 + t(G-1) and of the wild cluster bootstrap-t.

Each scenario draws ``G`` weekly clusters of decisions (a per-week rate with a
week effect, then binomial decisions), computes the rate and, for the side the
gate uses (the lower bound of a rate where higher is better, the upper bound
of one where lower is better), whether the true rate lies beyond that 95%
bound. Nominal miss: 2.5%. The test of a bound at the true value is the test
the interval inverts, so the wild bootstrap's miss is the share of replications
whose one-sided p-value at the truth is below 0.025.

    python benchmarks/bench_few_clusters.py            # 4,000 replications a scenario
    python benchmarks/bench_few_clusters.py --reps 20000 --clusters 12 8 20

The small seeded version is tests/test_clustered.py::test_few_cluster_coverage_*.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import stats

from pilot_lib.analysis import clustered


class Scenario(NamedTuple):
    """A data-generating process: ``draw(rng, G) -> (totals, counts)`` and its true rate."""

    name: str
    side: str  # "lower" (higher is better: the gate uses the lower bound) or "upper"
    draw: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    truth: float


def _weekly(rng: np.random.Generator, p: np.ndarray, volume: int) -> tuple[np.ndarray, np.ndarray]:
    n = rng.poisson(volume, size=p.size).astype(float)
    y = rng.binomial(n.astype(int), np.clip(p, 0, 1)).astype(float)
    return y, n


def scenarios() -> list[Scenario]:
    """The scenarios of docs/decisions.md (rates and effects like the sample pilots')."""

    def gaussian(rng: np.random.Generator, g: int) -> tuple[np.ndarray, np.ndarray]:
        return _weekly(rng, 0.86 + rng.normal(0, 0.03, g), 400)

    def incident(rng: np.random.Generator, g: int) -> tuple[np.ndarray, np.ndarray]:
        hit = rng.random(g) < 0.25
        return _weekly(rng, 0.86 + rng.normal(0, 0.015, g) - 0.08 * hit, 400)

    def outage(rng: np.random.Generator, g: int) -> tuple[np.ndarray, np.ndarray]:
        hit = rng.random(g) < 1 / 6
        return _weekly(rng, 0.12 + rng.normal(0, 0.02, g) + 0.06 * hit, 150)

    def invoice(rng: np.random.Generator, g: int) -> tuple[np.ndarray, np.ndarray]:
        hit = rng.random(g) < 0.25
        return _weekly(rng, 0.82 + rng.normal(0, 0.02, g) - 0.06 * hit, 120)

    return [
        Scenario("Gaussian week effects (completion 86%, sd 3 points)", "lower", gaussian, 0.86),
        Scenario(
            "a quarter of the weeks in an incident (completion 86%, -8 points)",
            "lower",
            incident,
            0.86 - 0.25 * 0.08,
        ),
        Scenario(
            "invoice-like: a quarter of weeks in an incident (82%, -6 points, 120 a week)",
            "lower",
            invoice,
            0.82 - 0.25 * 0.06,
        ),
        Scenario(
            "outages in 1 of 6 weeks (escalation 12%, +6 points, 150 a week)",
            "upper",
            outage,
            0.12 + 0.06 / 6,
        ),
    ]


def miss_rates(
    scenario: Scenario, clusters: int, reps: int, boot_reps: int, seed: int
) -> dict[str, float]:
    """One-sided miss on the gate's side of CR1, each bootstrap and the gate's rule.

    Keys: ``cr1`` (CR1 + t(G - 1)), ``wild`` (restricted wild bootstrap-t,
    Webb weights), ``pairs`` (cluster bootstrap-t, for comparison: it carries skew
    but is two to three times wider on real pilots), ``gate`` (what the gate
    uses: :func:`pilot_lib.analysis.clustered.few_cluster_interval`, the wild one) and
    ``replications`` (replications with G clusters and some variation).
    """
    rng = np.random.default_rng(seed)
    weights = clustered.webb_weights(boot_reps, clusters, seed + 1)
    t_crit = stats.t.ppf(0.975, clusters - 1)
    miss = dict.fromkeys(("cr1", "wild", "pairs", "gate", "further"), 0)
    used = 0
    lower = scenario.side == "lower"
    for i in range(reps):
        y, n = scenario.draw(rng, clusters)
        r, se, g = clustered.clustered_ratio(y, n)
        if g < clusters or not se > 0:
            continue
        used += 1
        p_above, p_below = clustered.wild_bootstrap_pvalues(y, n, scenario.truth, weights)
        wild = (p_above if lower else p_below) < 0.025
        low, high = clustered.cluster_bootstrap_t_interval(
            y, n, 0.95, (0.0, 1.0), boot_reps, seed + 2 + i
        )
        pairs = scenario.truth < low if lower else scenario.truth > high
        cr1 = scenario.truth < r - t_crit * se if lower else scenario.truth > r + t_crit * se
        miss["cr1"] += cr1
        miss["wild"] += wild
        miss["pairs"] += pairs
        miss["gate"] += wild  # the gate judges with the wild bootstrap alone
        miss["further"] += wild and cr1  # the further bound of CR1 and the wild bootstrap
    return {k: v / used for k, v in miss.items()} | {"replications": used}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--boot-reps", type=int, default=999)
    ap.add_argument("--clusters", type=int, nargs="+", default=[12])
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    for g in args.clusters:
        for i, s in enumerate(scenarios()):
            rows.append(
                (s, g, miss_rates(s, g, args.reps, args.boot_reps, args.seed + 100 * i + g))
            )
    print(
        "| scenario | clusters | CR1 + t(G-1) | wild bootstrap-t (Webb) | cluster bootstrap-t "
        "| further of CR1 and wild | replications |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s, g, m in rows:
        print(
            f"| {s.name} | {g} | {m['cr1']:.1%} | {m['wild']:.1%} | {m['pairs']:.1%} "
            f"| {m['further']:.1%} | {m['replications']:,} |"
        )
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
