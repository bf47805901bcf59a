"""How fast and how reliably does the canary analysis decide? Side by side with a fixed-threshold rule.

Simulated metric streams, one step of a canary rollout: each interval the
service gets Poisson(rps * interval_s) requests, ``canary_share`` of them to the
canary. Per request, latency ~ lognormal (stable p95 set by ``--stable_p95_s``)
and error ~ Bernoulli. Latencies are bucketed with the model server's own
histogram buckets (``serving.runtime.metrics.LATENCY_BUCKETS``), as a provider
would return them.

Scenarios: ``identical`` (canary = stable: every rollback is a false one),
``latency x1.5`` (every canary latency 1.5x, so its p95 is 1.5x) and
``errors +5pt`` (canary error rate 5 points above stable).

Rules compared (a run rolls back at the first verdict that says so):

* ``analysis pooled``: :func:`serving.rollout.analysis.analyse_history` over all
  intervals of the step so far (threshold AND one-sided test at ``alpha``).
* ``analysis per-interval``: :func:`~serving.rollout.analysis.analyse` on each interval alone.
* ``fixed N=k``: Flagger-style per-interval check, failed when the canary's error
  rate > ``--fixed_error_rate`` or its p95 > ``--fixed_p95_s``; roll back after k
  failed checks.

Run: ``python benchmarks/canary_detection.py [--runs 100] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.metrics.base import Histogram, MetricsTarget, RevisionMetrics  # noqa: E402
from serving.rollout.analysis import AnalysisPolicy, Phase, analyse, analyse_history  # noqa: E402

log = logging.getLogger("canary_detection")

CANARY = MetricsTarget("bench", "canary")
STABLE = MetricsTarget("bench", "stable")


def server_buckets() -> tuple[float, ...]:
    from serving.runtime.metrics import LATENCY_BUCKETS

    return tuple(LATENCY_BUCKETS)


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_factor: float  # canary latency multiplier
    error_delta: float  # canary error rate minus stable's


SCENARIOS = (
    Scenario("identical", 1.0, 0.0),
    Scenario("latency x1.5", 1.5, 0.0),
    Scenario("errors +5pt", 1.0, 0.05),
)


def simulate_interval(rng, args, scenario: Scenario, buckets, t: float) -> tuple[RevisionMetrics, RevisionMetrics]:
    """One interval's metrics for canary and stable."""
    total = rng.poisson(args.rps * args.interval_s)
    n_c = rng.binomial(total, args.canary_share)
    n_s = total - n_c
    mu = math.log(args.stable_p95_s) - 1.6448536 * args.sigma  # lognormal with that p95
    out = []
    for target, n, factor, err in (
        (CANARY, n_c, scenario.latency_factor, args.stable_error_rate + scenario.error_delta),
        (STABLE, n_s, 1.0, args.stable_error_rate),
    ):
        lat = rng.lognormal(mu, args.sigma, n) * factor
        errors = int(rng.binomial(n, err))
        out.append(
            RevisionMetrics(
                target, t, t + args.interval_s, int(n), errors, Histogram.from_observations(lat, buckets)
            )
        )
    return out[0], out[1]


def fixed_check_fails(m: RevisionMetrics, args) -> bool:
    """Flagger's style: one metric query per interval against a fixed limit."""
    if m.requests == 0:
        return False  # Flagger skips a check with no data (NaN)
    p95 = m.latency_p(0.95)
    return (m.errors / m.requests) > args.fixed_error_rate or (p95 is not None and p95 > args.fixed_p95_s)


def run_once(rng, args, scenario, buckets, policy) -> dict[str, int | None]:
    """Interval (1-based) at which each rule rolled back, or None."""
    rules = ["analysis pooled", "analysis per-interval"] + [f"fixed N={k}" for k in args.fixed_n]
    decided: dict[str, int | None] = {r: None for r in rules}
    failed_checks = {k: 0 for k in args.fixed_n}
    canaries: list[RevisionMetrics] = []
    stables: list[RevisionMetrics] = []
    for i in range(1, args.intervals + 1):
        c, s = simulate_interval(rng, args, scenario, buckets, i * args.interval_s)
        canaries.append(c)
        stables.append(s)
        if decided["analysis pooled"] is None and analyse_history(canaries, stables, policy).phase is Phase.FAILED:
            decided["analysis pooled"] = i
        if decided["analysis per-interval"] is None and analyse(c, s, policy).phase is Phase.FAILED:
            decided["analysis per-interval"] = i
        bad = fixed_check_fails(c, args)
        for k in args.fixed_n:
            failed_checks[k] += bad
            if decided[f"fixed N={k}"] is None and failed_checks[k] >= k:
                decided[f"fixed N={k}"] = i
    return decided


