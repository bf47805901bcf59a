"""Rollout state and the controller lease, stored as annotations on the InferenceService.

The state travels in the same write as the spec change it describes, so the
object never says one thing while serving another: a controller killed at any
point reads the annotation back and finishes what the last write started.

``llmops.io/rollout-state``  JSON of :class:`RolloutState`
``llmops.io/rollout-lease``  JSON of :class:`Lease` (holder id + expiry); the
                             lease is taken and renewed with the object's
                             ``resourceVersion`` as compare-and-set.
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import copy
import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from serving.metrics.base import Histogram, MetricsTarget, RevisionMetrics

from serving.cluster.names import ROLLOUT_ANNOTATIONS  # noqa: E402

STATE_ANNOTATION, LEASE_ANNOTATION = ROLLOUT_ANNOTATIONS
MAX_INTERVALS_KEPT = 40  # bounded: annotations share a 256 KiB budget
# Kubernetes refuses an object whose annotations together pass 256 KiB (apimachinery's
# TotalAnnotationSizeLimitB, validation/objectmeta.go ValidateAnnotationsSize): the state keeps the
# newest interval records that fit in half of it, so a long rollout's writes are never refused
STATE_BUDGET_BYTES = 128 * 1024


class RolloutPhase(str, enum.Enum):
    """Where a rollout is. Terminal phases end with ``hooks_pending`` empty."""

    PROGRESSING = "Progressing"  # canary takes steps[step_index] percent
    BAKING = "Baking"  # promoted; still analysed until bake_until
    ROLLING_BACK = "RollingBack"  # traffic is off the canary; previous spec is being restored
    PROMOTED = "Promoted"  # terminal: the new version serves all traffic
    ROLLED_BACK = "RolledBack"  # terminal: the previous version serves all traffic

    @property
    def terminal(self) -> bool:
        return self in (RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK)


def spec_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able spec (for the report and drift checks)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RolloutState:
    """Everything a restarted controller needs to finish a rollout."""

    rollout_id: str  # unique per rollout
    target_version: str  # model version being rolled out
    previous_version: str  # model version that served before
    mode: str  # DeploymentMode value
    phase: RolloutPhase = RolloutPhase.PROGRESSING
    step_index: int = 0  # index into steps
    steps: tuple[int, ...] = (10, 25, 50, 100)  # the plan, recorded for the report
    started: float = 0.0  # unix seconds
    step_started: float = 0.0  # when the current step was written
    interval_start: float | None = None  # start of the running analysis interval (canary ready)
    warm_until: float | None = None  # the canary's warm-up ends (set once, when it is first ready)
    successes: int = 0  # successful intervals on the current step
    failures: int = 0  # failed/error intervals in total
    inconclusive: int = 0  # consecutive inconclusive intervals
    new_predictor: dict = field(default_factory=dict)  # spec.predictor of the canary
    prev_predictor: dict = field(default_factory=dict)  # spec.predictor to restore on rollback
    new_spec_hash: str = ""
    prev_spec_hash: str = ""
    stable_revision: str | None = None  # revision serving before the rollout
    canary_revision: str | None = None  # revision created for the canary
    promoted_at: float | None = None
    bake_until: float | None = None
    reason: str = ""  # why it promoted / rolled back
    finished: float | None = None
    hooks_pending: tuple[str, ...] = ()  # "promote", "rollback", "restore_alias"
    intervals: tuple[dict, ...] = ()  # one summary per analysis interval (the newest that fit the budget)
    intervals_dropped: int = 0  # older records no longer kept (the report says so)
    baseline: dict | None = None  # last stable RevisionMetrics with traffic (for 100% and bake)
    failed: bool = False  # terminal without serving: a first deployment that never became ready

    @property
    def weight(self) -> int:
        """Canary traffic percent the spec asks for in this state."""
        if self.phase is RolloutPhase.PROGRESSING:
            return self.steps[self.step_index]
        if self.phase in (RolloutPhase.BAKING, RolloutPhase.PROMOTED):
            return 100
        return 0

    def evolve(self, **changes: Any) -> "RolloutState":
        return replace(self, **changes)

    def to_json(self) -> str:
        """The annotation's value: at most ``MAX_INTERVALS_KEPT`` interval records and ``STATE_BUDGET_BYTES``
        in all (the newest record, which holds the judge's evidence, is always kept)."""
        data = asdict(self)
        data["phase"] = self.phase.value
        records = list(self.intervals)
        kept = records[-MAX_INTERVALS_KEPT:]
        data["intervals"] = []
        room = STATE_BUDGET_BYTES - len(_dumps(data)) - 32  # the dropped count's digits, with margin
        sizes = [len(_dumps(r)) + 1 for r in kept]
        while len(kept) > 1 and sum(sizes) > room:
            kept, sizes = kept[1:], sizes[1:]
        data["intervals"] = kept
        data["intervals_dropped"] = self.intervals_dropped + len(records) - len(kept)
        return _dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "RolloutState":
        data = json.loads(text)
        data["phase"] = RolloutPhase(data["phase"])
        data["steps"] = tuple(data.get("steps") or ())
        data["hooks_pending"] = tuple(data.get("hooks_pending") or ())
        data["intervals"] = tuple(data.get("intervals") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> "RolloutState | None":
        text = ((obj.get("metadata") or {}).get("annotations") or {}).get(STATE_ANNOTATION)
        if not text:
            return None
        try:
            return cls.from_json(text)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RolloutStateError(
                f"annotation {STATE_ANNOTATION} is not a rollout state ({exc}); remove it with "
                f"kubectl annotate isvc <name> {STATE_ANNOTATION}- once you have checked the service"
            ) from exc


def _dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class RolloutStateError(LlmopsError, ValueError):
    """The state annotation on the InferenceService cannot be read."""


@dataclass(frozen=True)
class Lease:
    """Who drives the rollout, until when."""

    holder: str
    expires: float  # unix seconds

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def to_json(self) -> str:
        return json.dumps({"holder": self.holder, "expires": self.expires}, sort_keys=True)

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> "Lease | None":
        text = ((obj.get("metadata") or {}).get("annotations") or {}).get(LEASE_ANNOTATION)
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(holder=str(data["holder"]), expires=float(data["expires"]))
        except (ValueError, TypeError, KeyError):
            return None  # unreadable lease: treat as absent (it will be overwritten)


def with_annotations(obj: dict[str, Any], annotations: dict[str, str | None]) -> dict[str, Any]:
    """A deep copy of ``obj`` with annotations set (``None`` removes one)."""
    out = copy.deepcopy(obj)
    ann = out.setdefault("metadata", {}).setdefault("annotations", {})
    for key, value in annotations.items():
        if value is None:
            ann.pop(key, None)
        else:
            ann[key] = value
    return out


def metrics_to_dict(m: RevisionMetrics) -> dict[str, Any]:
    """Serialise :class:`RevisionMetrics` (histograms included) to JSON-able data."""
    return {
        "model_name": m.target.model_name,
        "model_version": m.target.model_version,
        "start": m.start,
        "end": m.end,
        "requests": m.requests,
        "errors": m.errors,
        "latency": [[_bound(b), c] for b, c in m.latency.buckets],
        "latency_sum": m.latency.total,
        "ttft": [[_bound(b), c] for b, c in m.ttft.buckets],
        "ttft_sum": m.ttft.total,
        "generated_tokens": m.generated_tokens,
    }


def metrics_from_dict(d: dict[str, Any]) -> RevisionMetrics:
    """Inverse of :func:`metrics_to_dict`."""
    return RevisionMetrics(
        target=MetricsTarget(d["model_name"], d["model_version"]),
        start=float(d["start"]),
        end=float(d["end"]),
        requests=int(d["requests"]),
        errors=int(d["errors"]),
        latency=Histogram(tuple((_unbound(b), float(c)) for b, c in d.get("latency") or ()), float(d.get("latency_sum", 0.0))),
        ttft=Histogram(tuple((_unbound(b), float(c)) for b, c in d.get("ttft") or ()), float(d.get("ttft_sum", 0.0))),
        generated_tokens=int(d.get("generated_tokens", 0)),
    )


def summarize_metrics(m: RevisionMetrics | None) -> dict[str, Any] | None:
    """The few numbers a person reads in a report."""
    if m is None:
        return None
    return {
        "version": m.target.model_version,
        "requests": m.requests,
        "errors": m.errors,
        "error_rate": m.error_rate,
        "latency_p50_s": m.latency_p(0.5),
        "latency_p95_s": m.latency_p(0.95),
        "ttft_p95_s": m.ttft_p(0.95),
    }


def _bound(b: float) -> float | str:
    return "+Inf" if b == float("inf") else b


def _unbound(b: float | str) -> float:
    return float("inf") if b == "+Inf" else float(b)
