"""Canary analysis for :class:`~serving.rollout.controller.RolloutController` (Flagger's ``scheduler_metrics.go``).

One interval's verdict: collect both arms' metrics (with retries), fall back to
the stable revision's last window (the baseline) when it takes no traffic, probe
quality, and hand all of it to the sequential judge (:func:`serving.rollout.sequential.judge`),
whose evidence is carried on the latest interval record under :data:`EVIDENCE_KEY`.
A provider failure is an ERROR measurement, never a crash (Argo Rollouts).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from serving.backends.base import BackendError, ServingBackend
from serving.metrics.base import MetricsError, MetricsProvider, MetricsTarget, RevisionMetrics
from serving.rollout.state import RolloutState, metrics_from_dict, metrics_to_dict, summarize_metrics
from serving.rollout.strategy import RolloutStrategy

log = logging.getLogger("serving.rollout.controller")  # the controller's log, as before the split

QualityProber = Callable[[str, str], Any]  # (canary_url, stable_url) -> QualityResult
EVIDENCE_KEY = "judge"  # the sequential judge's accumulator, kept on the latest interval record only


class CanaryAnalysis:
    """The analysis methods of :class:`~serving.rollout.controller.RolloutController` (a mixin).

    They read the controller's injected parts and nothing of its state machine.
    """

    backend: ServingBackend
    strategy: RolloutStrategy
    metrics: MetricsProvider
    quality: QualityProber | None
    probe_traffic: Callable[[str, str, int, int], int] | None
    model_name: str
    name: str
    namespace: str

    def _analyse(
        self, state: RolloutState, canary_rev: str | None, stable_rev: str | None, start: float, end: float, weight: int,
        bake: bool = False,
    ):
        """Judge one interval: ``(AnalysisResult, its interval record, the stable arm's new baseline or None)``."""
        from serving.rollout.analysis import AnalysisPolicy
        from serving.rollout.sequential import judge

        policy = self.strategy.analysis_policy or AnalysisPolicy()
        provider_error = None
        canary_m: RevisionMetrics | None = None
        stable_m: RevisionMetrics | None = None
        try:
            canary_m = self._collect(self._target(state.target_version, canary_rev), start, end, policy.provider_retries)
            if not bake:
                stable_m = self._collect(self._target(state.previous_version, stable_rev), start, end, policy.provider_retries)
        except (MetricsError, BackendError) as exc:
            provider_error = f"metrics: {exc}"
        except Exception as exc:  # any other provider failure is an ERROR measurement too (Argo Rollouts), never a crash
            provider_error = f"metrics: {type(exc).__name__}: {exc}"
        baseline_used = False
        new_baseline = None
        if stable_m is not None and stable_m.requests > 0:
            new_baseline = metrics_to_dict(stable_m)
        elif state.baseline and (bake or weight >= 100 or stable_m is None or stable_m.requests == 0) and provider_error is None:
            stable_m = metrics_from_dict(state.baseline)  # the stable revision has no traffic now: compare with its last window
            baseline_used = True
        quality, quality_error = None, None
        if self.quality is not None and self.strategy.quality_probe and not bake and provider_error is None:
            quality, quality_error = self._probe_quality(state, weight)
        verdict = judge(
            _last_evidence(state), canary_m, stable_m, policy,
            step=len(state.steps) if bake else state.step_index, weight=weight, stable_is_baseline=baseline_used,
            min_intervals=self.strategy.intervals_per_step, interval_s=self.strategy.interval_s,
            quality=quality, provider_error=provider_error, quality_error=quality_error,
        )
        result = verdict.result
        record = {
            "step": state.step_index,
            "weight": weight,
            "bake": bake,
            "start": start,
            "end": end,
            "phase": result.phase.value,
            "decided": verdict.decided,
            "probe_requests": verdict.probe_requests,
            "reasons": list(result.reasons),
            "checks": [c.to_dict() for c in result.checks],
            "canary": summarize_metrics(canary_m),
            "stable": summarize_metrics(stable_m),
            "canary_revision": canary_rev,
            "stable_revision": stable_rev if not bake else None,
            "stable_from_baseline": baseline_used,
            "quality": _quality_summary(quality),
            EVIDENCE_KEY: verdict.evidence,
        }
        log.info(
            "%s: interval at %d%%: %s %s", self.name, weight, result.phase.value, "; ".join(result.reasons),
        )
        return result, record, new_baseline

    def _collect(self, target: MetricsTarget, start: float, end: float, retries: int) -> RevisionMetrics:
        """``metrics.collect`` with immediate retries (a transient provider error is not a verdict)."""
        for attempt in range(retries + 1):
            try:
                return self.metrics.collect(target, start, end)
            except (MetricsError, BackendError) as exc:
                if attempt >= retries:
                    raise
                log.warning("%s: metrics for %s failed (attempt %d/%d), retrying: %s", self.name, target.arm, attempt + 1, retries + 1, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_probes(self, n: int, weight: int) -> None:
        """Golden-prompt probe traffic when the judge asks for it (best effort): ``n`` to the canary, stable's
        share of the split to stable (:func:`~serving.rollout.loadgen.probe_split`)."""
        if n <= 0 or self.probe_traffic is None:
            return
        from serving.rollout.loadgen import probe_split

        stable_n = probe_split(n, weight)
        try:
            eps = self.backend.endpoints(self.name, self.namespace)
            if eps.latest_url and eps.prev_url:
                answered = self.probe_traffic(eps.latest_url, eps.prev_url, n, stable_n)
                log.info("%s: probe requests at %d%%: %d to the canary, %d to stable, %s answered",
                         self.name, weight, n, stable_n, answered)
        except Exception as exc:  # probes add evidence; their failure must not stop the rollout
            log.warning("%s: probe traffic not sent: %s", self.name, exc)

    def _prime(self, version: str, revision: str | None, now: float) -> None:
        """Let the provider take its baseline for an interval starting ``now``.

        A provider that cannot take it is not fatal: the interval's collect will
        report the failure as an ERROR measurement.
        """
        try:
            self.metrics.prime(self._target(version, revision))
        except Exception as exc:
            log.warning("metrics baseline for v%s not taken: %s", version, exc)

    def _target(self, version: str, revision: str | None) -> MetricsTarget:
        """The arm to measure: by version AND revision (a re-roll of one version with a new spec is two arms).

        The revision is the Knative revision (Serverless) or the predictor's Deployment (Standard); the kit's
        PodMonitor puts either on the pods' series as ``revision``.
        """
        urls: tuple[str, ...] = ()
        if revision:
            try:
                urls = tuple(self.backend.revision_urls(self.name, self.namespace, revision))
            except BackendError:
                urls = ()
        return MetricsTarget(
            model_name=self.model_name, model_version=version, urls=urls, namespace=self.namespace,
            revision=revision or None,
        )

    def _probe_quality(self, state: RolloutState, weight: int):
        try:
            eps = self.backend.endpoints(self.name, self.namespace)
        except BackendError as exc:
            return None, f"endpoints unavailable: {exc}"
        if not eps.latest_url:
            return None, None  # no tag routing: latency/error analysis only
        # At 100% the stable revision takes no traffic and need not keep its `prev` route:
        # probe the canary alone and compare with the stable score of the last interval.
        if weight >= 100:
            baseline, stable_url = _last_stable_quality(state), None
        else:
            baseline, stable_url = None, eps.prev_url
            if not stable_url:
                return None, None
        try:
            result = self.quality(eps.latest_url, stable_url)
        except Exception as exc:  # QualityProbeError and transport errors are measurements, not crashes
            return None, str(exc)
        if baseline is not None:
            result = dataclasses.replace(result, stable_score=baseline)
        return result, None


def _last_stable_quality(state: RolloutState) -> float | None:
    """The stable revision's golden-prompt score from the latest interval that measured it."""
    for record in reversed(state.intervals):
        score = (record.get("quality") or {}).get("stable_score")
        if score is not None:
            return float(score)
    return None


def _quality_summary(quality: Any) -> dict | None:
    if quality is None:
        return None
    if hasattr(quality, "to_dict"):
        return quality.to_dict()
    return {"repr": repr(quality)}


def _last_evidence(state: RolloutState) -> dict | None:
    """The judge's evidence so far (from the latest interval that carries it)."""
    for record in reversed(state.intervals):
        if record.get(EVIDENCE_KEY):
            return record[EVIDENCE_KEY]
    return None


def keep_last_evidence(intervals: tuple[dict, ...]) -> tuple[dict, ...]:
    """Drop the accumulator from older records (the annotation budget is small; the newest one has it all)."""
    return tuple({k: v for k, v in r.items() if k != EVIDENCE_KEY} for r in intervals)
