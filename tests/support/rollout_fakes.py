"""Fakes of the rollout's collaborators that implement the real interfaces.

* :class:`FakeKServeBackend` — a :class:`~serving.backends.base.ServingBackend`
  keeping InferenceServices in memory, with resourceVersion semantics and the
  status KServe would report (computed by the same :class:`KServeStandIn` the
  Kubernetes emulator uses).
* :class:`ScriptedMetrics` — a :class:`~serving.metrics.base.MetricsProvider`
  returning :class:`RevisionMetrics` from per-version profiles (good, slow,
  erroring, silent), with request counts split by the traffic the backend
  currently reports, so weights matter as they do in production.
* :class:`RecordingHooks` — registry hooks that record what they were told.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from serving.backends.base import Conflict, Endpoints, NotFound, PredictorStatus, ServingBackend
from serving.backends.kserve import endpoints_from_isvc
from serving.isvc import validate_isvc
from serving.metrics.base import Histogram, MetricsProvider, MetricsTarget, MetricsUnavailable, RevisionMetrics
from serving.rollout.hooks import RolloutEvent
from tests.support.kube_emulator import KServeStandIn, merge_patch

NAME, NS = "llm", "models"


def service(version: str, mode: Any = None, name: str = NAME, namespace: str = NS):
    """A ServiceSpec whose predictor serves ``version`` (Serverless unless ``mode``)."""
    from serving.isvc import DeploymentMode, PredictorSpec, ServiceSpec

    return ServiceSpec(
        name=name,
        namespace=namespace,
        predictor=PredictorSpec(storage_uri=f"pvc://models/v{version}", model_version=version, cpu="1", memory="1Gi"),
        deployment_mode=mode or DeploymentMode.SERVERLESS,
    )


def strategy(**kw):
    """A short strategy for tests: 10s intervals, 10 requests per revision are enough."""
    from serving.rollout.analysis import AnalysisPolicy
    from serving.rollout.strategy import RolloutStrategy

    base = dict(
        steps=(10, 25, 50, 100), interval_s=10.0, lease_ttl_s=60.0, ready_timeout_s=30.0,
        analysis_policy=AnalysisPolicy(min_requests=10),
    )
    base.update(kw)
    return RolloutStrategy(**base)


class RolloutKServeStandIn(KServeStandIn):
    """:class:`KServeStandIn` plus KServe's roll-back bookkeeping for a promoted revision.

    kserve ``pkg/apis/serving/v1beta1/inference_service_status.go`` PropagateStatus: when the
    fully rolled-out revision is given less than 100% again (its spec unchanged, so no new
    revision), ``latestRolledoutRevision`` moves back to ``previousRolledoutRevision``, and the
    ``ksvc_reconciler.go`` traffic split then sends the rest to that previous revision.
    """

    def _reconcile_serverless(self, obj, svc):
        from tests.support.kube_emulator import _hash

        pred = copy.deepcopy(obj["spec"]["predictor"])
        pct = pred.pop("canaryTrafficPercent", None)
        revs = svc["revisions"]
        if (pct is not None and pct < 100 and revs and revs[-1]["template"] == _hash(pred)
                and revs[-1]["name"] == svc["rolledout"] and svc["previous"]):
            svc["rolledout"], svc["previous"] = svc["previous"], None
        return super()._reconcile_serverless(obj, svc)


class FakeKServeBackend(ServingBackend):
    """In-memory InferenceServices with KServe-like status (see module docstring)."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.standin = RolloutKServeStandIn()
        self.rv = 0
        self.writes: list[dict[str, Any]] = []  # every object written, in order (validated)
        self.fail_next_apply: Exception | None = None

    def _bump(self, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.store[(namespace, name)])
        except KeyError:
            raise NotFound(f"inferenceservice {namespace}/{name} not found") from None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.fail_next_apply is not None:
            exc, self.fail_next_apply = self.fail_next_apply, None
            raise exc
        body = copy.deepcopy(obj)
        body.pop("status", None)
        validate_isvc(body)
        meta = body["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        current = self.store.get(key)
        if meta.get("resourceVersion"):
            if current is None:
                raise NotFound(f"inferenceservice {key[0]}/{key[1]} not found")
            if current["metadata"]["resourceVersion"] != meta["resourceVersion"]:
                raise Conflict("the object has been modified; please apply your changes to the latest version")
            gen = current["metadata"].get("generation", 1)
            meta["generation"] = gen + (1 if current.get("spec") != body.get("spec") else 0)
        else:
            if current is not None:
                raise Conflict(f"inferenceservice {key[0]}/{key[1]} already exists")
            meta["generation"] = 1
        self.writes.append(copy.deepcopy(body))
        body["status"] = self.standin.reconcile(body)
        self._bump(body)
        self.store[key] = body
        return copy.deepcopy(body)

    def patch_annotations(self, name, namespace, annotations, resource_version):
        current = self.store.get((namespace, name))
        if current is None:
            raise NotFound(f"inferenceservice {namespace}/{name} not found")
        if current["metadata"]["resourceVersion"] != resource_version:
            raise Conflict("the object has been modified")
        new = merge_patch(current, {"metadata": {"annotations": annotations}})
        self._bump(new)
        self.store[(namespace, name)] = new
        return copy.deepcopy(new)

    def delete(self, name: str, namespace: str) -> None:
        self.store.pop((namespace, name), None)

    def endpoints(self, name: str, namespace: str) -> Endpoints:
        return endpoints_from_isvc(self.get(name, namespace))

    def revision_urls(self, name: str, namespace: str, revision: str) -> tuple[str, ...]:
        return (f"http://{revision}.{namespace}.pods",)

    # ---- helpers for tests
    def put_raw(self, obj: dict[str, Any]) -> None:
        """Store ``obj`` as is (restores a snapshot, status included)."""
        meta = obj["metadata"]
        self.store[(meta.get("namespace", "default"), meta["name"])] = copy.deepcopy(obj)

    def traffic(self, name: str, namespace: str) -> dict[str, int]:
        return traffic_shares(self.get(name, namespace))


def traffic_shares(obj: dict[str, Any]) -> dict[str, int]:
    """Revision -> percent of traffic, from the status KServe reports (both modes)."""
    ps = PredictorStatus.from_isvc(obj)
    status = obj.get("status") or {}
    if status.get("deploymentMode") == "Standard" or status.get("canaryStatuses") is not None:
        shares = {c["name"]: int(c["trafficPercent"]) for c in status.get("canaryStatuses") or ()}
        if ps.latest_ready:
            shares[ps.latest_ready] = 100 - sum(shares.values())
        return shares
    return {t.revision: t.percent for t in ps.traffic}


@dataclass(frozen=True)
class Profile:
    """How one model version behaves while serving."""

    latency_s: float = 0.08  # typical request latency
    error_rate: float = 0.0  # share of requests that fail
    silent: bool = False  # receives no requests at all


GOOD = Profile()
SLOW = Profile(latency_s=0.6)
ERRORS = Profile(error_rate=0.3)
SILENT = Profile(silent=True)

BOUNDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf)


