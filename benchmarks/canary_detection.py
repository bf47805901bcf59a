"""How fast and how reliably does the canary judge decide? Side by side with Kayenta- and Flagger-style rules.

Simulated metric streams of one canary step, the same streams for every rule.
Each interval the service gets Poisson(rps x interval_s) requests, a Binomial
share of them on the canary (10 % unless said). Per request, time to first
token ~ lognormal (stable p95 ``--ttft_p95_s``), decode time ~ lognormal, and the
end-to-end latency is their sum (stable p95 about ``--stable_p95_s``); errors
~ Bernoulli (stable ``--stable_error_rate``). Latency and TTFT are bucketed with
the model server's own histogram buckets, as a metrics provider returns them.

Scenarios (canary unless said): ``A/A`` identical; ``uniform x1.5`` (every
request 1.5x slower); ``tail`` (8 % of requests 4x slower); ``TTFT-only`` (time
to first token 2x, decode unchanged); ``errors +2pt`` / ``+5pt``; ``bursty
errors`` (each interval, with probability 1/4, +8 points: +2 on average);
``low traffic`` (A/A at 1 req/s in total); ``slow drift`` (A/A, both arms 5 %
slower every interval).

Rules (a run rolls back at the first verdict that says so):

* ``ours``: :func:`serving.rollout.sequential.judge` exactly as the controller
  calls it, one call per interval with the evidence of the previous call.
  Limits: +1 point of errors, p95 ratio 1.2 (the same as the Flagger rule's),
  alpha 0.01 for the whole step.
* ``ours+probes``: the same, and the probe requests the judge asks for are sent
  (they join the next interval: the canary gets what the judge asked for, stable
  its share of the split, ``serving.rollout.loadgen.probe_split``, each behaving
  as that arm does). Only differs where traffic is thin.
* ``kayenta``: Kayenta-style per-interval judgement: a two-sided Mann-Whitney
  test per metric (latency, TTFT, and errors as 0/1 observations) at confidence
  0.98 (Kayenta's default classifier); a metric is "High" when significant with
  the canary worse; with 3 metrics one High drops the score below Kayenta's
  marginal 75, which fails the interval and rolls back.
* ``flagger``: Flagger-style fixed thresholds, set fairly: before the canary
  starts, ``--warmup`` intervals of stable-only traffic measure the stable p95
  latency and TTFT and the stable error rate; limits = p95 x 1.2 and error
  rate + 1 point; each interval every metric is checked against its limit and
  the rollout rolls back after 3 failed checks (Flagger's ``threshold: 3``).

* ``kayenta@cal`` / ``flagger@cal``: the same two rules tuned so that their
  A/A false-rollback rate is at most ``--calibrate_to`` (1 %), as ours is:
  Kayenta's confidence raised, Flagger's limits widened (p95 x (1 + 0.2 k),
  errors + k points). Tuned on the reported A/A runs themselves, which
  favours them. This is the "equal false-rollback rate" comparison.

Reported per scenario and rule: the share of runs rolled back (every one is a
false rollback in ``A/A``, ``low traffic`` and ``slow drift``), and for the runs
that rolled back the intervals to detect (median, 90th percentile). Our
targets: false rollbacks <= 1 % in A/A; tail and +2pt caught within 3
intervals in >= 90 % of runs.

Run: ``python benchmarks/canary_detection.py [--runs 300] [--json out.json]``.
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
from serving.rollout.analysis import AnalysisPolicy, Phase  # noqa: E402
from serving.rollout.loadgen import probe_split  # noqa: E402
from serving.rollout.sequential import judge  # noqa: E402

log = logging.getLogger("canary_detection")

CANARY = MetricsTarget("bench", "2", revision="bench-predictor-00002")
STABLE = MetricsTarget("bench", "1", revision="bench-predictor-00001")
RULES = ("ours", "ours+probes", "kayenta", "flagger", "kayenta@cal", "flagger@cal")
Z95 = 1.6448536


def server_buckets() -> tuple[float, ...]:
    from serving.runtime.metrics import LATENCY_BUCKETS

    return tuple(LATENCY_BUCKETS)


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_factor: float = 1.0  # every canary request this much slower
    tail_share: float = 0.0  # share of canary requests ...
    tail_factor: float = 1.0  # ... this much slower
    ttft_factor: float = 1.0  # canary time to first token multiplier (decode unchanged)
    error_delta: float = 0.0  # canary error rate minus stable's
    burst_prob: float = 0.0  # per interval, chance of a canary error burst ...
    burst_delta: float = 0.0  # ... adding this much error rate
    rps: float | None = None  # overrides --rps
    drift: float = 0.0  # both arms slower by this factor per interval
    regression: bool = True  # False: every rollback is a false one


SCENARIOS = (
    Scenario("A/A", regression=False),
    Scenario("uniform x1.5", latency_factor=1.5),
    Scenario("tail 8% x4", tail_share=0.08, tail_factor=4.0),
    Scenario("TTFT-only x2", ttft_factor=2.0),
    Scenario("errors +2pt", error_delta=0.02),
    Scenario("errors +5pt", error_delta=0.05),
    Scenario("bursty errors", burst_prob=0.25, burst_delta=0.08),
    Scenario("low traffic 1 rps", rps=1.0, regression=False),
    Scenario("slow drift both", drift=0.05, regression=False),
)


class Streams:
    """The per-request generator shared by every rule."""

    def __init__(self, args, buckets):
        self.args, self.buckets = args, buckets
        self.sigma = args.sigma
        self.mu_ttft = math.log(args.ttft_p95_s) - Z95 * args.sigma
        decode_p95 = max(1e-3, args.stable_p95_s - args.ttft_p95_s)
        self.mu_decode = math.log(decode_p95) - Z95 * args.sigma

    def arm(self, rng, n: int, sc: Scenario, canary: bool, t: int, burst: bool) -> RevisionMetrics:
        a = self.args
        ttft = rng.lognormal(self.mu_ttft, self.sigma, n)
        decode = rng.lognormal(self.mu_decode, self.sigma, n)
        err = a.stable_error_rate
        drift = (1 + sc.drift) ** t
        ttft, decode = ttft * drift, decode * drift
        if canary:
            ttft = ttft * sc.latency_factor * sc.ttft_factor
            decode = decode * sc.latency_factor
            if sc.tail_share:
                slow = rng.random(n) < sc.tail_share
                ttft = np.where(slow, ttft * sc.tail_factor, ttft)
                decode = np.where(slow, decode * sc.tail_factor, decode)
            err = err + sc.error_delta + (sc.burst_delta if burst else 0.0)
        errors = int(rng.binomial(n, min(1.0, err)))
        target = CANARY if canary else STABLE
        t0 = t * a.interval_s
        return RevisionMetrics(
            target, t0, t0 + a.interval_s, int(n), errors,
            Histogram.from_observations(ttft + decode, self.buckets), Histogram.from_observations(ttft, self.buckets),
        )

    def interval(self, rng, sc: Scenario, t: int, share: float, extra: int = 0):
        rps = sc.rps or self.args.rps
        total = rng.poisson(rps * self.args.interval_s)
        n_c = rng.binomial(total, share)
        burst = sc.burst_prob > 0 and rng.random() < sc.burst_prob
        return (self.arm(rng, n_c + extra, sc, True, t, burst), self.arm(rng, total - n_c + extra, sc, False, t, burst))

    def merge(self, a: RevisionMetrics, b: RevisionMetrics) -> RevisionMetrics:
        return RevisionMetrics(a.target, a.start, a.end, a.requests + b.requests, a.errors + b.errors,
                               a.latency.plus(b.latency), a.ttft.plus(b.ttft))


# ------------------------------------------------------------------ baselines


def kayenta_p(c: RevisionMetrics, s: RevisionMetrics) -> float:
    """Kayenta-style: the smallest two-sided Mann-Whitney p-value of a metric where the canary is worse.

    Metrics: latency, TTFT (bucketed observations) and errors (0/1 per request).
    A metric is "High" when its p-value is below 1 - confidence with the canary
    worse; with 3 metrics one High drops the score below Kayenta's marginal 75.
    """
    from scipy.stats import mannwhitneyu

    best = 1.0
    for kind in ("latency", "ttft"):
        x, y = getattr(c, kind).samples(), getattr(s, kind).samples()
        if len(x) < 2 or len(y) < 2 or len(set(x) | set(y)) < 2:
            continue  # no data: Kayenta's NaN strategy leaves the metric out
        res = mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
        if statistics.median(x) >= statistics.median(y) and np.mean(x) > np.mean(y):
            best = min(best, float(res.pvalue))
    if c.requests >= 2 and s.requests >= 2 and (c.errors + s.errors) > 0 and c.errors / c.requests > s.errors / s.requests:
        x = [1.0] * c.errors + [0.0] * (c.requests - c.errors)
        y = [1.0] * s.errors + [0.0] * (s.requests - s.errors)
        best = min(best, float(mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue))
    return best


@dataclass(frozen=True)
class FlaggerBase:
    """Stable p95 latency, p95 TTFT and error rate measured in the warm-up."""

    p95_s: float
    ttft_p95_s: float
    error_rate: float


def flagger_base(warm: list[RevisionMetrics]) -> FlaggerBase:
    lat, ttft = Histogram(), Histogram()
    req = err = 0
    for m in warm:
        lat, ttft, req, err = lat.plus(m.latency), ttft.plus(m.ttft), req + m.requests, err + m.errors
    return FlaggerBase(lat.quantile(0.95) or 0.0, ttft.quantile(0.95) or 0.0, err / max(1, req))


def flagger_failed_checks(stats: tuple, base: FlaggerBase, scale: float = 1.0) -> int:
    """Failed metric checks in one interval: limit p95 x (1 + 0.2 scale), errors + 1 pt x scale.

    ``scale`` 1 is the rule as the issue sets it (p95 x 1.2, +1 pt). A metric
    without data is skipped, as Flagger skips a NaN query result.
    """
    requests, rate, p95, t95 = stats
    if requests == 0:
        return 0
    failed = int(rate > base.error_rate + 0.01 * scale)
    failed += int(p95 is not None and p95 > base.p95_s * (1 + 0.2 * scale))
    failed += int(t95 is not None and t95 > base.ttft_p95_s * (1 + 0.2 * scale))
    return failed


def first_flagger(per_interval: list[tuple], base: FlaggerBase, scale: float = 1.0, threshold: int = 3) -> int | None:
    """The interval of the ``threshold``-th failed analysis run: one failed run per interval, however many of
    its metrics failed (Flagger's scheduler, pkg/controller/scheduler.go ``advanceCanary``: ``runAnalysis``
    false sets ``FailedChecks + 1``)."""
    fails = 0
    for t, stats in enumerate(per_interval, 1):
        fails += flagger_failed_checks(stats, base, scale) > 0
        if fails >= threshold:
            return t
    return None


def first_kayenta(pvalues: list[float], confidence: float = 0.98) -> int | None:
    return next((t for t, p in enumerate(pvalues, 1) if p < 1 - confidence), None)


# ------------------------------------------------------------------- one run


def run_once(rng, streams: Streams, sc: Scenario, policy: AnalysisPolicy, args) -> dict:
    """One run: our judge's rollback interval, and the raw per-interval inputs of the baselines."""
    share = args.canary_share
    warm = []
    for t in range(-args.warmup, 0):
        c, s = streams.interval(rng, sc, t, share)
        warm.append(streams.merge(c, s))  # all traffic on stable before the canary starts
    out: dict = {"ours": None, "ours+probes": None, "_paused": {"ours": False, "ours+probes": False}}
    ev = {"ours": None, "ours+probes": None}
    probes = 0
    kay, flag = [], []
    for t in range(1, args.intervals + 1):
        c, s = streams.interval(rng, sc, t, share)
        if probes:
            stable_probes = probe_split(probes, round(share * 100))  # as the controller sends them
            pc, ps = streams.arm(rng, probes, sc, True, t, False), streams.arm(rng, stable_probes, sc, False, t, False)
            cp, sp = streams.merge(c, pc), streams.merge(s, ps)
        else:
            cp, sp = c, s
        for rule, (cm, sm) in (("ours", (c, s)), ("ours+probes", (cp, sp))):
            if out[rule] is not None:
                continue
            v = judge(ev[rule], cm, sm, policy, step=0, weight=round(share * 100), interval_s=args.interval_s)
            ev[rule] = v.evidence
            if v.phase is Phase.FAILED:
                out[rule] = t
            if v.decided and v.phase is Phase.INCONCLUSIVE:
                out["_paused"][rule] = True
            if rule == "ours+probes":
                probes = v.probe_requests
        kay.append(kayenta_p(c, s))
        flag.append((c.requests, c.errors / c.requests if c.requests else 0.0, c.latency_p(0.95), c.ttft_p(0.95)))
    out["_kayenta_p"], out["_flagger"], out["_base"] = kay, flag, flagger_base(warm)
    return out


