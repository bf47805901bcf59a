"""The ``local`` serving backend: KServe's Serverless semantics on one machine.

:class:`LocalBackend` accepts the same InferenceService objects as KServe
(validated against KServe's CRD), runs every predictor revision as a real model
server process (``python -m serving``) on a free loopback port, puts one
weighted router process (:mod:`serving.backends.router`) in front of each
InferenceService, and reports ``status`` the way KServe does
(``latestCreatedRevision``, ``latestReadyRevision``, ``latestRolledoutRevision``,
``previousRolledoutRevision``, ``traffic``, conditions ``PredictorReady``,
``IngressReady``, ``Ready``). The rollout controller cannot tell it from the
``kserve`` backend.

How KServe/Knative behaviour maps here:

* Each apply whose ``spec.predictor`` (without ``canaryTrafficPercent``) differs
  from the newest revision's creates revision ``<name>-predictor-<5 digits>``;
  a spec equal to an older revision's reuses that revision (no second process).
* Traffic and rolled-out bookkeeping follow KServe's ksvc reconciler and
  ``PropagateStatus`` (:func:`route_traffic`, :func:`propagate_rollout`).
* Tag routing (annotation ``serving.kserve.io/enable-tag-routing: "true"``):
  KServe's ``latest-<host>`` / ``prev-<host>`` addresses are the router's
  ``/_tag/latest/...`` and ``/_tag/prev/...`` path prefixes here.
* There is no controller loop: each call (``get``, ``apply``, ...) reconciles
  the service it touches (probes starting servers, notices dead processes,
  recomputes traffic, stops revisions nothing needs). ``metadata.resourceVersion``
  increases on every write, status changes included, as on Kubernetes.
* ``minReplicas``/``maxReplicas``/resources are recorded but not enforced:
  one process per revision, no scale to zero.
* ``storageUri`` is a local folder (a path or ``file://``) or a modelcar image
  pinned by digest (``oci://host/repo@sha256:...`` or ``oci-layout:/dir@sha256:...``),
  whose ``/models`` is pulled once into ``<state>/models/<digest>`` when the
  revision starts (registries on loopback are spoken to over plain HTTP).
  Object stores are refused with the fix (pull the model to a folder first).

State lives in one folder (default ``./.llmops/serving``), shared by every
process that points a backend at it; an ``fcntl.flock`` guards each
read-modify-write::

    state.json                    every InferenceService, its revisions, PIDs, ports
    state.lock                    the lock file
    routes/<ns>.<name>.json       the router's table (atomically replaced; the router reloads it)
    logs/<ns>.<name>/router.log   router output
    logs/<ns>.<name>/<rev>.log    model server output
    logs/<ns>.<name>/<rev>.exit   exit status written by the launcher shell

Processes are started detached (own session), so endpoints outlive the Python
process that created them until :meth:`LocalBackend.delete` (``llmops down``).

Errors::

    BackendError                      (serving.backends.base)
    ├── BackendUnavailable            the state folder or a launcher is unusable
    ├── NotFound
    ├── Conflict                      stale metadata.resourceVersion
    └── LocalSpecError (ValueError)   valid for KServe but not runnable locally (says what to use)

Objects that fail KServe's CRD schema raise :class:`serving.isvc.IsvcSchemaError`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import fcntl
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from llmops_core.faults import kill_point
from serving.backends.base import (
    BackendError,
    BackendUnavailable,
    Conflict,
    Endpoints,
    NotFound,
    ServingBackend,
    TrafficTarget,
)
from serving.isvc import (
    DEPLOYMENT_MODE_ANNOTATION,
    MODEL_FORMAT,
    TAG_ROUTING_ANNOTATION,
    DeploymentMode,
    IsvcSpecError,
    validate_isvc,
)

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".llmops") / "serving"
MODEL_VERSION_ENV = "LLMOPS_MODEL_VERSION"
TAG_PREFIX = "/_tag/"  # router path prefix standing in for KServe's "<tag>-" hostnames
ROUTER_HEALTH_PATH = "/_router/health"
READY_PATH = "/v2/health/ready"
STATE_VERSION = 1


class LocalSpecError(BackendError, ValueError):
    """The InferenceService is valid for KServe but the local backend cannot run it."""


# --------------------------------------------------------------------------- pure logic


@dataclass(frozen=True)
class RolloutState:
    """The revision bookkeeping KServe keeps in ``status.components.predictor``."""

    latest_created: str | None = None  # newest revision (new spec or reused one)
    latest_ready: str | None = None  # newest revision that became ready
    latest_rolledout: str | None = None  # last revision that took 100% of traffic
    previous_rolledout: str | None = None  # the one rolled out before it


def predictor_template(predictor: dict[str, Any]) -> dict[str, Any]:
    """The part of ``spec.predictor`` that defines a revision (all but ``canaryTrafficPercent``)."""
    return {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}


def same_template(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Compare two revision templates structurally (key order does not matter)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def revision_name(service: str, number: int) -> str:
    """Knative-style revision name: ``<service>-predictor-00001``."""
    return f"{service}-predictor-{number:05d}"


def route_traffic(state: RolloutState, canary_percent: int | None, tag_routing: bool) -> tuple[TrafficTarget, ...]:
    """Traffic targets as KServe's ksvc reconciler writes them, resolved to revisions.

    ``latestRevision: true`` targets resolve to the latest *ready* revision (as
    Knative routes them); with no ready revision there is no traffic yet.

    Args:
        state: current revision bookkeeping.
        canary_percent: ``spec.predictor.canaryTrafficPercent`` or None.
        tag_routing: the tag-routing annotation is ``"true"``.
    """
    if state.latest_ready is None:
        return ()
    latest_tag = "latest" if tag_routing else None
    if canary_percent is not None and state.latest_rolledout:
        targets = [TrafficTarget(state.latest_ready, canary_percent, latest=True, tag=latest_tag)]
        if canary_percent < 100:
            targets.append(TrafficTarget(state.latest_rolledout, 100 - canary_percent, latest=False, tag="prev"))
        return tuple(targets)
    return (TrafficTarget(state.latest_ready, 100, latest=True, tag=latest_tag),)


def propagate_rollout(state: RolloutState, traffic: Sequence[TrafficTarget]) -> RolloutState:
    """Update the rolled-out revisions from the traffic in force (KServe's ``PropagateStatus``).

    The latest ready revision taking 100% becomes ``latest_rolledout`` (the former
    one moves to ``previous_rolledout``). When a rolled-out latest revision is
    split with itself below 100% (a canary set on an already promoted spec), the
    rollout falls back to ``previous_rolledout``.
    """
    by_revision: dict[str, int] = {}
    for t in traffic:
        by_revision[t.revision] = by_revision.get(t.revision, 0) + t.percent
    rolledout, previous = state.latest_rolledout, state.previous_rolledout
    for t in traffic:
        if not (t.latest and t.revision == state.latest_ready):
            continue
        if rolledout != state.latest_ready:
            if t.percent == 100:
                previous, rolledout = rolledout, state.latest_ready
        elif state.latest_ready == state.latest_created and t.percent < 100:
            if by_revision.get(t.revision) == 100 and previous:
                rolledout = previous
    return RolloutState(state.latest_created, state.latest_ready, rolledout, previous)


def reconcile_traffic(
    state: RolloutState, canary_percent: int | None, tag_routing: bool
) -> tuple[RolloutState, tuple[TrafficTarget, ...]]:
    """Alternate :func:`route_traffic` and :func:`propagate_rollout` until nothing changes.

    KServe reaches the same fixed point over successive reconcile loops.
    """
    traffic = route_traffic(state, canary_percent, tag_routing)
    for _ in range(4):
        nxt = propagate_rollout(state, traffic)
        nxt_traffic = route_traffic(nxt, canary_percent, tag_routing)
        if nxt == state and nxt_traffic == traffic:
            break
        state, traffic = nxt, nxt_traffic
    return state, traffic


def revisions_to_keep(state: RolloutState, traffic: Sequence[TrafficTarget]) -> frozenset[str]:
    """Revisions whose processes must stay up: serving traffic, latest, or a rollback target."""
    keep = {t.revision for t in traffic}
    keep.update(
        r
        for r in (state.latest_created, state.latest_ready, state.latest_rolledout, state.previous_rolledout)
        if r
    )
    return frozenset(keep)


def is_image_ref(uri: str) -> bool:
    """Whether ``storageUri`` names a modelcar image rather than a folder."""
    return uri.strip().startswith(("oci://", "oci-layout:"))


def resolve_model_dir(storage_uri: str, base: Path | None = None, pull_cache: Path | None = None) -> Path:
    """Turn ``storageUri`` into a local folder path, pulling a modelcar image into ``pull_cache``.

    Raises:
        LocalSpecError: a remote scheme the local backend cannot read.
    """
    uri = storage_uri.strip()
    if is_image_ref(uri):
        if "@sha256:" not in uri:
            raise LocalSpecError(
                f"spec.predictor.model.storageUri: {storage_uri!r} is not pinned by digest; "
                "use oci://host/repo@sha256:<digest> (what `llmops build-image` prints)"
            )
        digest_hex = uri.rsplit("@sha256:", 1)[1]
        if not re.fullmatch(r"[0-9a-f]{64}", digest_hex):
            raise LocalSpecError(
                f"spec.predictor.model.storageUri: {storage_uri!r} has a malformed digest (sha256: must be "
                "followed by 64 lowercase hex digits); copy the reference `llmops build-image` printed"
            )
        if pull_cache is None:  # validating only: where the pull will land
            return Path(".llmops-models") / digest_hex
        from components.build_image.pull import pull_model

        host = uri.removeprefix("oci://").split("/", 1)[0]
        insecure = host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
        return pull_model(uri, pull_cache, insecure=insecure)
    if uri.startswith("file://"):
        path = Path(uri[len("file://") :])
    elif "://" in uri:
        scheme = uri.split(":", 1)[0]
        raise LocalSpecError(
            f"spec.predictor.model.storageUri: {storage_uri!r} uses {scheme}:, which the local backend "
            "cannot read; point it at a local model folder (a path or file:///path), e.g. the folder "
            "`llmops bootstrap` or the import step wrote, or use the kserve backend"
        )
    else:
        path = Path(uri)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path


@dataclass(frozen=True)
class LaunchSpec:
    """What one revision's model server process is started with."""

    model_dir: Path  # resolved storageUri
    model_version: str  # LLMOPS_MODEL_VERSION, or the revision name when unset
    args: tuple[str, ...]  # spec.predictor.model.args
    env: tuple[tuple[str, str], ...]  # spec.predictor.model.env (literal values)


def launch_spec(predictor: dict[str, Any], revision: str, base: Path | None = None) -> LaunchSpec:
    """Read what the local backend needs from ``spec.predictor``.

    Raises:
        LocalSpecError: the predictor uses something only a cluster can run.
    """
    if predictor.get("containers") or "model" not in predictor:
        raise LocalSpecError(
            "spec.predictor: the local backend runs `model` predictors (modelFormat "
            f"{MODEL_FORMAT!r} with a storageUri); custom containers/images need the kserve backend"
        )
    model = predictor["model"]
    fmt = (model.get("modelFormat") or {}).get("name")
    if fmt != MODEL_FORMAT:
        raise LocalSpecError(
            f"spec.predictor.model.modelFormat.name: {fmt!r} is not served locally; the local backend "
            f"runs the llmops model server, use modelFormat {{name: {MODEL_FORMAT}}}"
        )
    if not model.get("storageUri"):
        raise LocalSpecError("spec.predictor.model.storageUri: required by the local backend (a local model folder)")
    env: list[tuple[str, str]] = []
    for i, item in enumerate(model.get("env") or ()):
        if "value" not in item or item.get("valueFrom"):
            raise LocalSpecError(
                f"spec.predictor.model.env[{i}] ({item.get('name')}): the local backend takes literal "
                "`value`s only (no valueFrom: there are no Secrets or ConfigMaps here)"
            )
        env.append((item["name"], str(item["value"])))
    args = tuple(str(a) for a in model.get("args") or ())
    version = _flag_value(args, "--model_version") or dict(env).get(MODEL_VERSION_ENV) or revision
    return LaunchSpec(
        model_dir=resolve_model_dir(model["storageUri"], base),
        model_version=version,
        args=args,
        env=tuple(env),
    )


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag v`` or ``--flag=v``; the last one wins)."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def check_supported(obj: dict[str, Any]) -> None:
    """Refuse InferenceServices the local backend cannot honour (beyond the CRD schema).

    Raises:
        LocalSpecError: naming the field and what to use instead.
    """
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    if mode is not None:
        try:
            parsed = DeploymentMode.parse(mode)
        except IsvcSpecError as exc:
            raise LocalSpecError(f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]: {exc}") from None
        if parsed is not DeploymentMode.SERVERLESS:
            raise LocalSpecError(
                f"metadata.annotations[{DEPLOYMENT_MODE_ANNOTATION}]: {mode!r}; the local backend "
                "implements Serverless revisions (canaryTrafficPercent, tag routing); set it to "
                "Serverless or use the kserve backend"
            )
    spec = obj.get("spec") or {}
    for comp in ("transformer", "explainer"):
        if spec.get(comp):
            raise LocalSpecError(f"spec.{comp}: not supported by the local backend (predictor only)")
    predictor = spec.get("predictor") or {}
    pct = predictor.get("canaryTrafficPercent")
    # Knative refuses a traffic percent outside 0..100 (serving pkg/apis/serving/v1 TrafficTarget.Validate)
    if pct is not None and (isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100):
        raise LocalSpecError(
            f"spec.predictor.canaryTrafficPercent: {pct!r} is not a whole percent from 0 to 100; "
            "set e.g. 10 for a 10% canary, or remove it to send all traffic to the latest revision"
        )
    launch_spec(predictor, "check")


