"""Table-driven tests for the canary analysis verdicts (pure functions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from serving.metrics.base import Histogram, MetricsTarget, RevisionMetrics
from serving.rollout.analysis import (
    AnalysisError,
    AnalysisPolicy,
    AnalysisResult,
    Phase,
    PolicyError,
    analyse,
    analyse_history,
    combine,
    pool_metrics,
)
from serving.rollout.quality import QualityResult

# prometheus_client's default buckets (what the model server uses unless told otherwise)
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
CANARY = MetricsTarget("m", "v2")
STABLE = MetricsTarget("m", "v1")


def rev(
    target: MetricsTarget,
    n: int,
    errors: int = 0,
    median_s: float = 0.2,
    sigma: float = 0.4,
    ttft_median_s: float = 0.05,
    seed: int = 0,
) -> RevisionMetrics:
    """``n`` requests with lognormal latencies (seeded), ``errors`` of them 5xx."""
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(math.log(median_s), sigma, n) if n else []
    ttft = rng.lognormal(math.log(ttft_median_s), sigma, n) if n else []
    return RevisionMetrics(
        target=target,
        start=0.0,
        end=60.0,
        requests=n,
        errors=errors,
        latency=Histogram.from_observations(lat, BOUNDS),
        ttft=Histogram.from_observations(ttft, BOUNDS),
    )


POLICY = AnalysisPolicy(
    min_requests=50,
    max_error_rate=0.05,
    max_error_rate_increase=0.02,
    max_latency_p95_s=None,
    max_latency_ratio=1.25,
    max_ttft_p95_s=None,
    max_ttft_ratio=1.25,
    alpha=0.01,
    max_quality_drop=0.1,
    min_quality=None,
)


def P(**kw) -> AnalysisPolicy:
    return AnalysisPolicy(**{**POLICY.to_dict(), **kw})


# (id, canary, stable, policy, expected phase, {check name: expected phase}, text expected in a reason)
CASES = [
    (
        "identical-healthy",
        rev(CANARY, 400, 2, seed=1),
        rev(STABLE, 4000, 20, seed=2),
        POLICY,
        Phase.SUCCESSFUL,
        {"error_rate": Phase.SUCCESSFUL, "error_rate_increase": Phase.SUCCESSFUL,
         "latency_p95_ratio": Phase.SUCCESSFUL, "ttft_p95_ratio": Phase.SUCCESSFUL},
        "within",
    ),
    (
        "canary-too-little-traffic",
        rev(CANARY, 10, 10, median_s=5.0, seed=1),
        rev(STABLE, 4000, 0, seed=2),
        POLICY,
        Phase.INCONCLUSIVE,
        {"canary_requests": Phase.INCONCLUSIVE},
        "fewer than min_requests=50",
    ),
    (
        "stable-too-little-traffic",
        rev(CANARY, 400, 0, seed=1),
        rev(STABLE, 20, 0, seed=2),
        POLICY,
        Phase.INCONCLUSIVE,
        {"stable_requests": Phase.INCONCLUSIVE},
        "stable served 20 requests",
    ),
    (
        "error-rise-significant",
        rev(CANARY, 400, 24, seed=1),  # 6 %
        rev(STABLE, 4000, 20, seed=2),  # 0.5 %
        POLICY,
        Phase.FAILED,
        {"error_rate": Phase.FAILED, "error_rate_increase": Phase.FAILED},
        "significant",
    ),
    (
        "error-rise-over-limit-but-noise",
        rev(CANARY, 60, 2, seed=1),  # 3.3 %: +2.8 points over stable, 2 errors only
        rev(STABLE, 540, 3, seed=2),
        POLICY,
        Phase.SUCCESSFUL,
        {"error_rate": Phase.SUCCESSFUL, "error_rate_increase": Phase.SUCCESSFUL},
        "within noise",
    ),
    (
        "both-breach-absolute-error-slo",
        rev(CANARY, 400, 32, seed=1),  # 8 %
        rev(STABLE, 4000, 330, seed=2),  # 8.25 %
        POLICY,
        Phase.INCONCLUSIVE,
        {"error_rate": Phase.INCONCLUSIVE, "error_rate_increase": Phase.SUCCESSFUL},
        "not the canary's doing",
    ),
    (
        # default buckets are coarse (0.25, 0.5, 0.75): a 2x p95 shows as ~1.6x
        "latency-2x-regression",
        rev(CANARY, 400, median_s=0.4, seed=1),
        rev(STABLE, 4000, median_s=0.2, seed=2),
        POLICY,
        Phase.FAILED,
        {"latency_p95_ratio": Phase.FAILED, "ttft_p95_ratio": Phase.SUCCESSFUL},
        "significantly slower",
    ),
    (
        "latency-ratio-over-limit-but-noise",
        # 3 slow requests of 50 put the canary's p95 at 2.2x; the rank test sees noise
        RevisionMetrics(CANARY, 0, 60, 50, latency=Histogram.from_observations([0.2] * 47 + [0.6] * 3, BOUNDS)),
        RevisionMetrics(STABLE, 0, 60, 450, latency=Histogram.from_observations([0.2] * 430 + [0.4] * 20, BOUNDS)),
        POLICY,
        Phase.SUCCESSFUL,
        {"latency_p95_ratio": Phase.SUCCESSFUL},
        "within noise",
    ),
    (
        "latency-significant-but-under-ratio",
        rev(CANARY, 20000, median_s=0.21, seed=1),
        rev(STABLE, 20000, median_s=0.2, seed=2),
        POLICY,
        Phase.SUCCESSFUL,
        {"latency_p95_ratio": Phase.SUCCESSFUL},
        "limit 1.25x",
    ),
    (
        "latency-absolute-limit-and-slower",
        rev(CANARY, 400, median_s=0.4, seed=1),
        rev(STABLE, 4000, median_s=0.2, seed=2),
        P(max_latency_p95_s=0.5, max_latency_ratio=None),
        Phase.FAILED,
        {"latency_p95": Phase.FAILED},
        "exceeds 0.500s",
    ),
    (
        "latency-absolute-limit-both-slow",
        rev(CANARY, 400, median_s=0.4, seed=1),
        rev(STABLE, 4000, median_s=0.4, seed=2),
        P(max_latency_p95_s=0.5),
        Phase.INCONCLUSIVE,
        {"latency_p95": Phase.INCONCLUSIVE, "latency_p95_ratio": Phase.SUCCESSFUL},
        "not significantly slower",
    ),
    (
        "ttft-regression",
        rev(CANARY, 400, ttft_median_s=0.1, seed=1),
        rev(STABLE, 4000, ttft_median_s=0.05, seed=2),
        POLICY,
        Phase.FAILED,
        {"ttft_p95_ratio": Phase.FAILED, "latency_p95_ratio": Phase.SUCCESSFUL},
        "canary ttft p95",
    ),
    (
        "ttft-absolute-limit",
        rev(CANARY, 400, ttft_median_s=0.2, seed=1),
        rev(STABLE, 4000, ttft_median_s=0.05, seed=2),
        P(max_ttft_p95_s=0.1, max_ttft_ratio=None),
        Phase.FAILED,
        {"ttft_p95": Phase.FAILED},
        "exceeds 0.100s",
    ),
    (
        "no-baseline-healthy",
        rev(CANARY, 400, 2, seed=1),
        None,
        P(max_latency_p95_s=1.0),
        Phase.SUCCESSFUL,
        {"error_rate": Phase.SUCCESSFUL, "latency_p95": Phase.SUCCESSFUL},
        "within",
    ),
    (
        "no-baseline-errors-and-slow",
        rev(CANARY, 400, 60, median_s=0.8, seed=1),
        None,
        P(max_latency_p95_s=0.5),
        Phase.FAILED,
        {"error_rate": Phase.FAILED, "latency_p95": Phase.FAILED},
        "binomial",
    ),
    (
        "no-baseline-just-over-limit-is-not-a-pass",
        rev(CANARY, 100, 6, seed=1),  # 6 % vs 5 % limit: not significant
        None,
        POLICY,
        Phase.INCONCLUSIVE,
        {"error_rate": Phase.INCONCLUSIVE},
        "not significantly",
    ),
]


@pytest.mark.parametrize(
    "canary,stable,policy,phase,checks,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_analyse_cases(canary, stable, policy, phase, checks, text):
    result = analyse(canary, stable, policy)
    got = {c.name: c.phase for c in result.checks}
    assert result.phase is phase, result.to_dict()
    for name, expected in checks.items():
        assert got.get(name) is expected, (name, result.to_dict())
    assert any(text in r for r in result.reasons), result.reasons


def test_relative_checks_skipped_without_baseline():
    result = analyse(rev(CANARY, 400, seed=1), None, POLICY)
    names = {c.name for c in result.checks}
    assert "error_rate_increase" not in names and "latency_p95_ratio" not in names
    assert "error_rate" in names


# (id, provider_error, quality, quality_error, canary present, phase, check name)
ERROR_CASES = [
    ("provider-error", "cannot reach http://x/metrics", None, None, False, Phase.ERROR, "metrics"),
    ("canary-missing", None, None, None, False, Phase.ERROR, "metrics"),
    ("provider-error-but-quality-fails", "boom", QualityResult(0.5, 0.9, 20), None, False, Phase.FAILED, "quality_drop"),
    ("quality-probe-error", None, None, "cannot reach http://c/openai/v1", True, Phase.ERROR, "quality"),
]


@pytest.mark.parametrize(
    "provider_error,quality,quality_error,with_canary,phase,name",
    [c[1:] for c in ERROR_CASES],
    ids=[c[0] for c in ERROR_CASES],
)
def test_failures_to_measure_are_results(provider_error, quality, quality_error, with_canary, phase, name):
    canary = rev(CANARY, 400, seed=1) if with_canary else None
    stable = rev(STABLE, 4000, seed=2) if with_canary else None
    result = analyse(canary, stable, POLICY, quality, provider_error=provider_error, quality_error=quality_error)
    assert result.phase is phase
    assert result.check(name) is not None
    if provider_error:
        assert provider_error in result.check("metrics").reason


# (id, quality, policy, phase, check, expected check phase)
QUALITY_CASES = [
    ("same-score", QualityResult(0.9, 0.9, 20), POLICY, Phase.SUCCESSFUL, "quality_drop", Phase.SUCCESSFUL),
    ("drop-at-limit", QualityResult(0.8, 0.9, 20), POLICY, Phase.SUCCESSFUL, "quality_drop", Phase.SUCCESSFUL),
    ("drop-over-limit", QualityResult(0.7, 0.9, 20), POLICY, Phase.FAILED, "quality_drop", Phase.FAILED),
    ("below-min", QualityResult(0.4, None, 20), P(min_quality=0.5), Phase.FAILED, "quality", Phase.FAILED),
    ("meets-min", QualityResult(0.6, None, 20), P(min_quality=0.5), Phase.SUCCESSFUL, "quality", Phase.SUCCESSFUL),
]


@pytest.mark.parametrize(
    "quality,policy,phase,name,check_phase", [c[1:] for c in QUALITY_CASES], ids=[c[0] for c in QUALITY_CASES]
)
def test_quality_checks(quality, policy, phase, name, check_phase):
    result = analyse(rev(CANARY, 400, seed=1), rev(STABLE, 4000, seed=2), policy, quality)
    assert result.phase is phase
    assert result.check(name).phase is check_phase


@pytest.mark.parametrize(
    "phases,expected",
    [
        ([], Phase.SUCCESSFUL),
        ([Phase.SUCCESSFUL, Phase.SUCCESSFUL], Phase.SUCCESSFUL),
        ([Phase.SUCCESSFUL, Phase.INCONCLUSIVE], Phase.INCONCLUSIVE),
        ([Phase.INCONCLUSIVE, Phase.ERROR], Phase.ERROR),
        ([Phase.ERROR, Phase.FAILED, Phase.INCONCLUSIVE], Phase.FAILED),
        ([Phase.FAILED, Phase.SUCCESSFUL], Phase.FAILED),
    ],
)
def test_combine(phases, expected):
    assert combine(phases) is expected


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("min_requests", 0, "min_requests must be a positive integer"),
        ("min_requests", 2.5, "min_requests must be a positive integer"),
        ("alpha", 0, "alpha must be between 0 and 1"),
        ("alpha", 1.5, "alpha must be between 0 and 1"),
        ("max_error_rate", 5, "max_error_rate must be a fraction between 0 and 1"),
        ("max_error_rate_increase", -0.1, "max_error_rate_increase must be a fraction"),
        ("max_latency_p95_s", 0, "max_latency_p95_s must be a positive number of seconds"),
        ("max_ttft_p95_s", -1, "max_ttft_p95_s must be a positive number"),
        ("max_latency_ratio", 0.9, "max_latency_ratio must be at least 1"),
        ("max_ttft_ratio", 0.5, "max_ttft_ratio must be at least 1"),
        ("max_quality_drop", 10, "max_quality_drop must be a fraction"),
        ("min_quality", "high", "min_quality must be a number or None"),
        ("max_latency_ratio", float("nan"), "max_latency_ratio must be a number"),
    ],
)
def test_policy_validate_names_the_field(field, value, message):
    with pytest.raises(PolicyError, match=message):
        P(**{field: value}).validate()
    # analyse refuses a bad policy too (configuration bug, not a measurement)
    with pytest.raises(PolicyError, match=field):
        analyse(rev(CANARY, 100), rev(STABLE, 100), P(**{field: value}))


def test_policy_from_dict_refuses_unknown_fields():
    with pytest.raises(PolicyError, match="unknown analysis policy field.*max_p99.*known:"):
        AnalysisPolicy.from_dict({"max_p99": 1.0})
    assert AnalysisPolicy.from_dict({"alpha": 0.05}).alpha == 0.05


def test_result_round_trips_through_json():
    result = analyse(
        rev(CANARY, 400, 24, median_s=0.3, seed=1), rev(STABLE, 4000, 20, seed=2), POLICY, QualityResult(0.9, 0.9, 20)
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["phase"] == "Failed"
    assert data["reasons"] and all(isinstance(r, str) for r in data["reasons"])
    back = AnalysisResult.from_dict(data)
    assert back == result
    assert all(c.p_value is None or 0 <= c.p_value <= 1 for c in back.checks)


def test_pooling_intervals_gives_a_steady_verdict_where_single_intervals_flip():
    # 1.3x slower canary at 15 requests per interval (10 % of a slow service)
    policy = P(min_requests=10, max_latency_ratio=1.2)
    canary = [rev(CANARY, 15, median_s=0.26, seed=100 + i) for i in range(6)]
    stable = [rev(STABLE, 135, median_s=0.2, seed=200 + i) for i in range(6)]
    singles = {analyse(c, s, policy).phase for c, s in zip(canary, stable)}
    assert singles == {Phase.FAILED, Phase.SUCCESSFUL}  # one interval alone is a coin toss
    pooled = [analyse_history(canary[:k], stable[:k], policy) for k in range(2, 7)]
    assert all(r.phase is Phase.FAILED for r in pooled)
    assert pooled[-1].check("canary_requests").value == 90
    assert pooled[-1].check("latency_p95_ratio").p_value < 1e-3


def test_pool_metrics_adds_counts_and_histograms():
    a, b = rev(CANARY, 100, 3, seed=1), rev(CANARY, 50, 1, seed=2)
    pooled = pool_metrics([a, b])
    assert (pooled.requests, pooled.errors) == (150, 4)
    assert pooled.latency.count == 150
    assert pooled.latency.total == pytest.approx(a.latency.total + b.latency.total)
    with pytest.raises(AnalysisError, match="different revisions"):
        pool_metrics([a, rev(STABLE, 10)])
    with pytest.raises(AnalysisError, match="at least one interval"):
        pool_metrics([])


def test_histogram_helpers_match_prometheus_semantics():
    h = Histogram.from_observations([0.02, 0.2, 0.2, 0.6, 20.0], BOUNDS)
    assert h.count == 5
    assert dict(h.buckets)[0.25] == 3 and dict(h.buckets)[math.inf] == 5
    assert h.plus(h).count == 10
    assert h.plus(h).minus(h) == h


def test_requests_without_latency_observations_are_inconclusive_but_missing_ttft_is_skipped():
    canary = RevisionMetrics(CANARY, 0, 60, 100)  # counted requests, no histograms
    stable = RevisionMetrics(STABLE, 0, 60, 900)
    result = analyse(canary, stable, POLICY)
    assert result.phase is Phase.INCONCLUSIVE
    assert result.check("latency_p95").phase is Phase.INCONCLUSIVE
    assert result.check("ttft_p95") is None and result.check("ttft_p95_ratio") is None


def test_alpha_is_shared_between_the_tests_that_ran():
    # errors 4/100 vs 4/900: Fisher p ~ 0.006, under alpha=0.01 alone
    canary, stable = rev(CANARY, 100, 4, seed=1), rev(STABLE, 900, 4, seed=2)
    errors_only = P(max_latency_ratio=None, max_ttft_ratio=None)
    assert analyse(canary, stable, errors_only).phase is Phase.FAILED
    # with latency and TTFT tested too, each test gets alpha/3: not significant any more
    result = analyse(canary, stable, POLICY)
    assert result.check("error_rate_increase").phase is Phase.SUCCESSFUL
    assert "within noise" in result.check("error_rate_increase").reason