def baseline_times(runs: list[dict], confidence: float, scale: float) -> dict[str, list]:
    return {
        "kayenta": [first_kayenta(r["_kayenta_p"], confidence) for r in runs],
        "flagger": [first_flagger(r["_flagger"], r["_base"], scale) for r in runs],
    }


def calibrate(aa_runs: list[dict], target: float) -> tuple[float, float]:
    """The Kayenta confidence and Flagger limit scale whose A/A false-rollback rate is <= ``target``.

    Calibrated on the reported A/A runs themselves, which favours the baselines.
    """
    conf = next(c for c in (0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0)
                if c >= 1.0 or sum(first_kayenta(r["_kayenta_p"], c) is not None for r in aa_runs) <= target * len(aa_runs))
    scale = next(k for k in (1, 1.5, 2, 3, 4, 6, 8, 12, 1e9)
                 if sum(first_flagger(r["_flagger"], r["_base"], k) is not None for r in aa_runs) <= target * len(aa_runs))
    return conf, scale


def summarise(times: list[int | None]) -> dict:
    """Share rolled back (within 3 intervals); median and p90 of intervals to detect over every run, a run
    never rolled back counting as later than any (None: that percentile is not reached in the intervals run)."""
    hits = sorted(t for t in times if t is not None)
    within3 = sum(1 for t in hits if t <= 3) / len(times)
    ranked = hits + [math.inf] * (len(times) - len(hits))

    def pct(q: float) -> float | None:
        v = float(np.percentile(ranked, q, method="inverted_cdf")) if ranked else math.inf
        return None if math.isinf(v) else v

    return {
        "rollback_rate": len(hits) / len(times),
        "within_3": within3,
        "median_intervals": pct(50),
        "p90_intervals": pct(90),
    }


