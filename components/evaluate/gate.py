"""The release gate: a pure function from candidate and reference metrics to a verdict.

Metrics are the dicts :func:`components.evaluate.evaluate` writes:
``exact_match`` (percent, 0-100), ``perplexity`` (on answer tokens),
``ttft_ms`` and ``tokens_per_s`` (generation at batch 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from components.evaluate.errors import GatePolicyError


@dataclass(frozen=True)
class GatePolicy:
    """When a candidate may replace the reference (the serving champion)."""

    max_accuracy_drop_points: float = 2.0  # exact match may fall at most this many percentage points
    max_perplexity_rise_pct: float = 10.0  # answer perplexity may rise at most this many percent
    max_speed_drop_pct: float | None = None  # tokens/s may fall at most this many percent (None: report only; CPU timing on shared machines is noisy)
    min_accuracy: float = 0.0  # exact match (percent) every candidate needs, first release included

    def validate(self) -> "GatePolicy":
        """Check the fields; return self.

        Raises:
            GatePolicyError: naming the field and its allowed range.
        """
        def check(name: str, value, lo: float, hi: float | None) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise GatePolicyError(f"GatePolicy.{name}={value!r}: must be a number")
            if value < lo or (hi is not None and value > hi):
                rng = f"between {lo:g} and {hi:g}" if hi is not None else f">= {lo:g}"
                raise GatePolicyError(f"GatePolicy.{name}={value!r}: must be {rng}")

        check("max_accuracy_drop_points", self.max_accuracy_drop_points, 0, 100)
        check("max_perplexity_rise_pct", self.max_perplexity_rise_pct, 0, None)
        if self.max_speed_drop_pct is not None:
            check("max_speed_drop_pct", self.max_speed_drop_pct, 0, 100)
        check("min_accuracy", self.min_accuracy, 0, 100)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    """One gate check."""

    name: str  # min_accuracy, accuracy_drop, perplexity_rise, speed_drop
    passed: bool
    candidate: float | None  # candidate's value of the metric
    reference: float | None  # reference's value, None when not compared
    limit: float | None  # the policy threshold applied, None when report-only
    detail: str  # one sentence a person can read


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision; ``reasons`` explain failures (or summarise a pass)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GateVerdict":
        return cls(passed=d["passed"], reasons=list(d["reasons"]), checks=[CheckResult(**c) for c in d["checks"]])


def _num(metrics: dict | None, key: str) -> float | None:
    if not metrics or metrics.get(key) is None:
        return None
    try:
        v = float(metrics[key])
    except (TypeError, ValueError):
        return None
    return v


def gate(candidate_metrics: dict, reference_metrics: dict | None, policy: GatePolicy = GatePolicy()) -> GateVerdict:
    """Decide whether the candidate passes.

    Args:
        candidate_metrics: the candidate's metrics.
        reference_metrics: the reference's metrics, or None for a first release.
        policy: thresholds (validated here).

    Returns:
        The verdict; every check is listed, failing or not.
    """
    policy.validate()
    checks: list[CheckResult] = []
    acc = _num(candidate_metrics, "exact_match")
    if acc is None or math.isnan(acc):
        checks.append(CheckResult("min_accuracy", False, acc, None, policy.min_accuracy,
                                  "candidate has no exact_match metric"))
    else:
        ok = acc >= policy.min_accuracy
        checks.append(CheckResult("min_accuracy", ok, acc, None, policy.min_accuracy,
                                  f"exact match {acc:.1f}% {'>=' if ok else '<'} required minimum {policy.min_accuracy:.1f}%"))

    if reference_metrics is not None:
        ref_acc = _num(reference_metrics, "exact_match")
        if acc is not None and ref_acc is not None:
            drop = ref_acc - acc
            ok = drop <= policy.max_accuracy_drop_points + 1e-9
            checks.append(CheckResult(
                "accuracy_drop", ok, acc, ref_acc, policy.max_accuracy_drop_points,
                f"exact match {acc:.1f}% vs reference {ref_acc:.1f}% ({-drop:+.1f} points; "
                f"allowed drop {policy.max_accuracy_drop_points:g})"))
        else:
            checks.append(CheckResult("accuracy_drop", True, acc, ref_acc, policy.max_accuracy_drop_points,
                                      "not compared: the reference has no exact_match metric"))

        ppl, ref_ppl = _num(candidate_metrics, "perplexity"), _num(reference_metrics, "perplexity")
        if ppl is not None and ref_ppl is not None and ref_ppl > 0:
            rise = (ppl - ref_ppl) / ref_ppl * 100
            ok = not math.isnan(ppl) and rise <= policy.max_perplexity_rise_pct + 1e-9
            checks.append(CheckResult(
                "perplexity_rise", ok, ppl, ref_ppl, policy.max_perplexity_rise_pct,
                f"perplexity {ppl:.3f} vs reference {ref_ppl:.3f} ({rise:+.1f}%; allowed rise "
                f"{policy.max_perplexity_rise_pct:g}%)"))
        else:
            checks.append(CheckResult("perplexity_rise", True, ppl, ref_ppl, policy.max_perplexity_rise_pct,
                                      "not compared: perplexity missing on one side"))

        tps, ref_tps = _num(candidate_metrics, "tokens_per_s"), _num(reference_metrics, "tokens_per_s")
        if tps is not None and ref_tps is not None and ref_tps > 0:
            drop_pct = (ref_tps - tps) / ref_tps * 100
            limit = policy.max_speed_drop_pct
            ok = limit is None or drop_pct <= limit + 1e-9
            rule = f"allowed drop {limit:g}%" if limit is not None else "report only"
            checks.append(CheckResult("speed_drop", ok, tps, ref_tps, limit,
                                      f"{tps:.1f} tokens/s vs reference {ref_tps:.1f} ({-drop_pct:+.1f}%; {rule})"))
        else:
            checks.append(CheckResult("speed_drop", True, tps, ref_tps, policy.max_speed_drop_pct,
                                      "not compared: tokens_per_s missing on one side"))

    passed = all(c.passed for c in checks)
    if passed:
        reasons = ([] if reference_metrics is not None else ["first release: no reference to compare against"])
        reasons += [c.detail for c in checks]
    else:
        reasons = [f"{c.name} failed: {c.detail}" for c in checks if not c.passed]
    return GateVerdict(passed=passed, reasons=reasons, checks=checks)
