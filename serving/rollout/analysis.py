"""Canary analysis: the policy, check and phase types, and single-window verdicts.

The rollout controller and ``benchmarks/canary_detection.py`` decide with the
sequential judge in :mod:`serving.rollout.sequential` (evidence accumulated
over the whole rollout, error control across looks), which uses the
:class:`AnalysisPolicy`, :class:`Check` and :class:`Phase` defined here.
:func:`analyse` below judges ONE window on its own (a one-off comparison); it
is not what the controller ships.

:func:`analyse` turns what the canary and the stable revision did during a step
(:class:`~serving.metrics.base.RevisionMetrics`), plus an optional golden-prompt
quality probe, into an :class:`AnalysisResult`: one :class:`Check` per rule and
an overall :class:`Phase`. Nothing here does I/O or raises on bad measurements;
a provider failure is a result with phase ``ERROR`` (as Argo Rollouts records it).

The rule, in the spirit of Kayenta (so noise does not roll back a good version
and a real regression is caught early):

* **Enough traffic first.** A revision with fewer than ``min_requests`` requests
  in the window makes every metric check ``INCONCLUSIVE``: too little traffic is
  never a pass.
* **Latency and TTFT** (p95 from the histograms). A check *fails* only when BOTH
  a threshold is exceeded (absolute ``max_*_p95_s`` or relative ``max_*_ratio``,
  canary p95 / stable p95) AND a one-sided Mann-Whitney U test on the histogram
  observations says the canary is slower than the stable revision at ``alpha``.
  A ratio above the limit that the test does not confirm is noise: ``SUCCESSFUL``.
  An absolute limit exceeded while the canary is not significantly slower than
  the stable revision (both breach the SLO) is ``INCONCLUSIVE``: not a pass, but
  not the canary's fault either.
* **Errors** (5xx share). Fails only when the canary's error rate is above
  ``max_error_rate`` or more than ``max_error_rate_increase`` above the stable
  rate, AND a one-sided Fisher exact test on the 2x2 table (errors/successes,
  canary/stable) says the canary's rate is higher at ``alpha``.
* **No baseline.** Without stable metrics (first release) the relative checks
  are skipped and absolute limits are tested against the limit itself with a
  one-sided binomial test: errors ``k`` of ``n`` against ``max_error_rate``;
  latency by the share of requests slower than the limit against 5 % (p95 above
  the limit means more than 5 % of requests are slower than it).
* **Quality.** Golden-prompt exact-match scores (fractions in ``[0, 1]``) fail
  below ``min_quality`` or when the canary scores more than ``max_quality_drop``
  below the stable revision (greedy decoding is deterministic: no test needed).
* **Combine.** Any ``FAILED`` -> ``FAILED``; else any ``ERROR`` -> ``ERROR``; else
  any ``INCONCLUSIVE`` -> ``INCONCLUSIVE``; else ``SUCCESSFUL``.
* **Family-wise alpha.** Up to three tests run per analysis (errors, latency,
  TTFT); each is held to ``alpha`` divided by the number that ran (Bonferroni),
  so pure noise fails an analysis with probability at most ``alpha``.

Several intervals of one step can be pooled with :func:`pool_metrics` (or
:func:`analyse_history`), which gives the tests more power the longer a step
runs, instead of judging each interval alone as a fixed-threshold rule does.

Errors::

    AnalysisError
    └── PolicyError   an AnalysisPolicy field is out of range (names the field)
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, Sequence

from serving.metrics.base import Histogram, MetricsTarget, RevisionMetrics

if TYPE_CHECKING:  # pragma: no cover
    from serving.rollout.quality import QualityResult


class AnalysisError(LlmopsError):
    """Base class for analysis errors."""


class PolicyError(AnalysisError, ValueError):
    """An :class:`AnalysisPolicy` field is invalid."""


class Phase(str, Enum):
    """Verdict of one check or of a whole analysis (Argo Rollouts' phases)."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


# share of requests allowed above a p95 limit
_P95_TAIL = 0.05


@dataclass(frozen=True)
class AnalysisPolicy:
    """Limits a canary step must meet. ``None`` disables a check."""

    min_requests: int = 50  # per revision, accumulated over a step, before the step can pass
    max_error_rate: float | None = 0.05  # absolute canary 5xx share, 0..1
    max_error_rate_increase: float | None = 0.02  # canary minus stable rate, 0..1
    max_latency_p95_s: float | None = None  # absolute canary p95, seconds
    max_latency_ratio: float | None = 1.25  # canary p95 / stable p95
    max_ttft_p95_s: float | None = None  # absolute canary TTFT p95, seconds
    max_ttft_ratio: float | None = 1.25  # canary TTFT p95 / stable TTFT p95
    alpha: float = 0.01  # family-wise significance level of the one-sided tests
    max_quality_drop: float | None = 0.1  # stable score minus canary score, 0..1
    min_quality: float | None = None  # absolute canary golden-prompt score, 0..1
    max_intervals_per_step: int = 10  # a step short of min_requests extends up to this many intervals, then is inconclusive
    probe_budget: int = 30  # golden-prompt probe requests per arm per interval when real traffic is too thin (0: off)
    provider_retries: int = 2  # immediate retries of a failed metrics query within one interval
    max_provider_errors: int = 2  # consecutive intervals without metrics tolerated before ERROR

    def validate(self) -> "AnalysisPolicy":
        """Check every field; return ``self`` so it chains.

        Raises:
            PolicyError: names the field, its value and the allowed range.
        """
        if not isinstance(self.min_requests, int) or isinstance(self.min_requests, bool) or self.min_requests < 1:
            raise PolicyError(
                f"min_requests must be a positive integer, got {self.min_requests!r}"
            )
        for name, low in (("max_intervals_per_step", 1), ("probe_budget", 0), ("provider_retries", 0), ("max_provider_errors", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise PolicyError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise PolicyError(f"alpha must be between 0 and 1 (e.g. 0.01), got {self.alpha!r}")
        unit = ("max_error_rate", "max_error_rate_increase", "max_quality_drop", "min_quality")
        positive = ("max_latency_p95_s", "max_ttft_p95_s")
        ratios = ("max_latency_ratio", "max_ttft_ratio")
        for name in unit + positive + ratios:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise PolicyError(f"{name} must be a number or None, got {value!r}")
            if name in unit and not 0 <= value <= 1:
                raise PolicyError(
                    f"{name} must be a fraction between 0 and 1 (0.05 = 5 points), got {value!r}"
                )
            if name in positive and value <= 0:
                raise PolicyError(f"{name} must be a positive number of seconds, got {value!r}")
            if name in ratios and value < 1:
                raise PolicyError(
                    f"{name} must be at least 1 (canary p95 / stable p95), got {value!r}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnalysisPolicy":
        """Build a policy from a mapping; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(
                f"unknown analysis policy field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data).validate()


@dataclass(frozen=True)
class Check:
    """One rule's verdict."""

    name: str  # e.g. "error_rate", "latency_p95_ratio"
    phase: Phase
    value: float | None  # what was measured (rate, seconds, ratio, score)
    threshold: float | None  # the limit it was held to
    reason: str  # one sentence a person can act on
    p_value: float | None = None  # one-sided test result, when a test ran (always-valid for the sequential judge)
    details: dict[str, Any] = field(default_factory=dict, compare=False)  # evidence: sample sizes, statistics, bounds

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"] = self.phase.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Check":
        return cls(
            name=data["name"],
            phase=Phase(data["phase"]),
            value=data.get("value"),
            threshold=data.get("threshold"),
            reason=data.get("reason", ""),
            p_value=data.get("p_value"),
            details=dict(data.get("details") or {}),
        )


@dataclass(frozen=True)
class AnalysisResult:
    """All checks of one analysis and the combined phase."""

    phase: Phase
    checks: tuple[Check, ...] = ()

    @property
    def reasons(self) -> list[str]:
        """Reasons of the checks that decided the phase (all reasons when it passed)."""
        if self.phase is Phase.SUCCESSFUL:
            return [c.reason for c in self.checks]
        return [c.reason for c in self.checks if c.phase is self.phase]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "reasons": self.reasons,
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnalysisResult":
        return cls(Phase(data["phase"]), tuple(Check.from_dict(c) for c in data.get("checks", ())))


def combine(phases: Sequence[Phase]) -> Phase:
    """Any FAILED wins, then ERROR, then INCONCLUSIVE; otherwise SUCCESSFUL."""
    for phase in (Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE):
        if phase in phases:
            return phase
    return Phase.SUCCESSFUL


# --------------------------------------------------------------------- tests


def _mann_whitney_greater(canary: Histogram, stable: Histogram) -> float:
    """One-sided p-value that canary observations tend to be larger than stable ones."""
    from scipy.stats import mannwhitneyu

    x, y = canary.samples(), stable.samples()
    if not x or not y:
        return 1.0
    if len(set(x) | set(y)) == 1:  # all in one bucket: no evidence either way
        return 1.0
    return float(mannwhitneyu(x, y, alternative="greater", method="asymptotic").pvalue)


def _fisher_greater(c_err: int, c_n: int, s_err: int, s_n: int) -> float:
    """One-sided p-value that the canary's error proportion is higher than stable's."""
    from scipy.stats import fisher_exact

    table = [[c_err, c_n - c_err], [s_err, s_n - s_err]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def _binom_greater(k: int, n: int, p0: float) -> float:
    """One-sided p-value that the true proportion of ``k`` in ``n`` exceeds ``p0``."""
    from scipy.stats import binomtest

    if n <= 0:
        return 1.0
    if p0 <= 0:
        return 0.0 if k > 0 else 1.0
    if p0 >= 1:
        return 1.0
    return float(binomtest(k, n, p0, alternative="greater").pvalue)


def _count_above(h: Histogram, limit: float) -> float:
    """Observations above ``limit``, interpolating linearly inside its bucket."""
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


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


# --------------------------------------------------------------------- checks


def _traffic_check(label: str, m: RevisionMetrics, policy: AnalysisPolicy) -> Check:
    if m.requests < policy.min_requests:
        return Check(
            f"{label}_requests",
            Phase.INCONCLUSIVE,
            float(m.requests),
            float(policy.min_requests),
            f"{label} served {m.requests} requests, fewer than min_requests={policy.min_requests}: "
            "too little traffic to judge; keep the step running or send more traffic",
        )
    return Check(
        f"{label}_requests",
        Phase.SUCCESSFUL,
        float(m.requests),
        float(policy.min_requests),
        f"{label} served {m.requests} requests (>= {policy.min_requests})",
    )


def _error_checks(
    c: RevisionMetrics, s: RevisionMetrics | None, policy: AnalysisPolicy, alpha: float
) -> list[Check]:
    out: list[Check] = []
    rate = c.errors / c.requests
    s_rate = s.errors / s.requests if s is not None else None
    p_vs_stable = (
        _fisher_greater(c.errors, c.requests, s.errors, s.requests) if s is not None else None
    )
    if policy.max_error_rate is not None:
        limit = policy.max_error_rate
        if s is None:
            p = _binom_greater(c.errors, c.requests, limit)
            ref = f"above the limit (binomial p={_fmt_p(p)})"
        else:
            p = p_vs_stable
            ref = f"vs stable {s_rate:.2%} (Fisher p={_fmt_p(p)})"
        if rate <= limit:
            phase, why = Phase.SUCCESSFUL, f"canary error rate {rate:.2%} within {limit:.2%}"
        elif p < alpha:
            phase, why = Phase.FAILED, f"canary error rate {rate:.2%} exceeds {limit:.2%}, significantly {ref}"
        else:
            phase = Phase.INCONCLUSIVE
            why = (
                f"canary error rate {rate:.2%} exceeds {limit:.2%} but not significantly {ref}"
                + ("; the stable revision is as bad, so this is not the canary's doing" if s else "")
            )
        out.append(Check("error_rate", phase, rate, limit, why, p))
    if policy.max_error_rate_increase is not None and s is not None:
        limit = policy.max_error_rate_increase
        delta = rate - s_rate
        if delta <= limit:
            phase = Phase.SUCCESSFUL
            why = f"canary error rate {rate:.2%} is {delta * 100:+.2f} points vs stable {s_rate:.2%} (limit +{limit * 100:.2f})"
        elif p_vs_stable < alpha:
            phase = Phase.FAILED
            why = (
                f"canary error rate {rate:.2%} is {delta * 100:+.2f} points above stable {s_rate:.2%} "
                f"(limit +{limit * 100:.2f}), significant (Fisher p={_fmt_p(p_vs_stable)})"
            )
        else:
            phase = Phase.SUCCESSFUL
            why = (
                f"canary error rate {rate:.2%} is {delta * 100:+.2f} points above stable {s_rate:.2%} "
                f"but within noise (Fisher p={_fmt_p(p_vs_stable)} >= alpha {alpha:.2g})"
            )
        out.append(Check("error_rate_increase", phase, delta, limit, why, p_vs_stable))
    return out


def _latency_checks(
    kind: str,
    c_hist: Histogram,
    s_hist: Histogram | None,
    abs_limit: float | None,
    ratio_limit: float | None,
    alpha: float,
    optional: bool = False,
) -> list[Check]:
    """p95 checks for one histogram kind (``latency`` or ``ttft``).

    ``optional`` kinds are skipped when neither revision observed any value.
    """
    out: list[Check] = []
    if abs_limit is None and (ratio_limit is None or s_hist is None):
        return out
    c_p95 = c_hist.quantile(0.95)
    if c_p95 is None:
        if c_hist.count <= 0 and optional and (s_hist is None or s_hist.count <= 0):
            return out  # neither revision reports it (e.g. no streaming traffic): not applicable
        if c_hist.count <= 0:
            return [
                Check(
                    f"{kind}_p95",
                    Phase.INCONCLUSIVE,
                    None,
                    abs_limit,
                    f"no {kind} observations for the canary in this window",
                )
            ]
        c_p95 = math.inf  # every observation above the largest finite bucket
    s_p95 = s_hist.quantile(0.95) if s_hist is not None else None
    p_mw = _mann_whitney_greater(c_hist, s_hist) if s_hist is not None and s_hist.count > 0 else None

    if abs_limit is not None:
        if s_hist is None:
            above = _count_above(c_hist, abs_limit)
            p = _binom_greater(int(round(above)), int(round(c_hist.count)), _P95_TAIL)
            ref = f"({above:.0f} of {c_hist.count:.0f} requests above it, binomial p={_fmt_p(p)})"
        else:
            p = p_mw
            ref = f"than stable p95 {s_p95:.3f}s (Mann-Whitney p={_fmt_p(p)})"
        if c_p95 <= abs_limit:
            phase, why = Phase.SUCCESSFUL, f"canary {kind} p95 {c_p95:.3f}s within {abs_limit:.3f}s"
        elif p is not None and p < alpha:
            phase = Phase.FAILED
            why = f"canary {kind} p95 {c_p95:.3f}s exceeds {abs_limit:.3f}s and is significantly slower {ref}"
        else:
            phase = Phase.INCONCLUSIVE
            why = f"canary {kind} p95 {c_p95:.3f}s exceeds {abs_limit:.3f}s but is not significantly slower {ref}"
        out.append(Check(f"{kind}_p95", phase, c_p95, abs_limit, why, p))

    if ratio_limit is not None and s_hist is not None:
        if s_p95 is None or s_p95 <= 0:
            out.append(
                Check(
                    f"{kind}_p95_ratio",
                    Phase.INCONCLUSIVE,
                    None,
                    ratio_limit,
                    f"stable {kind} p95 unknown (no observations): cannot compare",
                )
            )
            return out
        ratio = c_p95 / s_p95
        head = f"canary {kind} p95 {c_p95:.3f}s is {ratio:.2f}x stable {s_p95:.3f}s (limit {ratio_limit:.2f}x)"
        if ratio <= ratio_limit:
            phase, why = Phase.SUCCESSFUL, head
        elif p_mw is not None and p_mw < alpha:
            phase, why = Phase.FAILED, f"{head}, significantly slower (Mann-Whitney p={_fmt_p(p_mw)})"
        else:
            phase = Phase.SUCCESSFUL
            why = f"{head} but within noise (Mann-Whitney p={_fmt_p(p_mw)} >= alpha {alpha:.2g})"
        out.append(Check(f"{kind}_p95_ratio", phase, ratio, ratio_limit, why, p_mw))
    return out


def _quality_checks(quality: "QualityResult", policy: AnalysisPolicy) -> list[Check]:
    out: list[Check] = []
    if policy.min_quality is not None:
        ok = quality.canary_score >= policy.min_quality
        out.append(
            Check(
                "quality",
                Phase.SUCCESSFUL if ok else Phase.FAILED,
                quality.canary_score,
                policy.min_quality,
                f"canary golden-prompt score {quality.canary_score:.2f} "
                + ("meets" if ok else "is below")
                + f" min_quality {policy.min_quality:.2f} ({quality.n} prompts)",
            )
        )
    if policy.max_quality_drop is not None and quality.stable_score is not None:
        drop = quality.stable_score - quality.canary_score
        ok = drop <= policy.max_quality_drop + 1e-12
        out.append(
            Check(
                "quality_drop",
                Phase.SUCCESSFUL if ok else Phase.FAILED,
                drop,
                policy.max_quality_drop,
                f"canary golden-prompt score {quality.canary_score:.2f} vs stable {quality.stable_score:.2f} "
                f"(drop {drop:+.2f}, limit {policy.max_quality_drop:.2f}, {quality.n} prompts)",
            )
        )
    return out


def analyse(
    canary: RevisionMetrics | None,
    stable: RevisionMetrics | None,
    policy: AnalysisPolicy,
    quality: "QualityResult | None" = None,
    provider_error: str | None = None,
    quality_error: str | None = None,
) -> AnalysisResult:
    """Judge one canary step.

    Args:
        canary: what the canary revision did in the window; ``None`` when it could
            not be measured (pass the reason as ``provider_error``).
        stable: the same for the stable revision; ``None`` when there is none
            (first release): relative checks are skipped, absolute ones tested
            against their limit.
        policy: the limits (validated here).
        quality: golden-prompt probe result, when one ran.
        provider_error: the metrics provider's failure, recorded as an ERROR check.
        quality_error: the quality probe's failure, recorded as an ERROR check.

    Returns:
        The checks and the combined phase. Never raises for bad measurements.

    Raises:
        PolicyError: the policy itself is invalid (a configuration bug).
    """
    policy.validate()
    checks: list[Check] = []
    if provider_error is not None:
        checks.append(
            Check("metrics", Phase.ERROR, None, None, f"metrics unavailable: {provider_error}")
        )
    elif canary is None:
        checks.append(
            Check("metrics", Phase.ERROR, None, None, "no canary metrics were collected for this step")
        )
    else:
        checks.extend(_metric_checks(canary, stable, policy))
    if quality_error is not None:
        checks.append(Check("quality", Phase.ERROR, None, None, f"quality probe failed: {quality_error}"))
    if quality is not None:
        checks.extend(_quality_checks(quality, policy))
    return AnalysisResult(combine([c.phase for c in checks]), tuple(checks))


def _metric_checks(
    canary: RevisionMetrics, stable: RevisionMetrics | None, policy: AnalysisPolicy
) -> list[Check]:
    traffic = [_traffic_check("canary", canary, policy)]
    if stable is not None:
        traffic.append(_traffic_check("stable", stable, policy))
    if any(c.phase is not Phase.SUCCESSFUL for c in traffic):
        return traffic
    has_stable = stable is not None
    families = [
        policy.max_error_rate is not None or (policy.max_error_rate_increase is not None and has_stable),
        policy.max_latency_p95_s is not None or (policy.max_latency_ratio is not None and has_stable),
        (policy.max_ttft_p95_s is not None or (policy.max_ttft_ratio is not None and has_stable))
        and (canary.ttft.count > 0 or (has_stable and stable.ttft.count > 0)),
    ]
    # Bonferroni: the chance that noise fails any one of the tests stays at alpha
    alpha = policy.alpha / max(1, sum(families))
    checks = traffic
    checks += _error_checks(canary, stable, policy, alpha)
    checks += _latency_checks(
        "latency",
        canary.latency,
        stable.latency if stable is not None else None,
        policy.max_latency_p95_s,
        policy.max_latency_ratio,
        alpha,
    )
    checks += _latency_checks(
        "ttft",
        canary.ttft,
        stable.ttft if stable is not None else None,
        policy.max_ttft_p95_s,
        policy.max_ttft_ratio,
        alpha,
        optional=True,
    )
    return checks


def pool_metrics(intervals: Sequence[RevisionMetrics]) -> RevisionMetrics:
    """One revision's intervals as a single window (counts added, histograms merged).

    Raises:
        AnalysisError: no intervals, or intervals of different revisions.
    """
    if not intervals:
        raise AnalysisError("pool_metrics needs at least one interval")
    target: MetricsTarget = intervals[0].target
    if any(
        (m.target.model_name, m.target.model_version) != (target.model_name, target.model_version)
        for m in intervals
    ):
        raise AnalysisError("pool_metrics got intervals of different revisions; pool each revision alone")
    latency, ttft = Histogram(), Histogram()
    for m in intervals:
        latency, ttft = latency.plus(m.latency), ttft.plus(m.ttft)
    return RevisionMetrics(
        target=target,
        start=min(m.start for m in intervals),
        end=max(m.end for m in intervals),
        requests=sum(m.requests for m in intervals),
        errors=sum(m.errors for m in intervals),
        latency=latency,
        ttft=ttft,
        generated_tokens=sum(m.generated_tokens for m in intervals),
    )


def analyse_history(
    canary: Sequence[RevisionMetrics],
    stable: Sequence[RevisionMetrics] | None,
    policy: AnalysisPolicy,
    quality: "QualityResult | None" = None,
) -> AnalysisResult:
    """:func:`analyse` over all intervals of one step so far, pooled per revision.

    Pooling gives the statistical tests more data the longer a step runs, so a
    small regression is confirmed within a few intervals while one noisy interval
    cannot fail the step on its own.
    """
    if not canary:
        return analyse(None, None, policy, quality)
    pooled_stable = pool_metrics(stable) if stable else None
    return analyse(pool_metrics(canary), pooled_stable, policy, quality)


__all__ = [
    "AnalysisError",
    "AnalysisPolicy",
    "AnalysisResult",
    "Check",
    "Phase",
    "PolicyError",
    "analyse",
    "analyse_history",
    "combine",
    "pool_metrics",
]