def policy_for(args) -> AnalysisPolicy:
    return AnalysisPolicy(
        min_requests=args.min_requests,
        max_error_rate=None,
        max_error_rate_increase=0.01,
        max_latency_p95_s=None,
        max_latency_ratio=1.2,
        max_ttft_p95_s=None,
        max_ttft_ratio=1.2,
        alpha=args.alpha,
        max_quality_drop=None,
        max_intervals_per_step=args.intervals,
        probe_budget=args.probe_budget,
    ).validate()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=300, help="runs per scenario (>= 300 for the A/A figure)")
    p.add_argument("--intervals", type=int, default=10, help="analysis intervals in one step")
    p.add_argument("--interval_s", type=float, default=60.0, help="seconds per interval")
    p.add_argument("--rps", type=float, default=10.0, help="requests per second to the service")
    p.add_argument("--canary_share", type=float, default=0.1, help="share of traffic on the canary")
    p.add_argument("--stable_p95_s", type=float, default=0.4, help="stable p95 latency, seconds")
    p.add_argument("--ttft_p95_s", type=float, default=0.1, help="stable p95 time to first token, seconds")
    p.add_argument("--sigma", type=float, default=0.5, help="lognormal shape of latencies")
    p.add_argument("--stable_error_rate", type=float, default=0.005, help="stable 5xx share")
    p.add_argument("--alpha", type=float, default=0.01, help="our judge's false-rollback bound for the step")
    p.add_argument("--min_requests", type=int, default=50, help="our judge: requests per arm before a step passes")
    p.add_argument("--probe_budget", type=int, default=30, help="ours+probes: probe requests per arm per interval")
    p.add_argument("--warmup", type=int, default=3, help="flagger: stable-only intervals that set its limits")
    p.add_argument("--calibrate_to", type=float, default=0.01, help="false-rollback rate the @cal baselines are tuned to")
    p.add_argument("--scenario", action="append", default=None, help="run only these scenarios (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.runs < 1 or args.intervals < 1:
        p.error("--runs and --intervals must be positive")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    buckets = server_buckets()
    streams = Streams(args, buckets)
    policy = policy_for(args)
    scenarios = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    all_runs: dict[str, list[dict]] = {}
    for k, sc in enumerate(scenarios):
        rng = np.random.default_rng([args.seed, k])
        all_runs[sc.name] = [run_once(rng, streams, sc, policy, args) for _ in range(args.runs)]
        log.info("%s done (%.0fs)", sc.name, time.perf_counter() - t0)
    aa = all_runs.get("A/A")
    conf, scale = calibrate(aa, args.calibrate_to) if aa else (0.98, 1.0)
    for sc in scenarios:
        runs = all_runs[sc.name]
        times = {"ours": [r["ours"] for r in runs], "ours+probes": [r["ours+probes"] for r in runs]}
        times.update(baseline_times(runs, 0.98, 1.0))
        cal = baseline_times(runs, conf, scale)
        times["kayenta@cal"], times["flagger@cal"] = cal["kayenta"], cal["flagger"]
        results[sc.name] = {rule: summarise(times[rule]) for rule in RULES}
        results[sc.name]["_paused"] = {r: sum(run["_paused"][r] for run in runs) / len(runs) for r in ("ours", "ours+probes")}
        results[sc.name]["_regression"] = sc.regression
    results["_calibration"] = {"kayenta_confidence": conf, "flagger_scale": scale, "target": args.calibrate_to}

    per = args.rps * args.interval_s
    print(
        f"\n{args.runs} runs per scenario x {args.intervals} intervals of {args.interval_s:.0f}s at {args.rps:g} req/s, "
        f"{args.canary_share:.0%} canary (~{per * args.canary_share:.0f} canary / {per * (1 - args.canary_share):.0f} stable "
        f"requests per interval); stable p95 {args.stable_p95_s}s, TTFT p95 {args.ttft_p95_s}s, errors {args.stable_error_rate:.1%}\n"
    )
    print("| scenario | " + " | ".join(RULES) + " |")
    print("|---|" + "---|" * len(RULES))
    for name, res in results.items():
        if name.startswith("_"):
            continue
        cells = []
        for rule in RULES:
            d = res[rule]
            if not res["_regression"]:
                cell = f"{d['rollback_rate']:.1%} false"
            else:
                med = "-" if d["median_intervals"] is None else f"{d['median_intervals']:g}"
                p90 = "-" if d["p90_intervals"] is None else f"{d['p90_intervals']:g}"
                cell = f"{d['rollback_rate']:.0%} ({d['within_3']:.0%} in <=3), {med}/{p90}"
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nregressions: detected share (share within 3 intervals), median/p90 intervals to detect; "
          "A/A-like: share of runs falsely rolled back.")
    cal = results["_calibration"]
    print(f"@cal: calibrated on the A/A runs to <= {cal['target']:.0%} false rollbacks: Kayenta confidence "
          f"{cal['kayenta_confidence']}, Flagger limits p95 x {1 + 0.2 * cal['flagger_scale']:.2f} and "
          f"+{cal['flagger_scale']:g} pt errors (3 failed checks)")
    for name, res in results.items():
        if name.startswith("_"):
            continue
        if res["_paused"]["ours"] or res["_paused"]["ours+probes"]:
            print(f"{name}: ours paused (inconclusive) in {res['_paused']['ours']:.0%} of runs, "
                  f"ours+probes in {res['_paused']['ours+probes']:.0%}")
    print(f"({time.perf_counter() - t0:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