def summarise(times: list[int | None]) -> dict[str, float | None]:
    hits = [t for t in times if t is not None]
    return {
        "rollback_rate": len(hits) / len(times),
        "median_intervals": statistics.median(hits) if hits else None,
        "mean_intervals": statistics.fmean(hits) if hits else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100, help="runs per scenario (>= 50)")
    p.add_argument("--intervals", type=int, default=10, help="analysis intervals in one step")
    p.add_argument("--interval_s", type=float, default=60.0, help="seconds per interval")
    p.add_argument("--rps", type=float, default=10.0, help="requests per second to the service")
    p.add_argument("--canary_share", type=float, default=0.1, help="share of traffic on the canary")
    p.add_argument("--stable_p95_s", type=float, default=0.4, help="stable p95 latency, seconds")
    p.add_argument("--sigma", type=float, default=0.5, help="lognormal shape of latencies")
    p.add_argument("--stable_error_rate", type=float, default=0.005, help="stable 5xx share")
    p.add_argument("--alpha", type=float, default=0.01, help="analysis significance level")
    p.add_argument("--fixed_error_rate", type=float, default=0.01, help="fixed rule: max error rate")
    p.add_argument("--fixed_p95_s", type=float, default=0.5, help="fixed rule: max p95 seconds")
    p.add_argument("--fixed_n", type=int, nargs="+", default=[1, 5], help="fixed rule: failed checks to roll back")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.runs < 1 or args.intervals < 1:
        p.error("--runs and --intervals must be positive")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    buckets = server_buckets()
    # the analysis is held to the same absolute limits as the fixed rule, plus relative ones
    policy = AnalysisPolicy(
        min_requests=30,
        max_error_rate=args.fixed_error_rate,
        max_error_rate_increase=0.02,
        max_latency_p95_s=args.fixed_p95_s,
        max_latency_ratio=1.25,
        max_ttft_p95_s=None,
        max_ttft_ratio=None,
        alpha=args.alpha,
    ).validate()
    rng = np.random.default_rng(args.seed)
    results: dict[str, dict[str, dict]] = {}
    t0 = time.perf_counter()
    for scenario in SCENARIOS:
        runs = []
        for r in range(args.runs):
            runs.append(run_once(rng, args, scenario, buckets, policy))
            if (r + 1) % 25 == 0:
                log.info("%s: %d/%d runs (%.0fs)", scenario.name, r + 1, args.runs, time.perf_counter() - t0)
        results[scenario.name] = {rule: summarise([run[rule] for run in runs]) for rule in runs[0]}

    per_interval = args.rps * args.interval_s
    print(
        f"\n{args.runs} runs x {args.intervals} intervals of {args.interval_s:.0f}s; "
        f"~{per_interval * args.canary_share:.0f} canary / {per_interval * (1 - args.canary_share):.0f} stable "
        f"requests per interval; stable p95 {args.stable_p95_s}s, errors {args.stable_error_rate:.1%}; "
        f"buckets {buckets}\n"
    )
    rules = list(next(iter(results.values())))
    head = "| rule | false rollback (identical) | latency x1.5: detected / median intervals | errors +5pt: detected / median intervals |"
    print(head)
    print("|---|---|---|---|")

    def cell(d):
        med = "-" if d["median_intervals"] is None else f"{d['median_intervals']:g}"
        return f"{d['rollback_rate']:.0%} / {med}"

    for rule in rules:
        print(
            f"| {rule} | {results['identical'][rule]['rollback_rate']:.0%} | "
            f"{cell(results['latency x1.5'][rule])} | {cell(results['errors +5pt'][rule])} |"
        )
    print(f"\n({time.perf_counter() - t0:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