def _now_iso(clock: Callable[[], float]) -> str:
    return _dt.datetime.fromtimestamp(clock(), tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": type_, "status": status}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def predictor_condition(revisions: dict[str, dict[str, Any]], state: RolloutState) -> dict[str, Any]:
    """``PredictorReady`` from the revisions' states (Knative's ConfigurationsReady).

    True when the latest created revision is ready and every revision taking
    traffic is up; False when one of them failed (the reason carries its exit
    status and last log lines); Unknown while the latest one is starting.
    """
    latest = revisions.get(state.latest_created or "")
    if latest is None:
        return _condition("PredictorReady", "Unknown", "RevisionMissing", "no revision has been created yet")
    if latest["state"] == "Failed":
        return _condition(
            "PredictorReady",
            "False",
            "RevisionFailed",
            f"Revision {state.latest_created!r} failed with message: {latest.get('reason')}",
        )
    if latest["state"] != "Ready":
        return _condition(
            "PredictorReady",
            "Unknown",
            "RevisionMissing",
            f"Configuration is waiting for Revision {state.latest_created!r} to become ready",
        )
    return _condition("PredictorReady", "True")


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _process_alive(pid: int | None, create_time: float | None) -> bool:
    """True when ``pid`` still runs and is the process we started (not a reused PID)."""
    import psutil

    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _tail(path: Path, lines: int = 6, max_bytes: int = 16384) -> str:
    """The last non-empty lines of a log file, joined with `` | ``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def _http_ok(url: str, timeout: float) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- the backend


class LocalBackend(ServingBackend):
    """One-machine control plane with KServe's InferenceService semantics.

    Args:
        state_dir: folder holding state, routes and logs (shared by every
            backend object and process pointed at it).
        server_command: argv prefix that starts a model server; the backend
            appends ``--model_dir --model_name [--model_version] --http_host
            --http_port`` and the predictor's ``args``.
        router_command: argv prefix that starts a router; the backend appends
            ``--routes FILE --host HOST --port PORT``.
        host: loopback address every process binds.
        ready_timeout_s: a revision not ready this long after its start fails.
        probe_timeout_s: timeout of one readiness probe.
        stop_timeout_s: grace period between SIGTERM and SIGKILL.
        clock: wall-clock seconds (injected in tests; shared across processes,
            hence not monotonic).
        restart_backoff_s: delay before restarting a revision that crashed after being
            ready; doubles per crash up to ``max_restart_backoff_s`` (Kubernetes'
            CrashLoopBackOff, shorter), and resets after a minute of being ready.
        max_restart_backoff_s: the cap of that delay.
        supervise: let each service's router reconcile it every ``supervise_interval_s``
            (so crashed revisions restart with nobody calling); off with an injected clock.
        supervise_interval_s: seconds between the router's reconciles.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
        *,
        server_command: Sequence[str] | None = None,
        router_command: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 600.0,
        probe_timeout_s: float = 1.0,
        stop_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        restart_backoff_s: float = 1.0,
        max_restart_backoff_s: float = 30.0,
        supervise: bool | None = None,
        supervise_interval_s: float = 1.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.server_command = list(server_command or [sys.executable, "-m", "serving"])
        self.router_command = list(router_command or [sys.executable, "-m", "serving.backends.router"])
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.clock = clock
        self.restart_backoff_s = restart_backoff_s
        self.max_restart_backoff_s = max_restart_backoff_s
        # The supervisor reconciles on the wall clock: a backend with an injected clock (tests) must not race it.
        self.supervise = (clock is time.time) if supervise is None else supervise
        self.supervise_interval_s = supervise_interval_s
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._lock_fh: Any = None
        self._children: dict[int, subprocess.Popen] = {}  # reaped when seen dead
        try:
            for sub in ("routes", "logs"):
                (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(
                f"local serving state folder {self.state_dir} is not writable ({exc}); "
                "pass another state_dir (llmops serve --state-dir)"
            ) from exc

    # ------------------------------------------------------------------ interface

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        with self._locked() as state:
            record = self._record(state, name, namespace)
            self._reconcile(state, record)
            return copy.deepcopy(record["object"])

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(obj)
        body.pop("status", None)
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        given_rv = meta.get("resourceVersion")
        for server_field in ("resourceVersion", "generation", "uid", "creationTimestamp", "managedFields"):
            meta.pop(server_field, None)
        validate_isvc(body)
        check_supported(body)
        name, namespace = meta["name"], meta["namespace"]
        predictor = body["spec"]["predictor"]
        with self._locked() as state:
            key = _key(name, namespace)
            record = state["services"].get(key)
            if record is None:
                if given_rv:
                    raise NotFound(
                        f"InferenceService {namespace}/{name} does not exist, so resourceVersion "
                        f"{given_rv} cannot match; drop metadata.resourceVersion to create it"
                    )
                record = self._new_record(state, body)
                state["services"][key] = record
                written = True
            else:
                current = record["object"]["metadata"]["resourceVersion"]
                if given_rv and str(given_rv) != current:
                    raise Conflict(
                        f"InferenceService {namespace}/{name} changed: resourceVersion is {current}, "
                        f"the update was based on {given_rv}; read it again and retry"
                    )
                old = record["object"]
                new_meta = dict(meta)
                for kept in ("uid", "creationTimestamp", "generation"):
                    new_meta[kept] = old["metadata"][kept]
                if body["spec"] != old["spec"]:
                    new_meta["generation"] = old["metadata"]["generation"] + 1
                unchanged = body["spec"] == old["spec"] and all(
                    meta.get(k) == old["metadata"].get(k) for k in ("labels", "annotations")
                )
                new_meta["resourceVersion"] = current
                record["object"] = {**body, "metadata": new_meta, "status": old.get("status") or {}}
                written = not unchanged  # a no-op apply writes nothing, as on Kubernetes
                if written:
                    self._bump(state, record)
            self._select_revision(record, predictor)
            self._reconcile(state, record, bumped=written)
            log.info(
                "applied InferenceService %s/%s (generation %s, latest revision %s)",
                namespace,
                name,
                record["object"]["metadata"]["generation"],
                record["rollout"]["latest_created"],
            )
            return copy.deepcopy(record["object"])

    def patch_annotations(
        self, name: str, namespace: str, annotations: dict[str, str | None], resource_version: str
    ) -> dict[str, Any]:
        with self._locked() as state:
            record = self._record(state, name, namespace)
            meta = record["object"]["metadata"]
            if str(resource_version) != meta["resourceVersion"]:
                raise Conflict(
                    f"InferenceService {namespace}/{name} changed: resourceVersion is "
                    f"{meta['resourceVersion']}, the patch was based on {resource_version}; read it again and retry"
                )
            current = dict(meta.get("annotations") or {})
            for k, v in annotations.items():
                if v is None:
                    current.pop(k, None)
                else:
                    current[k] = str(v)
            meta["annotations"] = current
            self._bump(state, record)
            self._reconcile(state, record, bumped=True)
            return copy.deepcopy(record["object"])

    def delete(self, name: str, namespace: str) -> None:
        with self._locked() as state:
            record = state["services"].pop(_key(name, namespace), None)
            if record is None:
                return
            for rev_name, rev in record["revisions"].items():
                if rev.get("pid"):
                    self._stop(rev, f"revision {rev_name}")
            self._stop(record["router"], f"router of {namespace}/{name}")
            with contextlib.suppress(FileNotFoundError):
                self._routes_path(name, namespace).unlink()
            log.info("deleted InferenceService %s/%s and stopped its processes", namespace, name)

    def endpoints(self, name: str, namespace: str) -> Endpoints:
        with self._locked() as state:
            record = self._record(state, name, namespace)
            url = self._router_url(record)
            if _tag_routing(record["object"]):
                return Endpoints(url=url, latest_url=url + TAG_PREFIX + "latest", prev_url=url + TAG_PREFIX + "prev")
            return Endpoints(url=url)

    def revision_urls(self, name: str, namespace: str, revision: str) -> tuple[str, ...]:
        with self._locked() as state:
            record = self._record(state, name, namespace)
            rev = record["revisions"].get(revision)
            if not rev or rev["state"] not in ("Starting", "Ready") or not rev.get("port"):
                return ()
            return (f"http://{self.host}:{rev['port']}",)

    # ------------------------------------------------------------------ supervision

    @classmethod
    def for_supervision(cls, state_dir: str | os.PathLike[str], name: str, namespace: str) -> "LocalBackend":
        """A backend configured as the one that started the service (its settings are in the state)."""
        backend = cls(state_dir, supervise=True)
        with backend._locked() as state:
            conf = dict(backend._record(state, name, namespace).get("supervision") or {})
        for key in ("server_command", "router_command", "host", "ready_timeout_s", "probe_timeout_s",
                    "stop_timeout_s", "restart_backoff_s", "max_restart_backoff_s", "supervise_interval_s"):
            if key in conf:
                setattr(backend, key, conf[key])
        return backend

    def _restart_delay(self, rev: dict[str, Any], now: float) -> float:
        if now - (rev.get("ready_at") or now) > 60.0:
            rev["restarts"] = 0  # it ran fine for a while: start the backoff over
        rev["restarts"] = rev.get("restarts", 0) + 1
        return min(self.restart_backoff_s * 2 ** (rev["restarts"] - 1), self.max_restart_backoff_s)

    # ------------------------------------------------------------------ extras

    def services(self) -> list[tuple[str, str]]:
        """``(namespace, name)`` of every InferenceService in this state folder."""
        with self._locked() as state:
            return sorted(tuple(k.split("/", 1)) for k in state["services"])  # type: ignore[misc]

    def pids(self, name: str, namespace: str) -> dict[str, int]:
        """PIDs of the running processes of one service (``router`` and each revision)."""
        with self._locked() as state:
            record = self._record(state, name, namespace)
            out = {rev: r["pid"] for rev, r in record["revisions"].items() if r.get("pid")}
            if record["router"].get("pid"):
                out["router"] = record["router"]["pid"]
            return out

    def log_path(self, name: str, namespace: str, revision: str) -> Path:
        """Where a revision's server (or, with ``"router"``, the router) writes its output."""
        return self._log_dir(name, namespace) / f"{revision}.log"

    def wait_ready(
        self,
        name: str,
        namespace: str,
        timeout_s: float,
        *,
        poll_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> dict[str, Any]:
        """Poll :meth:`get` until ``Ready`` is True or a condition is False, or the timeout.

        Returns the last object read; the caller inspects its conditions.
        """
        deadline = monotonic() + timeout_s
        while True:
            obj = self.get(name, namespace)
            conds = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True" or conds.get("PredictorReady") == "False":
                return obj
            if monotonic() >= deadline:
                return obj
            sleep(poll_s)

    # ------------------------------------------------------------------ state file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the state lock (reentrant) and yield the state; save it on success."""
        with self._thread_lock:
            outer = self._depth == 0
            if outer:
                try:
                    self._lock_fh = open(self.state_dir / "state.lock", "a+")
                    fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX)
                except OSError as exc:
                    raise BackendUnavailable(f"cannot lock {self.state_dir / 'state.lock'}: {exc}") from exc
                self._state = self._load()
                self._stop_orphans(self._state)
                loaded = json.dumps(self._state, sort_keys=True)
            self._depth += 1
            try:
                yield self._state
                if outer and json.dumps(self._state, sort_keys=True) != loaded:
                    self._save(self._state)
            finally:
                self._depth -= 1
                if outer:
                    fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
                    self._lock_fh.close()
                    self._lock_fh = None
                    self._state = None

    def _load(self) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except FileNotFoundError:
            return {"version": STATE_VERSION, "resourceVersion": 0, "services": {}}
        except (OSError, json.JSONDecodeError) as exc:
            raise BackendUnavailable(
                f"local serving state {path} is unreadable ({exc}); stop the processes it lists "
                "by hand or move the folder away and apply again"
            ) from exc
        return state

    def _save(self, state: dict[str, Any]) -> None:
        _atomic_write_json(self.state_dir / "state.json", state)
        self._prune_spawn_journal(state)

    # Spawn journal: a process is recorded in procs/<pid>.json the moment it starts, before
    # state.json is saved; a controller killed in between leaves an entry that the next lock
    # holder (a rerun, `llmops down`) finds and stops, so no model server is orphaned or duplicated.

    def _journal_dir(self) -> Path:
        return self.state_dir / "procs"

    def _journal(self, proc: subprocess.Popen, argv: list[str]) -> None:
        self._journal_dir().mkdir(parents=True, exist_ok=True)
        _atomic_write_json(self._journal_dir() / f"{proc.pid}.json",
                           {"pid": proc.pid, "create_time": _create_time(proc.pid), "argv": argv})

    def _recorded_pids(self, state: dict[str, Any]) -> set[int]:
        pids = set()
        for record in state.get("services", {}).values():
            pids.update(r["pid"] for r in record.get("revisions", {}).values() if r.get("pid"))
            if record.get("router", {}).get("pid"):
                pids.add(record["router"]["pid"])
        return pids

    def _journal_entries(self) -> list[tuple[Path, dict[str, Any]]]:
        out = []
        for path in sorted(self._journal_dir().glob("*.json")) if self._journal_dir().is_dir() else ():
            try:
                out.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                out.append((path, {}))
        return out

    def _prune_spawn_journal(self, state: dict[str, Any]) -> None:
        recorded = self._recorded_pids(state)
        for path, entry in self._journal_entries():
            if entry.get("pid") in recorded or not _process_alive(entry.get("pid"), entry.get("create_time")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _stop_orphans(self, state: dict[str, Any]) -> None:
        """Stop processes started by a holder that died before saving state.json (under the lock)."""
        recorded = self._recorded_pids(state)
        for path, entry in self._journal_entries():
            pid = entry.get("pid")
            if pid in recorded or pid in self._children:
                continue
            if _process_alive(pid, entry.get("create_time")):
                log.warning("stopping orphaned process %s (started but never recorded): %s", pid,
                            shlex.join(entry.get("argv") or []))
                self._stop({"pid": pid, "create_time": entry.get("create_time")}, f"orphaned process {pid}")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _bump(self, state: dict[str, Any], record: dict[str, Any]) -> None:
        state["resourceVersion"] += 1
        record["object"]["metadata"]["resourceVersion"] = str(state["resourceVersion"])

    def _record(self, state: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
        record = state["services"].get(_key(name, namespace))
        if record is None:
            raise NotFound(f"InferenceService {namespace}/{name} not found in local serving state {self.state_dir}")
        return record

    def _new_record(self, state: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now_iso(self.clock)
        meta["generation"] = 1
        record = {
            "object": {**body, "status": {}},
            "revisions": {},
            "counter": 0,
            "rollout": {"latest_created": None, "latest_ready": None, "latest_rolledout": None, "previous_rolledout": None},
            "traffic": [],
            "router": {"port": free_port(self.host), "pid": None, "create_time": None, "state": "Stopped"},
        }
        self._bump(state, record)
        return record

    # ------------------------------------------------------------------ reconcile

    def _select_revision(self, record: dict[str, Any], predictor: dict[str, Any]) -> None:
        """Point ``latest_created`` at the revision for this predictor, creating it if new."""
        template = predictor_template(predictor)
        rollout = record["rollout"]
        latest = record["revisions"].get(rollout["latest_created"] or "")
        if latest is not None and same_template(latest["template"], template):
            if latest["state"] == "Failed" and latest.get("restart_at") is not None:  # crashed: re-apply restarts it
                self._start_revision(record, rollout["latest_created"])
            return
        name = record["object"]["metadata"]["name"]
        namespace = record["object"]["metadata"]["namespace"]
        for rev_name, rev in sorted(record["revisions"].items(), key=lambda kv: -kv[1]["number"]):
            if same_template(rev["template"], template):
                log.info("%s/%s: spec matches existing revision %s; reusing it", namespace, name, rev_name)
                rollout["latest_created"] = rev_name
                if rev["state"] in ("Stopped", "Failed"):
                    self._start_revision(record, rev_name)
                return
        record["counter"] += 1
        rev_name = revision_name(name, record["counter"])
        spec = launch_spec(template, rev_name)
        record["revisions"][rev_name] = {
            "number": record["counter"],
            "template": template,
            "model_dir": str(spec.model_dir),
            "model_version": spec.model_version,
            "state": "Stopped",
            "pid": None,
            "create_time": None,
            "port": None,
            "reason": None,
            "created_at": self.clock(),
        }
        rollout["latest_created"] = rev_name
        self._start_revision(record, rev_name)

    def _start_revision(self, record: dict[str, Any], rev_name: str) -> None:
        rev = record["revisions"][rev_name]
        meta = record["object"]["metadata"]
        spec = launch_spec(rev["template"], rev_name, base=None)
        spec = LaunchSpec(Path(rev["model_dir"]), spec.model_version, spec.args, spec.env)
        logs = self._log_dir(meta["name"], meta["namespace"])
        log_file, exit_file = logs / f"{rev_name}.log", logs / f"{rev_name}.exit"
        with contextlib.suppress(FileNotFoundError):
            exit_file.unlink()
        rev.update(state="Starting", reason=None, started_at=self.clock(), pid=None, port=None, restart_at=None)
        uri = rev["template"]["model"]["storageUri"]
        if is_image_ref(uri):
            from components.build_image.errors import ImageBuildError

            try:
                pulled = resolve_model_dir(uri, pull_cache=self.state_dir / "models")
            except (ImageBuildError, ValueError) as exc:
                rev.update(state="Failed", reason=f"storageUri {uri!r}: pulling the modelcar failed: {exc}")
                log.warning("revision %s failed: %s", rev_name, rev["reason"])
                return
            rev["model_dir"] = str(pulled)
            spec = LaunchSpec(pulled, spec.model_version, spec.args, spec.env)
        if not spec.model_dir.is_dir():
            rev.update(
                state="Failed",
                reason=f"storageUri {rev['template']['model']['storageUri']!r}: model folder {spec.model_dir} "
                "does not exist",
            )
            log.warning("revision %s failed: %s", rev_name, rev["reason"])
            return
        port = free_port(self.host)
        argv = [*self.server_command, "--model_dir", str(spec.model_dir), "--model_name", meta["name"]]
        if _flag_value(spec.args, "--model_version") is None:
            argv += ["--model_version", spec.model_version]
        argv += ["--http_host", self.host, "--http_port", str(port), *spec.args]
        env = {**os.environ, **dict(spec.env), "LLMOPS_REVISION": rev_name}
        env.setdefault("LLMOPS_TORCH_THREADS", "1")  # revisions share this machine: not one thread per core each
        proc = self._spawn(argv, log_file, exit_file, env)
        rev.update(pid=proc.pid, create_time=_create_time(proc.pid), port=port, argv=argv)
        log.info("started revision %s (pid %d, port %d): %s", rev_name, proc.pid, port, shlex.join(argv))

    def _spawn(self, argv: list[str], log_file: Path, exit_file: Path | None, env: dict[str, str]) -> subprocess.Popen:
        """Start a detached process group; a launcher shell records the exit status."""
        if exit_file is not None:
            # "$0" is the exit file; the shell stays as parent to write the status.
            argv = ["/bin/sh", "-c", '"$@"; echo $? > "$0"', str(exit_file), *argv]
        try:
            with open(log_file, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise BackendUnavailable(f"cannot start {shlex.join(argv)}: {exc}") from exc
        self._children[proc.pid] = proc
        self._journal(proc, argv)
        kill_point("local.spawned")  # crash-resume tests: killed before state.json records the process
        return proc

    def _stop(self, proc_record: dict[str, Any], what: str) -> None:
        """SIGTERM a process group, wait for it, then SIGKILL what is left."""
        import psutil

        pid = proc_record.get("pid")
        if pid and _process_alive(pid, proc_record.get("create_time")):
            try:
                leader = psutil.Process(pid)
                procs = [leader, *leader.children(recursive=True)]
            except psutil.Error:
                procs = []
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            _, alive = psutil.wait_procs(procs, timeout=self.stop_timeout_s)
            if alive:
                log.warning("%s did not stop within %.0fs; killing it", what, self.stop_timeout_s)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                psutil.wait_procs(alive, timeout=5)
            log.info("stopped %s (pid %d)", what, pid)
        child = self._children.pop(pid, None) if pid else None
        if child is not None:
            child.poll()
        proc_record.update(pid=None, create_time=None, state="Stopped")

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                self._children.pop(pid, None)

    def _reconcile(self, state: dict[str, Any], record: dict[str, Any], bumped: bool = False) -> None:
        """Bring one service's processes, traffic and status up to date.

        A status change bumps ``resourceVersion`` unless this write already did (``bumped``).
        """
        self._reap()
        obj = record["object"]
        meta = obj["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        now = self.clock()
        for rev_name, rev in record["revisions"].items():
            self._observe_revision(name, namespace, rev_name, rev, now)
        ro = record["rollout"]
        if ro["latest_created"] and record["revisions"][ro["latest_created"]]["state"] == "Ready":
            ro["latest_ready"] = ro["latest_created"]
        canary = obj["spec"]["predictor"].get("canaryTrafficPercent")
        new_state, traffic = reconcile_traffic(RolloutState(**ro), canary, _tag_routing(obj))
        record["rollout"] = ro = {
            "latest_created": new_state.latest_created,
            "latest_ready": new_state.latest_ready,
            "latest_rolledout": new_state.latest_rolledout,
            "previous_rolledout": new_state.previous_rolledout,
        }
        keep = revisions_to_keep(new_state, traffic)
        for rev_name, rev in record["revisions"].items():
            if rev_name not in keep and rev["state"] in ("Starting", "Ready"):
                self._stop(rev, f"revision {rev_name} (no longer serving or a rollback target)")
            elif rev_name in keep and rev["state"] == "Stopped":
                self._start_revision(record, rev_name)
            elif rev_name in keep and rev["state"] == "Failed" and (rev.get("restart_at") or now + 1) <= now:
                log.info("restarting revision %s (restart %d)", rev_name, rev.get("restarts", 0))
                self._start_revision(record, rev_name)
        self._ensure_router(record, now)
        router_url = self._router_url(record)
        record["traffic"] = [
            {"revision": t.revision, "percent": t.percent, "latest": t.latest, "tag": t.tag} for t in traffic
        ]
        self._write_routes(record, traffic)
        status = self._status(record, traffic, router_url, new_state)
        old_status = obj.get("status") or {}
        status["conditions"] = _keep_transition_times(old_status.get("conditions") or [], status["conditions"], now)
        if status != old_status:
            obj["status"] = status
            if not bumped:
                self._bump(state, record)

    def _observe_revision(self, name: str, namespace: str, rev_name: str, rev: dict[str, Any], now: float) -> None:
        if rev["state"] not in ("Starting", "Ready"):
            return
        if not _process_alive(rev.get("pid"), rev.get("create_time")):
            exit_file = self._log_dir(name, namespace) / f"{rev_name}.exit"
            try:
                code = exit_file.read_text().strip()
                how = f"exited with code {code}"
            except OSError:
                how = "was terminated by a signal"
            tail = _tail(self._log_dir(name, namespace) / f"{rev_name}.log")
            where = "before becoming ready" if rev["state"] == "Starting" else "after being ready"
            reason = f"model server {how} {where}"
            restart_at = None
            if rev["state"] == "Ready" or rev.get("restarts"):  # it served once: supervise it (restart with backoff)
                delay = self._restart_delay(rev, now)
                restart_at = now + delay
                reason += f"; restarting in {delay:g}s (restart {rev['restarts']})"
            if tail:
                reason += f"; last output: {tail}"
            child = self._children.pop(rev.get("pid") or -1, None)
            if child is not None:
                child.poll()  # reap it
            rev.update(state="Failed", reason=reason, pid=None, create_time=None, restart_at=restart_at)
            log.warning("revision %s failed: %s", rev_name, reason)
            return
        if rev["state"] == "Starting":
            if _http_ok(f"http://{self.host}:{rev['port']}{READY_PATH}", self.probe_timeout_s):
                rev.update(state="Ready", ready_at=now)
                log.info("revision %s is ready on port %d", rev_name, rev["port"])
            elif now - rev.get("started_at", now) > self.ready_timeout_s:
                tail = _tail(self._log_dir(name, namespace) / f"{rev_name}.log")
                self._stop(rev, f"revision {rev_name}")
                reason = f"model server not ready within {self.ready_timeout_s:.0f}s"
                if tail:
                    reason += f"; last output: {tail}"
                rev.update(state="Failed", reason=reason)
                log.warning("revision %s failed: %s", rev_name, reason)

    def _ensure_router(self, record: dict[str, Any], now: float) -> None:
        router = record["router"]
        meta = record["object"]["metadata"]
        if router.get("pid") and _process_alive(router["pid"], router.get("create_time")):
            if router["state"] != "Ready" and _http_ok(self._router_url(record) + ROUTER_HEALTH_PATH, self.probe_timeout_s):
                router["state"] = "Ready"
            return
        if router.get("pid"):
            log.warning("router of %s/%s (pid %s) is gone; restarting it", meta["namespace"], meta["name"], router["pid"])
        routes = self._routes_path(meta["name"], meta["namespace"])
        if not routes.exists():
            _atomic_write_json(routes, {"name": meta["name"], "namespace": meta["namespace"], "targets": []})
        argv = [*self.router_command, "--routes", str(routes), "--host", self.host, "--port", str(router["port"])]
        if self.supervise:
            record["supervision"] = {
                "server_command": self.server_command, "router_command": self.router_command, "host": self.host,
                "ready_timeout_s": self.ready_timeout_s, "probe_timeout_s": self.probe_timeout_s,
                "stop_timeout_s": self.stop_timeout_s, "restart_backoff_s": self.restart_backoff_s,
                "max_restart_backoff_s": self.max_restart_backoff_s, "supervise_interval_s": self.supervise_interval_s,
            }  # fmt: skip
            argv += ["--state-dir", str(self.state_dir), "--service", f"{meta['namespace']}/{meta['name']}",
                     "--supervise-interval-s", str(self.supervise_interval_s)]  # fmt: skip
        log_file = self._log_dir(meta["name"], meta["namespace"]) / "router.log"
        proc = self._spawn(argv, log_file, None, dict(os.environ))
        router.update(pid=proc.pid, create_time=_create_time(proc.pid), state="Starting", started_at=now)
        log.info("started router of %s/%s on %s (pid %d)", meta["namespace"], meta["name"], self._router_url(record), proc.pid)

    def _write_routes(self, record: dict[str, Any], traffic: Sequence[TrafficTarget]) -> None:
        meta = record["object"]["metadata"]
        targets = []
        for t in traffic:
            rev = record["revisions"].get(t.revision) or {}
            # Only a ready revision gets traffic: a crashed or restarting one sits out, its share goes to the others.
            url = f"http://{self.host}:{rev['port']}" if rev.get("port") and rev.get("state") == "Ready" else None
            targets.append(
                {
                    "revision": t.revision,
                    "percent": t.percent,
                    "tag": t.tag,
                    "url": url,
                    "model_version": rev.get("model_version"),
                }
            )
        table = {"name": meta["name"], "namespace": meta["namespace"], "targets": targets}
        path = self._routes_path(meta["name"], meta["namespace"])
        try:
            if json.loads(path.read_text()) == table:
                return
        except (OSError, ValueError):
            pass
        _atomic_write_json(path, table)

    def _status(
        self, record: dict[str, Any], traffic: Sequence[TrafficTarget], router_url: str, ro: RolloutState
    ) -> dict[str, Any]:
        obj = record["object"]
        revisions = record["revisions"]
        pred_cond = predictor_condition(revisions, ro)
        failing = [
            t.revision
            for t in traffic
            if t.percent > 0 and revisions.get(t.revision, {}).get("state") == "Failed"
        ]
        if pred_cond["status"] == "True" and failing:
            rev = failing[0]
            pred_cond = _condition(
                "PredictorReady", "False", "RevisionFailed",
                f"Revision {rev!r} failed with message: {revisions[rev].get('reason')}",
            )
        router = record["router"]
        if router.get("state") == "Ready":
            ingress = _condition("IngressReady", "True")
        else:
            ingress = _condition("IngressReady", "Unknown", "RouterStarting", f"router on {router_url} is starting")
        if pred_cond["status"] == "True" and ingress["status"] == "True":
            ready = _condition("Ready", "True")
        elif pred_cond["status"] == "False":
            ready = _condition("Ready", "False", pred_cond.get("reason"), pred_cond.get("message"))
        else:
            blocker = pred_cond if pred_cond["status"] != "True" else ingress
            ready = _condition("Ready", "Unknown", blocker.get("reason"), blocker.get("message"))
        entries = []
        for t in traffic:
            entry: dict[str, Any] = {"revisionName": t.revision, "percent": t.percent, "latestRevision": t.latest}
            if t.tag:
                entry["tag"] = t.tag
                entry["url"] = router_url + TAG_PREFIX + t.tag
            entries.append(entry)
        predictor: dict[str, Any] = {"url": router_url, "address": {"url": router_url}, "traffic": entries}
        for key, field in (
            ("latestCreatedRevision", ro.latest_created),
            ("latestReadyRevision", ro.latest_ready),
            ("latestRolledoutRevision", ro.latest_rolledout),
            ("previousRolledoutRevision", ro.previous_rolledout),
        ):
            if field:
                predictor[key] = field
        latest = revisions.get(ro.latest_created or "", {})
        model_state = {"Ready": "Loaded", "Failed": "FailedToLoad"}.get(latest.get("state"), "Pending")
        transition = (
            "UpToDate" if model_state == "Loaded" else "BlockedByFailedLoad" if model_state == "FailedToLoad" else "InProgress"
        )
        model_status: dict[str, Any] = {
            "states": {"activeModelState": "Loaded" if ro.latest_ready else "Pending", "targetModelState": model_state},
            "transitionStatus": transition,
        }
        if model_state == "FailedToLoad":
            model_status["lastFailureInfo"] = {"reason": "ModelLoadFailed", "message": latest.get("reason") or ""}
        return {
            "url": router_url,
            "address": {"url": router_url},
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [ingress, pred_cond, ready],
            "components": {"predictor": predictor},
            "modelStatus": model_status,
        }

    # ------------------------------------------------------------------ paths

    def _log_dir(self, name: str, namespace: str) -> Path:
        path = self.state_dir / "logs" / f"{namespace}.{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _routes_path(self, name: str, namespace: str) -> Path:
        return self.state_dir / "routes" / f"{namespace}.{name}.json"

    def _router_url(self, record: dict[str, Any]) -> str:
        return f"http://{self.host}:{record['router']['port']}"


def _key(name: str, namespace: str) -> str:
    return f"{namespace}/{name}"


def _tag_routing(obj: dict[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(TAG_ROUTING_ANNOTATION, "")).lower() == "true"


def _keep_transition_times(
    old: Sequence[dict[str, Any]], new: list[dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """Carry ``lastTransitionTime`` over for conditions whose status did not change."""
    previous = {c["type"]: c for c in old}
    stamp = _dt.datetime.fromtimestamp(now, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for cond in new:
        before = previous.get(cond["type"])
        same = before is not None and before.get("status") == cond["status"]
        out.append({**cond, "lastTransitionTime": before["lastTransitionTime"] if same else stamp})
    return out


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
