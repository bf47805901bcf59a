"""Canary judge v2: sequential analysis with error control across every look.

The rollout controller and ``benchmarks/canary_detection.py`` both call
:func:`judge` (or :class:`Judge`), one call per analysis interval, passing the
evidence returned by the previous call. Evidence accumulates over the whole
rollout (every step and the bake), so a regression is confirmed as soon as the
data allow and a step passes once it has seen enough traffic.

Method: **always-valid tests (e-processes, as in mSPRT), not alpha spending.**
Each check keeps a test martingale: a mixture likelihood ratio ``E`` of "the
canary is worse" against "the canary is no worse", multiplied up interval by
interval. Ville's inequality bounds the chance that ``E`` *ever* reaches
``1/a`` under the null by ``a``, however many times and whenever it is looked
at. Alpha spending (Pocock, O'Brien-Fleming) would need the number of looks, or
the maximal sample, fixed in advance; here the looks are data-dependent (a step
extends when traffic is thin, probe traffic is added, the bake runs on after
promotion, a controller resumes), which is exactly what an always-valid method
tolerates and a spending plan does not. The price is some power against a
fixed-n test at a single pre-planned look; ``benchmarks/canary_detection.py``
measures it against per-interval and fixed-threshold rules.

Checks (each held to ``alpha / number of checks``, Bonferroni, so the whole
rollout falsely rolls back with probability at most ``alpha``):

* ``error_rate_increase`` -- per interval, conditional on the number of 5xx in
  both arms, the canary's count is hypergeometric when the rates are equal
  (Fisher's exact conditioning) and Fisher-noncentral under an odds ratio
  ``psi > 1``; ``E`` mixes ``psi`` over a fixed grid. The check FAILS when
  ``E >= 1/a`` AND the pooled rate difference exceeds ``max_error_rate_increase``.
* ``latency_rank`` / ``ttft_rank`` -- Mann-Whitney ``U`` from the bucket counts
  of each interval (ties counted as halves), as ``AUC - 1/2``, summed with
  inverse-variance weights; ``E`` is the one-sided (half-normal) mixture SPRT on
  that sum. The variance is Hoeffding's sub-Gaussian bound for a two-sample
  U-statistic with a kernel in [0, 1], ``1 / (4 min(n_c, n_s))``, not the
  normal one: bucket counts tie most requests, and the tie-corrected variance is
  smallest exactly when a few requests in a sparse bucket decide ``U``, where the
  normal approximation fails (6 canary requests, 2 of them in a bucket no stable
  request reached: permutation p 0.0027, tie-corrected normal 3e-9). With the
  bound every interval's factor has expectation <= 1 under the null at any
  sample size, so ``E`` is an exact e-process; the price is about 3x the
  variance of continuous data, paid only by the rank test, whose whole-
  distribution shifts are large. FAILS when ``E >= 1/a`` AND the pooled canary
  p95 / stable p95 exceeds ``max_*_ratio``.
* ``latency_tail`` / ``ttft_tail`` -- counts of requests above thresholds
  chosen each interval from the *pooled* histogram of both arms (the bucket
  bounds at or above the pooled p95 and p99, and the one below the pooled p95,
  so the choice cannot favour either arm), tested like the error counts; ``E``
  is their weighted mean (``TAIL_SLOT_WEIGHTS``, 0.6 on the p95 bound, fixed in
  advance, so still an e-process). FAILS
  when ``E >= 1/a`` AND the pooled canary p95 or p99 exceeds ``max_*_ratio`` x
  stable's. The evidence carries both arms' p95/p99 with a distribution-free
  95 % interval from the bucket counts (binomial order-statistic ranks).
* absolute limits (``error_rate``, ``latency_p95``, ``ttft_p95``) and the
  comparison with a *recorded* stable baseline (the 100 % step and the bake,
  where the stable revision has no traffic) -- one-sample binomial mixture tests
  of "share of errors (or of requests slower than the limit) <= the limit"; the
  baseline limit is baseline rate + ``max_error_rate_increase`` and baseline p95
  x ``max_*_ratio`` (plug-in: the baseline's own sampling error is absorbed by
  the margin, not counted).
* ``quality`` / ``quality_drop`` -- golden-prompt scores, per interval (greedy
  decoding is deterministic; no test needed).

Traffic-aware decisions (:class:`Verdict`):

* FAILED as soon as any check fails -- roll back.
* not ``decided`` while evidence is still being collected: the step needs
  ``min_requests`` per arm *within the step* and ``min_intervals``; from the
  observed request rate and the canary's share the judge computes how many
  intervals that takes, and asks for golden-prompt probe traffic
  (``probe_requests`` per arm per interval, at most ``probe_budget``) when real
  traffic would not reach it within ``max_intervals_per_step``.
* SUCCESSFUL (decided) once the step has its sample, nothing failed and no
  live comparison's estimate is past its limit; such an estimate that is not
  yet significant keeps the step collecting (a small sample never passes a
  canary that looks worse than its stable arm allows).
* INCONCLUSIVE (decided) when the step ran ``max_intervals_per_step`` intervals
  without its sample, even with probes: the controller pauses (Argo Rollouts'
  inconclusive), it does not roll back for low traffic.
* Provider failures are tolerated for ``max_provider_errors`` consecutive
  intervals (not decided, the evidence is kept); the next one is ERROR, and the
  reason says the judge could not see, not that the canary regressed.

Every check carries its evidence (sample sizes, statistic, ``E``, always-valid
p-value ``1/max E``, the threshold ``1/a`` and the pooled estimates) in
``Check.details``, which the report and the registry artifact show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Sequence

from serving.metrics.base import Histogram, RevisionMetrics
from serving.rollout.analysis import (
    AnalysisPolicy,
    AnalysisResult,
    Check,
    Phase,
    _quality_checks,
    combine,
)

if TYPE_CHECKING:  # pragma: no cover
    from serving.rollout.quality import QualityResult

EVIDENCE_VERSION = 2
# odds ratios (canary vs stable) the error and tail e-processes mix over, equal weights
ODDS_GRID = (1.5, 2.5, 4.0, 7.0, 12.0, 25.0, 60.0)
# share of alpha each check gets (Bonferroni with weights, fixed by the policy alone): rank tests
# detect whole-distribution shifts with a large margin, so most of alpha goes to errors and tails
CHECK_WEIGHTS = {
    "error_rate_increase": 4.0, "latency_tail": 3.5, "ttft_tail": 3.5, "latency_rank": 0.5, "ttft_rank": 0.5,
    "error_rate": 1.0, "latency_p95": 1.0, "ttft_p95": 1.0,
    "baseline_error_rate": 0.5, "baseline_latency_p95": 0.5, "baseline_ttft_p95": 0.5,
}
# rate multiples (over the limit) the one-sample e-processes mix over
RATE_GRID = (1.25, 1.5, 2.0, 3.0, 5.0)
# prior scale of the AUC shift (P(canary > stable) - 0.5) in the rank mixture
RANK_TAU = 0.1
TAIL_LEVELS = (0.95, 0.99)
# exceedance thresholds of the tail test: (pooled quantile, bound below it instead of above)
TAIL_SLOTS = ((0.95, False), (0.99, False), (0.95, True))
# their weights in the tail e-process (a convex combination of e-processes is one): most on the p95 bound,
# where a tail of a few percent of requests shows first; the others catch rarer and bucket-hidden tails
TAIL_SLOT_WEIGHTS = (0.6, 0.3, 0.1)
CI_LEVEL = 0.95
_P95_TAIL = 0.05


# ------------------------------------------------------------------ statistics


def _logsumexp_mean(logs: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """log of the (weighted) mean of ``exp(logs)``; ``weights`` sum to 1 (default: equal)."""
    m = max(logs)
    if math.isinf(m):
        return m
    if weights is None:
        return m + math.log(sum(math.exp(v - m) for v in logs) / len(logs))
    return m + math.log(sum(w * math.exp(v - m) for v, w in zip(logs, weights)))


def two_sample_log_lr(x: int, n_c: int, y: int, n_s: int, grid: Sequence[float] = ODDS_GRID) -> list[float]:
    """Per-odds-ratio log likelihood ratios of one interval's 2x2 table.

    Conditional on ``x + y`` events, ``x`` (the canary's) is hypergeometric when
    both arms have the same rate and Fisher-noncentral hypergeometric with odds
    ratio ``psi`` otherwise (the conditioning of Fisher's exact test).
    """
    k = x + y
    if k <= 0 or n_c <= 0 or n_s <= 0 or k >= n_c + n_s:
        return [0.0] * len(grid)
    from scipy.stats import hypergeom, nchypergeom_fisher

    total = n_c + n_s
    null = float(hypergeom.logpmf(x, total, k, n_c))
    alt = nchypergeom_fisher.logpmf(x, total, k, n_c, list(grid))
    return [float(a) - null for a in alt]


def one_sample_log_lr(k: int, n: int, p0: float, grid: Sequence[float] = RATE_GRID) -> list[float]:
    """Per-rate log likelihood ratios of ``k`` events in ``n`` for ``p = r * p0`` vs ``p0``."""
    if n <= 0:
        return [0.0] * len(grid)
    p0 = min(max(p0, 1e-9), 1 - 1e-9)
    out = []
    for r in grid:
        p1 = min(r * p0, 1 - 1e-6)
        if p1 <= p0:
            out.append(0.0)
            continue
        out.append(k * math.log(p1 / p0) + (n - k) * math.log((1 - p1) / (1 - p0)))
    return out


def mann_whitney_from_buckets(c: Histogram, s: Histogram) -> tuple[float, float, float] | None:
    """``(auc_minus_half, variance_bound, n_c * n_s)`` from bucket counts, ties counted as halves.

    ``variance_bound`` is Hoeffding's sub-Gaussian variance proxy of the AUC
    under "both arms draw from one distribution", ``1 / (4 min(n_c, n_s))``
    (a two-sample U-statistic with a kernel in [0, 1]), valid at any sample size
    and with any ties, unlike the normal approximation (see the module docstring).
    ``None`` when an arm has no observation or everything fell in one bucket.
    """
    bounds = sorted({b for b, _ in c.buckets} | {b for b, _ in s.buckets})
    cc, sc = _counts_at(c, bounds), _counts_at(s, bounds)
    n_c, n_s = sum(cc), sum(sc)
    if n_c <= 0 or n_s <= 0:
        return None
    u, below, occupied = 0.0, 0.0, 0
    for a, b in zip(cc, sc):
        u += a * (below + 0.5 * b)
        below += b
        occupied += a + b > 0
    if occupied < 2:
        return None  # one bucket holds everything: no ranking information
    nm = n_c * n_s
    return u / nm - 0.5, 1.0 / (4.0 * min(n_c, n_s)), nm


def _counts_at(h: Histogram, bounds: Sequence[float]) -> list[float]:
    """Non-cumulative counts of ``h`` in the buckets ending at ``bounds``."""
    out, prev = [], 0.0
    for b in bounds:
        cum = 0.0
        for hb, hc in h.buckets:
            if hb <= b:
                cum = hc
        out.append(max(0.0, cum - prev))
        prev = max(prev, cum)
    return out


def half_normal_mixture_log_e(s: float, info: float, tau: float = RANK_TAU) -> float:
    """log E of the one-sided normal-mixture SPRT for a sum ``s`` with information ``info``.

    ``s = sum(theta_hat / v)``, ``info = sum(1 / v)``: under ``theta = 0`` it is
    about N(0, info). Mixing ``exp(theta s - theta^2 info / 2)`` over a half-normal
    prior (scale ``tau``) on ``theta > 0`` gives
    ``2 Phi(s / sqrt(a)) exp(s^2 / (2a)) / sqrt(1 + tau^2 info)``, ``a = info + 1/tau^2``.
    """
    from scipy.stats import norm

    if info <= 0:
        return 0.0
    a = info + 1.0 / tau**2
    return math.log(2.0) + float(norm.logcdf(s / math.sqrt(a))) + s * s / (2 * a) - 0.5 * math.log1p(tau**2 * info)


def count_above(h: Histogram, limit: float) -> float:
    """Observations above ``limit``, interpolating inside its bucket."""
    prev_bound, prev_cum = 0.0, 0.0
    for bound, cum in h.buckets:
        if limit < bound:
            if math.isinf(bound):
                below = prev_cum
            else:
                share = (limit - prev_bound) / (bound - prev_bound) if bound > prev_bound else 1.0
                below = prev_cum + (cum - prev_cum) * max(0.0, min(1.0, share))
            return h.count - below
        prev_bound, prev_cum = bound, cum
    return 0.0


def _exact_above(h: Histogram, bound: float) -> int:
    """Observations above a bucket bound of ``h`` (exact: no interpolation)."""
    below = 0.0
    for b, c in h.buckets:
        if b <= bound:
            below = c
    return int(round(h.count - below))


def tail_threshold(pooled: Histogram, q: float, below: bool = False) -> float | None:
    """A finite bucket bound near the pooled ``q`` quantile (``None``: no such bound).

    Default: the bound at or just above the quantile (the most selective tail).
    ``below``: the largest bound with at least ``1 - q`` of the observations
    above it, which keeps a tail that sits inside one wide bucket above the
    threshold (e.g. every slow request in the bucket holding the quantile).
    """
    n = pooled.count
    if n <= 0:
        return None
    if not below:
        for b, c in pooled.buckets:
            if not math.isinf(b) and c >= q * n:
                return b
        return None
    best = None
    for b, c in pooled.buckets:
        if math.isinf(b) or n - c < (1 - q) * n or n - c <= 0:
            break
        best = b
    return best


def quantile_interval(h: Histogram, q: float, level: float = CI_LEVEL) -> tuple[float | None, float | None, float | None]:
    """``(estimate, low, high)`` of the ``q`` quantile from bucket counts, distribution-free.

    The ranks of the order statistics that bracket the quantile with
    probability ``level`` come from Binomial(n, q) (the classic order-statistic
    interval). Only the bucket of each rank is known, so ``low`` is the lower
    edge of the low rank's bucket and ``high`` the upper edge of the high
    rank's bucket (``inf`` in the ``+Inf`` bucket): conservative at the
    histogram's resolution. The estimate interpolates as ``histogram_quantile``.
    """
    n = h.count
    est = h.quantile(q)
    if n <= 0 or est is None:
        return est, None, None
    from scipy.stats import binom

    a = (1 - level) / 2
    lo_rank = max(1.0, float(binom.ppf(a, int(round(n)), q)))
    hi_rank = float(binom.ppf(1 - a, int(round(n)), q)) + 1

    def edges(rank: float) -> tuple[float, float]:
        prev = 0.0
        for b, c in h.buckets:
            if c >= rank:
                return prev, b
            prev = b
        return prev, math.inf

    return est, edges(lo_rank)[0], (edges(hi_rank)[1] if hi_rank <= n else math.inf)


# ----------------------------------------------------------------- accumulators


def _new_stream() -> dict[str, Any]:
    return {"checks": {}, "pool_c": {}, "pool_s": {}}


def _hist_to(h: Histogram) -> list:
    return [["+Inf" if math.isinf(b) else b, c] for b, c in h.buckets] + [["sum", h.total]]


def _hist_from(d: list | None) -> Histogram:
    if not d:
        return Histogram()
    buckets, total = [], 0.0
    for b, c in d:
        if b == "sum":
            total = float(c)
        else:
            buckets.append((math.inf if b == "+Inf" else float(b), float(c)))
    return Histogram(tuple(buckets), total)


def _pool(stream: dict, role: str, m: RevisionMetrics) -> None:
    p = stream[role]
    p["requests"] = p.get("requests", 0) + m.requests
    p["errors"] = p.get("errors", 0) + m.errors
    for kind in ("latency", "ttft"):
        p[kind] = _hist_to(_hist_from(p.get(kind)).plus(getattr(m, kind)))


def _pooled(stream: dict, role: str) -> RevisionMetrics | None:
    from serving.metrics.base import MetricsTarget

    p = stream[role]
    if not p:
        return None
    return RevisionMetrics(
        MetricsTarget("pooled", role), 0.0, 0.0, int(p.get("requests", 0)), int(p.get("errors", 0)),
        _hist_from(p.get("latency")), _hist_from(p.get("ttft")),
    )


def _acc(stream: dict, name: str, log_lr: Sequence[float]) -> dict:
    """Add one interval's log LRs to a mixture e-process; return its record."""
    rec = stream["checks"].setdefault(name, {"log_lr": [0.0] * len(log_lr), "max_log_e": 0.0})
    if len(rec["log_lr"]) != len(log_lr):
        rec["log_lr"] = [0.0] * len(log_lr)
    rec["log_lr"] = [a + b for a, b in zip(rec["log_lr"], log_lr)]
    rec["log_e"] = _logsumexp_mean(rec["log_lr"])
    rec["max_log_e"] = max(rec["max_log_e"], rec["log_e"])
    return rec


# ------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """One interval's decision and the evidence to pass to the next call."""

    result: AnalysisResult  # checks and combined phase
    evidence: dict[str, Any]  # JSON-able accumulator; pass it back next interval
    decided: bool = True  # False: keep collecting (stay on the step, do not count as inconclusive)
    probe_requests: int = 0  # golden-prompt probes to send to each arm in the next interval
    intervals_needed: int | None = None  # intervals this step needs at the observed traffic

    @property
    def phase(self) -> Phase:
        return self.result.phase

    def to_dict(self) -> dict[str, Any]:
        return dict(
            self.result.to_dict(), decided=self.decided, probe_requests=self.probe_requests,
            intervals_needed=self.intervals_needed,
        )


def _fmt_e(log_e: float) -> str:
    return f"{math.exp(min(log_e, 700)):.3g}"


def _p_from(max_log_e: float) -> float:
    return float(min(1.0, math.exp(-max_log_e)))


def _check_from(
    name: str, rec: dict, alpha_k: float, gate_value: float | None, gate_limit: float | None, what: str, details: dict,
) -> Check:
    """FAILED when the e-process crossed ``1/alpha_k`` and the effect exceeds its limit."""
    log_e, max_log_e = rec.get("log_e", 0.0), rec.get("max_log_e", 0.0)
    crossed = max_log_e >= math.log(1.0 / alpha_k)
    over = gate_limit is None or (gate_value is not None and gate_value > gate_limit)
    p = _p_from(max_log_e)
    ev = dict(details, e_value=math.exp(min(log_e, 700)), max_e_value=math.exp(min(max_log_e, 700)),
              e_threshold=1.0 / alpha_k, alpha=alpha_k, always_valid_p=p)
    head = f"{what}: E={_fmt_e(log_e)} (max {_fmt_e(max_log_e)}, reject at {1 / alpha_k:.3g}, p<={p:.2g})"
    if crossed and over:
        return Check(name, Phase.FAILED, gate_value, gate_limit, f"{head}: canary significantly worse", p, ev)
    if crossed:
        why = f"{head}: significant but the effect {_g(gate_value)} is within the limit {_g(gate_limit)}"
    elif gate_limit is not None and over and log_e > 0.0:
        # the estimate is past the limit and the evidence leans that way (E > 1) but is not yet significant:
        # a step must not pass on that; the judge keeps collecting (see ``judge``) until it is significant or
        # the estimate comes back. An estimate past the limit with E <= 1 is noise the test does not back
        # (a p95 interpolated inside a wide bucket swings by the bucket's width: identical arms at a TTFT p95
        # on a bucket bound read 1.3x), and holding on it paused a quarter of identical canaries.
        ev["unresolved"] = True
        why = f"{head}: the effect {_g(gate_value)} is over the limit {_g(gate_limit)} but not yet significant"
    else:
        why = f"{head}: no significant regression"
    return Check(name, Phase.SUCCESSFUL, gate_value, gate_limit, why, p, ev)


def _g(v: float | None) -> str:
    return "n/a" if v is None else (f"{v:.4g}")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _quantiles(h: Histogram) -> dict[str, Any]:
    out: dict[str, Any] = {"n": h.count}
    for q in TAIL_LEVELS:
        est, lo, hi = quantile_interval(h, q)
        key = f"p{int(q * 100)}"
        out[key] = est
        out[f"{key}_ci"] = [lo, hi]
    return out


def _relative_checks(
    stream: dict, c: RevisionMetrics, s: RevisionMetrics, policy: AnalysisPolicy, alphas: dict[str, float], kinds: list[str],
) -> list[Check]:
    checks: list[Check] = []
    pc, ps = _pooled(stream, "pool_c"), _pooled(stream, "pool_s")
    if policy.max_error_rate_increase is not None:
        rec = _acc(stream, "error_rate_increase", two_sample_log_lr(c.errors, c.requests, s.errors, s.requests))
        c_rate = pc.errors / pc.requests if pc.requests else 0.0
        s_rate = ps.errors / ps.requests if ps.requests else 0.0
        details = {
            "interval": {"canary": [c.errors, c.requests], "stable": [s.errors, s.requests]},
            "pooled": {"canary": [pc.errors, pc.requests], "stable": [ps.errors, ps.requests]},
            "canary_rate": c_rate, "stable_rate": s_rate, "odds_grid": list(ODDS_GRID),
        }
        checks.append(_check_from(
            "error_rate_increase", rec, alphas["error_rate_increase"], c_rate - s_rate, policy.max_error_rate_increase,
            f"canary error rate {c_rate:.2%} vs stable {s_rate:.2%} ({c_rate - s_rate:+.2%}, limit +{policy.max_error_rate_increase:.2%})",
            details,
        ))
    for kind in kinds:
        ratio_limit = getattr(policy, f"max_{kind}_ratio")
        if ratio_limit is None:
            continue
        ch, sh = getattr(c, kind), getattr(s, kind)
        pch, psh = getattr(pc, kind), getattr(ps, kind)
        qc, qs = _quantiles(pch), _quantiles(psh)
        p95_ratio, p99_ratio = _ratio(qc["p95"], qs["p95"]), _ratio(qc["p99"], qs["p99"])
        base = {"canary": qc, "stable": qs, "p95_ratio": p95_ratio, "p99_ratio": p99_ratio}
        # rank test: Mann-Whitney U of this interval, accumulated with inverse-variance weights
        rank = stream["checks"].setdefault(f"{kind}_rank", {"s": 0.0, "info": 0.0, "max_log_e": 0.0})
        mw = mann_whitney_from_buckets(ch, sh)
        if mw is not None:
            theta, var, _ = mw
            rank["s"] += theta / var
            rank["info"] += 1.0 / var
        rank["log_e"] = half_normal_mixture_log_e(rank["s"], rank["info"])
        rank["max_log_e"] = max(rank["max_log_e"], rank["log_e"])
        auc = 0.5 + rank["s"] / rank["info"] if rank["info"] > 0 else None
        checks.append(_check_from(
            f"{kind}_rank", rank, alphas[f"{kind}_rank"], p95_ratio, ratio_limit,
            f"{kind} p95 {_g(qc['p95'])}s vs stable {_g(qs['p95'])}s (ratio {_g(p95_ratio)}, limit {_g(ratio_limit)}),"
            f" rank test P(canary>stable)={_g(auc)}",
            dict(base, interval={"canary_n": ch.count, "stable_n": sh.count,
                                 "auc_minus_half": mw[0] if mw else None}, pooled_auc=auc, tau=RANK_TAU),
        ))
        # tail test: requests above the pooled p95 and p99 bucket bounds, canary vs stable
        pooled_both = ch.plus(sh)
        logs, counts = [], {}
        for q, below in TAIL_SLOTS:
            t = tail_threshold(pooled_both, q, below)
            key = f"p{int(q * 100)}" + ("_below" if below else "")
            if t is None:
                lr = [0.0] * len(ODDS_GRID)
            else:
                x, y = _exact_above(ch, t), _exact_above(sh, t)
                counts[key] = {"threshold_s": t, "canary_above": [x, int(round(ch.count))],
                               "stable_above": [y, int(round(sh.count))]}
                lr = two_sample_log_lr(x, int(round(ch.count)), y, int(round(sh.count)))
            sub = stream["checks"].setdefault(f"{kind}_tail_{key}", {"log_lr": [0.0] * len(ODDS_GRID), "max_log_e": 0.0})
            sub["log_lr"] = [a + b for a, b in zip(sub["log_lr"], lr)]
            logs.append(_logsumexp_mean(sub["log_lr"]))
        tail = stream["checks"].setdefault(f"{kind}_tail", {"max_log_e": 0.0})
        tail["log_e"] = _logsumexp_mean(logs, TAIL_SLOT_WEIGHTS)  # a weighted mean of e-processes is an e-process
        tail["max_log_e"] = max(tail["max_log_e"], tail["log_e"])
        worst = max((r for r in (p95_ratio, p99_ratio) if r is not None), default=None)
        checks.append(_check_from(
            f"{kind}_tail", tail, alphas[f"{kind}_tail"], worst, ratio_limit,
            f"{kind} p95 {_g(qc['p95'])}s CI {_ci(qc['p95_ci'])}, p99 {_g(qc['p99'])}s CI {_ci(qc['p99_ci'])}"
            f" vs stable p95 {_g(qs['p95'])}s, p99 {_g(qs['p99'])}s (worst ratio {_g(worst)}, limit {_g(ratio_limit)}), tail test",
            dict(base, interval=counts, odds_grid=list(ODDS_GRID)),
        ))
    return checks


def _ci(ci: list) -> str:
    lo, hi = ci
    return f"[{_g(lo)}, {_g(hi)}]"


def _absolute_checks(
    stream: dict, c: RevisionMetrics, limits: dict[str, float], alphas: dict[str, float], label: str, kinds: list[str],
) -> list[Check]:
    """One-sample checks: error share <= limit; share of requests slower than a p95 limit <= 5 %."""
    checks: list[Check] = []
    pc = _pooled(stream, "pool_c")
    if "error_rate" in limits:
        lim = limits["error_rate"]
        rec = _acc(stream, f"{label}error_rate", one_sample_log_lr(c.errors, c.requests, max(lim, 1e-4)))
        rate = pc.errors / pc.requests if pc.requests else 0.0
        checks.append(_check_from(
            f"{label}error_rate", rec, alphas[f"{label}error_rate"], rate, lim, f"canary error rate {rate:.2%} vs limit {lim:.2%}",
            {"pooled": [pc.errors, pc.requests], "interval": [c.errors, c.requests], "limit": lim},
        ))
    for kind in kinds:
        key = f"{kind}_p95"
        if key not in limits:
            continue
        lim = limits[key]
        h = getattr(c, kind)
        above = int(round(count_above(h, lim)))
        rec = _acc(stream, f"{label}{key}", one_sample_log_lr(above, int(round(h.count)), _P95_TAIL))
        q = _quantiles(getattr(pc, kind))
        checks.append(_check_from(
            f"{label}{key}", rec, alphas[f"{label}{key}"], q["p95"], lim,
            f"canary {kind} p95 {_g(q['p95'])}s CI {_ci(q['p95_ci'])} vs limit {lim:.3g}s ({above} of {h.count:.0f} above it)",
            {"canary": q, "interval": {"above": above, "n": h.count}, "limit_s": lim, "allowed_share": _P95_TAIL},
        ))
    return checks


def _kinds(c: RevisionMetrics, s: RevisionMetrics | None) -> list[str]:
    kinds = ["latency"]
    if c.ttft.count > 0 or (s is not None and s.ttft.count > 0):
        kinds.append("ttft")
    return kinds


def check_alphas(policy: AnalysisPolicy) -> dict[str, float]:
    """Alpha of every check the policy enables (weights in ``CHECK_WEIGHTS``; they sum to ``policy.alpha``).

    Fixed by the policy, not by the data (a TTFT check counts even before any
    TTFT is seen), so a check's threshold never moves during a rollout.
    """
    names = []
    if policy.max_error_rate is not None:
        names.append("error_rate")
    if policy.max_error_rate_increase is not None:
        names += ["error_rate_increase", "baseline_error_rate"]
    for kind in ("latency", "ttft"):
        if getattr(policy, f"max_{kind}_ratio") is not None:
            names += [f"{kind}_rank", f"{kind}_tail", f"baseline_{kind}_p95"]
        if getattr(policy, f"max_{kind}_p95_s") is not None:
            names.append(f"{kind}_p95")
    total = sum(CHECK_WEIGHTS[n] for n in names) or 1.0
    return {n: policy.alpha * CHECK_WEIGHTS[n] / total for n in names}


def new_evidence() -> dict[str, Any]:
    """Empty evidence for the first interval of a rollout."""
    return {"v": EVIDENCE_VERSION, "concurrent": _new_stream(), "baseline": _new_stream(), "absolute": _new_stream(),
            "provider_errors": 0, "quality_errors": 0,
            "step": None, "step_intervals": 0, "step_canary": 0, "step_stable": 0, "intervals": 0}


def judge(
    evidence: dict[str, Any] | None,
    canary: RevisionMetrics | None,
    stable: RevisionMetrics | None,
    policy: AnalysisPolicy,
    *,
    step: int = 0,
    weight: int = 10,
    stable_is_baseline: bool = False,
    min_intervals: int = 1,
    interval_s: float | None = None,
    quality: "QualityResult | None" = None,
    provider_error: str | None = None,
    quality_error: str | None = None,
) -> Verdict:
    """Add one interval to the evidence and decide.

    Args:
        evidence: what the previous call returned (``None``: a new rollout).
        canary: what the canary did in this interval (``None`` with ``provider_error``).
        stable: the stable revision in the same interval, or a recorded baseline
            (``stable_is_baseline``), or ``None`` (first release: absolute limits only).
        policy: the limits (validated here).
        step: index of the rollout step; a new index restarts the step's sample count.
        weight: the canary's traffic percent in this step.
        stable_is_baseline: ``stable`` is a recorded window, not concurrent traffic.
        min_intervals: intervals a step lasts at least.
        interval_s: the interval length (used to express probe needs; default: the window).
        quality: golden-prompt probe result of this interval.
        provider_error: the metrics provider failed for this interval (after retries).
        quality_error: the quality probe failed.

    Returns:
        The :class:`Verdict`; never raises for bad measurements.

    Raises:
        PolicyError: the policy itself is invalid.
    """
    policy.validate()
    ev = _copy(evidence) if evidence and evidence.get("v") == EVIDENCE_VERSION else new_evidence()
    if ev["step"] != step:
        ev.update(step=step, step_intervals=0, step_canary=0, step_stable=0)
    ev["intervals"] += 1
    checks: list[Check] = []
    quality_blind = False  # this interval's quality probe failed, within the tolerance: no step ends on it
    if quality_error is not None:  # a transport or HTTP failure of the probe, tolerated as the metrics' are
        ev["quality_errors"] = n = ev.get("quality_errors", 0) + 1
        limit = policy.max_provider_errors
        details = {"consecutive_errors": n, "limit": limit, "cause": quality_error}
        if n > limit:
            checks.append(Check(
                "quality", Phase.ERROR, float(n), float(limit),
                f"the judge could not see: the quality probe failed in {n} consecutive intervals (tolerated {limit}); "
                f"last cause: {quality_error}. This says nothing about the canary's health.", details=details,
            ))
        else:
            quality_blind = True
            checks.append(Check(
                "quality", Phase.INCONCLUSIVE, float(n), float(limit),
                f"quality probe failed ({n}/{limit} tolerated), retrying next interval: {quality_error}", details=details,
            ))
    if quality is not None:
        ev["quality_errors"] = 0
        checks.extend(_quality_checks(quality, policy))
    if provider_error is not None or canary is None:
        ev["provider_errors"] += 1
        cause = provider_error or "no canary metrics were collected"
        limit = policy.max_provider_errors
        if ev["provider_errors"] > limit:
            checks.append(Check(
                "metrics", Phase.ERROR, float(ev["provider_errors"]), float(limit),
                f"the judge could not see: metrics unavailable for {ev['provider_errors']} consecutive intervals "
                f"(tolerated {limit}); last cause: {cause}. This says nothing about the canary's health.",
                details={"consecutive_errors": ev["provider_errors"], "limit": limit, "cause": cause},
            ))
            return Verdict(AnalysisResult(combine([c.phase for c in checks]), tuple(checks)), ev, decided=True)
        checks.append(Check(
            "metrics", Phase.INCONCLUSIVE, float(ev["provider_errors"]), float(limit),
            f"metrics unavailable ({ev['provider_errors']}/{limit} tolerated), evidence kept, retrying next interval: {cause}",
            details={"consecutive_errors": ev["provider_errors"], "limit": limit, "cause": cause},
        ))
        failed = any(c.phase is Phase.FAILED for c in checks)
        phase = Phase.FAILED if failed else Phase.INCONCLUSIVE
        return Verdict(AnalysisResult(phase, tuple(checks)), ev, decided=failed)
    ev["provider_errors"] = 0
    ev["step_intervals"] += 1
    ev["step_canary"] += canary.requests
    concurrent = stable is not None and not stable_is_baseline
    if concurrent:
        ev["step_stable"] += stable.requests
    alpha_k = check_alphas(policy)
    kinds = _kinds(canary, stable)

    stream = ev["baseline" if stable_is_baseline else "concurrent"]
    if stable is not None:
        _pool(stream, "pool_c", canary)
    limits: dict[str, float] = {}
    if policy.max_error_rate is not None:
        limits["error_rate"] = policy.max_error_rate
    for kind in kinds:
        if getattr(policy, f"max_{kind}_p95_s") is not None:
            limits[f"{kind}_p95"] = getattr(policy, f"max_{kind}_p95_s")
    metric_checks: list[Check] = []
    if limits:
        _pool(ev["absolute"], "pool_c", canary)
        metric_checks += _absolute_checks(ev["absolute"], canary, limits, alpha_k, "", kinds)
    if concurrent:
        _pool(stream, "pool_s", stable)
        metric_checks += _relative_checks(stream, canary, stable, policy, alpha_k, kinds)
    elif stable_is_baseline and stable is not None:
        base: dict[str, float] = {}
        if policy.max_error_rate_increase is not None and stable.requests > 0:
            base["error_rate"] = stable.errors / stable.requests + policy.max_error_rate_increase
        for kind in kinds:
            ratio, p95 = getattr(policy, f"max_{kind}_ratio"), getattr(stable, kind).quantile(0.95)
            if ratio is not None and p95:
                base[f"{kind}_p95"] = p95 * ratio
        metric_checks += _absolute_checks(stream, canary, base, alpha_k, "baseline_", kinds)
    checks.extend(metric_checks)

    # traffic-aware sample: min_requests per arm within the step, min_intervals
    need = policy.min_requests
    have_c = ev["step_canary"]
    have_s = ev["step_stable"] if concurrent else need
    window = interval_s or max(1e-9, canary.end - canary.start)
    per_interval_c = canary.requests
    if concurrent and stable is not None:
        total_rate = (canary.requests + stable.requests) / window
        share = max(1e-6, min(1.0, weight / 100.0))
        per_interval_c = total_rate * share * window
    missing = max(0, need - have_c) if have_c < need or have_s < need else 0
    if concurrent and have_s < need:
        missing = max(missing, need - have_s)
    left = max(0, policy.max_intervals_per_step - ev["step_intervals"])
    intervals_needed = ev["step_intervals"] + (math.ceil(missing / per_interval_c) if per_interval_c > 0 and missing else (0 if not missing else 10**6))
    probe = 0
    if missing and left > 0 and intervals_needed > policy.max_intervals_per_step and policy.probe_budget > 0:
        probe = min(policy.probe_budget, math.ceil(missing / left))
    enough = not missing and ev["step_intervals"] >= min_intervals
    traffic = Check(
        "sample", Phase.SUCCESSFUL if enough else Phase.INCONCLUSIVE, float(have_c), float(need),
        (f"step sample complete: canary {have_c}, stable {ev['step_stable'] if concurrent else '-'} requests "
         f"(min_requests {need}) in {ev['step_intervals']} interval(s)") if enough else
        (f"collecting: canary {have_c} of {need} requests in {ev['step_intervals']} interval(s) at ~{per_interval_c:.0f}/interval"
         + (f"; asking for {probe} probe request(s) per arm per interval" if probe else "")
         + (f"; the step would need {intervals_needed} intervals, more than max_intervals_per_step "
            f"{policy.max_intervals_per_step}" if intervals_needed > policy.max_intervals_per_step else "")),
        details={"canary": have_c, "stable": ev["step_stable"] if concurrent else None, "min_requests": need,
                 "step_intervals": ev["step_intervals"], "max_intervals_per_step": policy.max_intervals_per_step,
                 "expected_canary_per_interval": per_interval_c, "intervals_needed": intervals_needed,
                 "probe_requests": probe, "probe_budget": policy.probe_budget},
    )
    checks.insert(0, traffic)
    phases = [c.phase for c in checks]
    if Phase.FAILED in phases:
        return Verdict(AnalysisResult(Phase.FAILED, tuple(checks)), ev, True, 0, intervals_needed)
    if Phase.ERROR in phases:
        return Verdict(AnalysisResult(Phase.ERROR, tuple(checks)), ev, True, 0, intervals_needed)
    # Only live comparisons hold a step: the recorded-baseline checks (100 % and the bake, no stable traffic) use a
    # plug-in limit from a window the stable served at a lower load, so an estimate over it is not yet evidence.
    unresolved = [c.name for c in metric_checks if c.details.get("unresolved") and not c.name.startswith("baseline_")]
    if enough and not unresolved and not quality_blind:
        return Verdict(AnalysisResult(Phase.SUCCESSFUL, tuple(checks)), ev, True, 0, intervals_needed)
    if enough and not unresolved and left > 0:  # the probe failed this interval: judge quality on the next one
        return Verdict(AnalysisResult(Phase.INCONCLUSIVE, tuple(checks)), ev, False, 0, intervals_needed)
    if enough and left > 0:
        # the sample is there but an estimate is past its limit without significance yet: collect more
        checks[0] = replace(traffic, phase=Phase.INCONCLUSIVE,
                            reason=traffic.reason + f"; {', '.join(unresolved)} over the limit, not yet significant: "
                            "collecting more before deciding")
        return Verdict(AnalysisResult(Phase.INCONCLUSIVE, tuple(checks)), ev, False, 0, intervals_needed)
    if left <= 0:
        # extended as far as allowed: inconclusive (the controller pauses; low traffic never rolls back by itself)
        checks[0] = replace(traffic, reason=traffic.reason + f"; too little traffic to judge within "
                            f"max_intervals_per_step={policy.max_intervals_per_step}: inconclusive")
        return Verdict(AnalysisResult(Phase.INCONCLUSIVE, tuple(checks)), ev, True, probe, intervals_needed)
    return Verdict(AnalysisResult(Phase.INCONCLUSIVE, tuple(checks)), ev, False, probe, intervals_needed)


def _copy(evidence: dict) -> dict:
    import copy

    return copy.deepcopy(evidence)


@dataclass
class Judge:
    """Stateful convenience over :func:`judge` (the benchmark keeps one per run).

    The controller stores :attr:`evidence` on the rollout state and rebuilds it,
    so it calls :func:`judge` directly; both run the same code.
    """

    policy: AnalysisPolicy
    min_intervals: int = 1
    evidence: dict[str, Any] | None = None
    history: list[Verdict] = field(default_factory=list)

    def observe(self, canary, stable, **kw: Any) -> Verdict:
        v = judge(self.evidence, canary, stable, self.policy, min_intervals=self.min_intervals, **kw)
        self.evidence = v.evidence
        self.history.append(v)
        return v


__all__ = [
    "Judge",
    "Verdict",
    "count_above",
    "half_normal_mixture_log_e",
    "judge",
    "mann_whitney_from_buckets",
    "new_evidence",
    "one_sample_log_lr",
    "quantile_interval",
    "tail_threshold",
    "two_sample_log_lr",
]
