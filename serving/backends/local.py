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
  a spec equal to an older revision's still gets a new one, as Knative does (a rollback starts cold).
* Traffic and rolled-out bookkeeping follow KServe's ksvc reconciler and
  ``PropagateStatus`` (:func:`~serving.backends.local_traffic.route_traffic`,
  :func:`~serving.backends.local_traffic.propagate_rollout`).
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

This module is the backend itself (the interface, reconcile and status); its parts::

    local_traffic.py   Knative's traffic and revision bookkeeping, pure (RevisionBookkeeping, reconcile_traffic)
    local_launch.py    what a revision runs: check_supported, launch_spec, the server's argv and env
    local_process.py   free ports, liveness, log tails; Processes: spawn, stop, reap and the spawn journal
    local_store.py     StateStore: state.json under the flock

Errors::

    BackendError                      (serving.backends.base)
    ├── BackendUnavailable            the state folder or a launcher is unusable
    ├── NotFound
    ├── Conflict                      stale metadata.resourceVersion
    └── LocalSpecError (ValueError)   valid for KServe but not runnable locally (says what to use;
                                      serving.backends.local_launch)

Objects that fail KServe's CRD schema raise :class:`serving.isvc.IsvcSchemaError`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from serving.backends.base import (
    BackendUnavailable,
    Conflict,
    Endpoints,
    NotFound,
    ServingBackend,
    TrafficTarget,
)
from serving.backends.local_launch import (
    LaunchSpec,
    check_supported,
    is_image_ref,
    launch_spec,
    resolve_model_dir,
    server_argv,
    server_env,
)
from serving.backends.local_process import Processes, free_port, http_ok, log_tail, process_alive, process_create_time
from serving.backends.local_store import StateStore, atomic_write_json, recorded_pids
from serving.backends.local_traffic import (
    RevisionBookkeeping,
    RevisionGC,
    condition,
    keep_transition_times,
    now_iso,
    predictor_condition,
    predictor_template,
    reconcile_traffic,
    revision_name,
    revisions_to_collect,
    revisions_to_keep,
    same_template,
    tag_routing_enabled,
)
from serving.isvc import validate_isvc
from serving.backends.router import TAG_PREFIX

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".llmops") / "serving"
ROUTER_HEALTH_PATH = "/_router/health"
READY_PATH = "/v2/health/ready"


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
        revision_gc: RevisionGC = RevisionGC(),
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
        self.revision_gc = revision_gc
        self._procs = Processes(self.state_dir / "procs")
        self._store = StateStore(self.state_dir, after_load=self._stop_orphans, after_save=self._prune_spawn_journal)
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
        with self._store.locked() as state:
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
        self._prefetch(((predictor.get("model") or {}).get("storageUri")) or "")
        with self._store.locked() as state:
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

    def _prefetch(self, storage_uri: str) -> None:
        """Pull a modelcar into the cache before the state lock is taken.

        A multi-gigabyte pull under the lock would stall every other call on this state folder (status,
        another service's apply, the router's supervisor). Inside the lock the revision start then finds
        the pulled folder complete in the cache. A failed pull is left to that start, which marks the
        revision Failed with the reason, as before.
        """
        if not is_image_ref(storage_uri):
            return
        from oci_images.errors import ImageBuildError

        try:
            resolve_model_dir(storage_uri, pull_cache=self.state_dir / "models")
        except (ImageBuildError, ValueError, OSError) as exc:
            log.debug("modelcar %s not prefetched: %s", storage_uri, exc)

    def patch_annotations(
        self, name: str, namespace: str, annotations: dict[str, str | None], resource_version: str
    ) -> dict[str, Any]:
        with self._store.locked() as state:
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
        with self._store.locked() as state:
            record = state["services"].pop(_key(name, namespace), None)
            if record is None:
                return
            for rev_name, rev in record["revisions"].items():
                if rev.get("pid"):
                    self._procs.stop(rev, f"revision {rev_name}", self.stop_timeout_s)
            self._procs.stop(record["router"], f"router of {namespace}/{name}", self.stop_timeout_s)
            with contextlib.suppress(FileNotFoundError):
                self._routes_path(name, namespace).unlink()
            log.info("deleted InferenceService %s/%s and stopped its processes", namespace, name)

    def endpoints(self, name: str, namespace: str) -> Endpoints:
        with self._store.locked() as state:
            record = self._record(state, name, namespace)
            url = self._router_url(record)
            if tag_routing_enabled(record["object"]):
                return Endpoints(url=url, latest_url=url + TAG_PREFIX + "latest", prev_url=url + TAG_PREFIX + "prev")
            return Endpoints(url=url)

    def revision_urls(self, name: str, namespace: str, revision: str) -> tuple[str, ...]:
        with self._store.locked() as state:
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
        with backend._store.locked() as state:
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
        with self._store.locked() as state:
            return sorted(tuple(k.split("/", 1)) for k in state["services"])  # type: ignore[misc]

    def pids(self, name: str, namespace: str) -> dict[str, int]:
        """PIDs of the running processes of one service (``router`` and each revision)."""
        with self._store.locked() as state:
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

    # ------------------------------------------------------------------ state

    def _stop_orphans(self, state: dict[str, Any]) -> None:
        self._procs.stop_orphans(recorded_pids(state), self.stop_timeout_s)

    def _prune_spawn_journal(self, state: dict[str, Any]) -> None:
        self._procs.prune_journal(recorded_pids(state))

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
        meta["creationTimestamp"] = now_iso(self.clock)
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
        # A template that differs from the newest revision's is a new Configuration generation, and Knative stamps a
        # new Revision for every generation, even one equal to an older revision's template (knative/serving
        # pkg/reconciler/configuration/configuration.go, ReconcileKind -> latestCreatedRevision looks the revision up
        # by the configurationGeneration label and createRevision makes one when none has it). So restoring an older
        # spec on rollback starts a fresh, cold revision here too, as it does on a cluster.
        name = record["object"]["metadata"]["name"]
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
            from oci_images.errors import ImageBuildError

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
        argv = server_argv(self.server_command, spec, meta["name"], self.host, port)
        proc = self._procs.spawn(argv, log_file, exit_file, server_env(spec, rev_name))
        rev.update(pid=proc.pid, create_time=process_create_time(proc.pid), port=port, argv=argv)
        log.info("started revision %s (pid %d, port %d): %s", rev_name, proc.pid, port, shlex.join(argv))

    def _reconcile(self, state: dict[str, Any], record: dict[str, Any], bumped: bool = False) -> None:
        """Bring one service's processes, traffic and status up to date.

        A status change bumps ``resourceVersion`` unless this write already did (``bumped``).
        """
        self._procs.reap()
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
        new_state, traffic = reconcile_traffic(RevisionBookkeeping(**ro), canary, tag_routing_enabled(obj))
        record["rollout"] = ro = {
            "latest_created": new_state.latest_created,
            "latest_ready": new_state.latest_ready,
            "latest_rolledout": new_state.latest_rolledout,
            "previous_rolledout": new_state.previous_rolledout,
        }
        keep = revisions_to_keep(new_state, traffic)
        for rev_name, rev in record["revisions"].items():
            if rev_name not in keep and rev["state"] in ("Starting", "Ready"):
                self._procs.stop(rev, f"revision {rev_name} (no longer serving or a rollback target)", self.stop_timeout_s)
            elif rev_name in keep and rev["state"] == "Stopped":
                self._start_revision(record, rev_name)
            elif rev_name in keep and rev["state"] == "Failed" and (rev.get("restart_at") or now + 1) <= now:
                log.info("restarting revision %s (restart %d)", rev_name, rev.get("restarts", 0))
                self._start_revision(record, rev_name)
            if rev_name in keep:
                rev.pop("inactive_since", None)
            elif rev.get("inactive_since") is None:
                rev["inactive_since"] = now  # Knative's routingStateModified: it went to "reserve" now
        self._collect_revisions(record, keep, now)
        self._ensure_router(record, now)
        router_url = self._router_url(record)
        record["traffic"] = [
            {"revision": t.revision, "percent": t.percent, "latest": t.latest, "tag": t.tag} for t in traffic
        ]
        self._write_routes(record, traffic)
        status = self._status(record, traffic, router_url, new_state)
        old_status = obj.get("status") or {}
        status["conditions"] = keep_transition_times(old_status.get("conditions") or [], status["conditions"], now)
        if status != old_status:
            obj["status"] = status
            if not bumped:
                self._bump(state, record)

    def _collect_revisions(self, record: dict[str, Any], keep: frozenset[str], now: float) -> None:
        """Knative's revision GC (:func:`revisions_to_collect`): drop stopped revisions, their logs with them."""
        revisions = record["revisions"]
        active = keep | frozenset(n for n, r in revisions.items() if r["state"] in ("Starting", "Ready"))
        gone = revisions_to_collect(revisions, active, now, self.revision_gc)
        if not gone:
            return
        meta = record["object"]["metadata"]
        logs = self._log_dir(meta["name"], meta["namespace"])
        for rev_name in gone:
            del revisions[rev_name]
            for suffix in (".log", ".exit"):
                with contextlib.suppress(FileNotFoundError):
                    (logs / f"{rev_name}{suffix}").unlink()
        log.info("%s/%s: revision GC deleted %d non-active revision(s): %s", meta["namespace"], meta["name"],
                 len(gone), ", ".join(gone))

    def _observe_revision(self, name: str, namespace: str, rev_name: str, rev: dict[str, Any], now: float) -> None:
        if rev["state"] not in ("Starting", "Ready"):
            return
        if not process_alive(rev.get("pid"), rev.get("create_time")):
            exit_file = self._log_dir(name, namespace) / f"{rev_name}.exit"
            try:
                code = exit_file.read_text().strip()
                how = f"exited with code {code}"
            except OSError:
                how = "was terminated by a signal"
            tail = log_tail(self._log_dir(name, namespace) / f"{rev_name}.log")
            where = "before becoming ready" if rev["state"] == "Starting" else "after being ready"
            reason = f"model server {how} {where}"
            restart_at = None
            if rev["state"] == "Ready" or rev.get("restarts"):  # it served once: supervise it (restart with backoff)
                delay = self._restart_delay(rev, now)
                restart_at = now + delay
                reason += f"; restarting in {delay:g}s (restart {rev['restarts']})"
            if tail:
                reason += f"; last output: {tail}"
            self._procs.forget(rev.get("pid") or -1)  # reap it
            rev.update(state="Failed", reason=reason, pid=None, create_time=None, restart_at=restart_at)
            log.warning("revision %s failed: %s", rev_name, reason)
            return
        if rev["state"] == "Starting":
            if http_ok(f"http://{self.host}:{rev['port']}{READY_PATH}", self.probe_timeout_s):
                rev.update(state="Ready", ready_at=now)
                log.info("revision %s is ready on port %d", rev_name, rev["port"])
            elif now - rev.get("started_at", now) > self.ready_timeout_s:
                tail = log_tail(self._log_dir(name, namespace) / f"{rev_name}.log")
                self._procs.stop(rev, f"revision {rev_name}", self.stop_timeout_s)
                reason = f"model server not ready within {self.ready_timeout_s:.0f}s"
                if tail:
                    reason += f"; last output: {tail}"
                rev.update(state="Failed", reason=reason)
                log.warning("revision %s failed: %s", rev_name, reason)

    def _ensure_router(self, record: dict[str, Any], now: float) -> None:
        router = record["router"]
        meta = record["object"]["metadata"]
        if router.get("pid") and process_alive(router["pid"], router.get("create_time")):
            if router["state"] != "Ready" and http_ok(self._router_url(record) + ROUTER_HEALTH_PATH, self.probe_timeout_s):
                router["state"] = "Ready"
            return
        if router.get("pid"):
            log.warning("router of %s/%s (pid %s) is gone; restarting it", meta["namespace"], meta["name"], router["pid"])
        routes = self._routes_path(meta["name"], meta["namespace"])
        if not routes.exists():
            atomic_write_json(routes, {"name": meta["name"], "namespace": meta["namespace"], "targets": []})
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
        proc = self._procs.spawn(argv, log_file, None, dict(os.environ))
        router.update(pid=proc.pid, create_time=process_create_time(proc.pid), state="Starting", started_at=now)
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
        atomic_write_json(path, table)

    def _status(
        self, record: dict[str, Any], traffic: Sequence[TrafficTarget], router_url: str, ro: RevisionBookkeeping
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
            pred_cond = condition(
                "PredictorReady", "False", "RevisionFailed",
                f"Revision {rev!r} failed with message: {revisions[rev].get('reason')}",
            )
        router = record["router"]
        if router.get("state") == "Ready":
            ingress = condition("IngressReady", "True")
        else:
            ingress = condition("IngressReady", "Unknown", "RouterStarting", f"router on {router_url} is starting")
        if pred_cond["status"] == "True" and ingress["status"] == "True":
            ready = condition("Ready", "True")
        elif pred_cond["status"] == "False":
            ready = condition("Ready", "False", pred_cond.get("reason"), pred_cond.get("message"))
        else:
            blocker = pred_cond if pred_cond["status"] != "True" else ingress
            ready = condition("Ready", "Unknown", blocker.get("reason"), blocker.get("message"))
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