def _histogram(n: int, latency: float) -> Histogram:
    """``n`` observations spread over the bucket holding ``latency`` and its lower neighbour."""
    i = next(k for k, b in enumerate(BOUNDS) if latency <= b)
    below, at = n // 4, n - n // 4
    cum, out = 0, []
    for k, bound in enumerate(BOUNDS):
        if k == i - 1:
            cum += below
        if k == i:
            cum += at if i > 0 else n
        out.append((bound, float(cum)))
    return Histogram(tuple(out), latency * n)


class ScriptedMetrics(MetricsProvider):
    """Metrics per model version, with requests split by the backend's reported traffic.

    Args:
        backend: any backend (its reported traffic decides each revision's share).
        name, namespace: the InferenceService.
        profiles: model version -> :class:`Profile` (missing: :data:`GOOD`).
        rps: total requests per second the service receives.
        standin: the KServe stand-in that names revisions (default: ``backend.standin``).
    """

    def __init__(self, backend: ServingBackend, name: str, namespace: str, profiles: dict[str, Profile] | None = None,
                 rps: float = 20.0, standin: KServeStandIn | None = None):
        self.backend, self.name, self.namespace = backend, name, namespace
        self.standin = standin or backend.standin
        self.profiles = dict(profiles or {})
        self.rps = rps
        self.calls: list[tuple[MetricsTarget, float, float]] = []
        self.unavailable: str | None = None  # set to make collect() raise

    def collect(self, target: MetricsTarget, start: float, end: float) -> RevisionMetrics:
        self.calls.append((target, start, end))
        if self.unavailable:
            raise MetricsUnavailable(self.unavailable)
        profile = self.profiles.get(target.model_version, GOOD)
        versions = self.standin.revision_versions
        shares = traffic_shares(self.backend.get(self.name, self.namespace))
        share = sum(p for rev, p in shares.items() if versions.get(rev) == target.model_version)
        n = 0 if profile.silent else int(self.rps * max(0.0, end - start) * share / 100)
        errors = int(round(n * profile.error_rate))
        return RevisionMetrics(
            target=target, start=start, end=end, requests=n, errors=errors,
            latency=_histogram(n, profile.latency_s), ttft=_histogram(n, profile.latency_s / 4), generated_tokens=8 * n,
        )


class RecordingHooks:
    """Registry hooks that record events; ``fail_times`` makes the first calls raise."""

    def __init__(self, fail_times: int = 0) -> None:
        self.events: list[tuple[str, RolloutEvent]] = []
        self.fail_times = fail_times

    def _maybe_fail(self) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("registry unavailable (scripted)")

    def promoted(self, event: RolloutEvent) -> None:
        self._maybe_fail()
        self.events.append(("promoted", event))

    def rolled_back(self, event: RolloutEvent) -> None:
        self._maybe_fail()
        self.events.append(("rolled_back", event))

    @property
    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]
