"""A Kubernetes API for tests: kmock's emulator over real HTTP, serving InferenceServices.

No kube-apiserver can run here, so the ``kserve`` backend is tested against
:class:`KubeEmulator`, a :class:`kmock.KubernetesEmulator` that answers the
``serving.kserve.io/v1beta1`` ``inferenceservices`` resource (and core ``events``)
with API-server semantics the backend relies on:

* ``resourceVersion`` on every write; a PUT (or a merge patch carrying
  ``metadata.resourceVersion``) with a stale one is answered 409 Conflict;
* ``metadata.generation`` bumps on spec changes; PUT replaces, PATCH is an
  RFC 7386 JSON merge patch (what the official client sends for custom objects);
* every written object is validated against KServe's CRD (422 Invalid otherwise);
* every call is recorded as ``(verb, resource)`` in :attr:`KubeEmulator.calls`
  (verbs as RBAC names them: get, list, watch, create, update, patch, delete),
  so an RBAC test can check them against a Role.

For the cluster-in-a-box test it also behaves like a cluster's API server towards
pods and controllers:

* TLS (``tls=True``): a generated CA signs the server certificate, so the official
  client's in-cluster path (``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``,
  ``ca.crt``, bearer ``token``) works against it (:meth:`KubeEmulator.service_account_files`);
* identities: :meth:`KubeEmulator.issue_token` mints a token for a service account;
  requests are attributed to ``system:serviceaccount:<ns>:<name>`` (no/unknown token:
  the test itself, ``system:admin``, unless ``require_auth`` answers 401);
* RBAC: :meth:`KubeEmulator.bind_kit_rbac` loads the kit's Roles and RoleBindings and
  every call of a bound account that no rule grants is answered 403 Forbidden, as the
  API server's RBAC authorizer does;
* a request log (:attr:`KubeEmulator.log`): who, the call as RBAC names it
  (:class:`serving.cluster.rbac.ApiCall`) and the HTTP status answered;
* core ``secrets``, ``serviceaccounts`` and ``configmaps`` (``stringData`` folded into
  base64 ``data`` as the API server does);
* an external controller (``auto_reconcile=False``) writes status with
  :meth:`KubeEmulator.set_status`; :meth:`KubeEmulator.wait_change` wakes it on writes.

:class:`KServeStandIn` plays KServe's controller: after each write it fills
``status`` the way KServe does — Serverless: revisions, ``traffic`` (with
``latest``/``prev`` tags), ``latestCreated/Ready/RolledoutRevision``,
``previousRolledoutRevision`` and conditions; Standard: ``canaryStatuses`` for
``spec.canary[]``. Tests make a model version fail to become ready with
:meth:`KServeStandIn.fail_version`.

Usage::

    with KubeEmulator(namespace="models") as kube:
        api = kubernetes.client.ApiClient(kube.client_configuration())
        ...
        assert ("patch", "inferenceservices") in kube.calls
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import hashlib
import json
import secrets as _secrets
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ANNOTATION = "serving.kserve.io/enable-tag-routing"
VERSION_ENV = "LLMOPS_MODEL_VERSION"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def predictor_version(pred: dict) -> str:
    for section in [pred.get("model") or {}] + list(pred.get("containers") or []):
        for env in section.get("env") or ():
            if env.get("name") == VERSION_ENV:
                return str(env.get("value"))
    return ""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class KServeStandIn:
    """Computes ``status`` from ``spec`` like KServe's controller (test-side stand-in).

    Revisions are named ``{name}-predictor-{n:05d}``; a new one is created whenever
    the predictor template (the spec without ``canaryTrafficPercent``) changes.
    """

    def __init__(self, domain: str = "example.com") -> None:
        self.domain = domain
        self._failing: dict[str, str] = {}  # model version -> reason
        self._pending: set[str] = set()  # model versions that stay not-ready (no failure yet)
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self.revision_versions: dict[str, str] = {}  # revision name -> model version it serves

    def fail_version(self, version: str, reason: str = "container exited with code 1: model failed to load") -> None:
        """Revisions serving ``version`` never become ready; the condition says ``reason``."""
        self._failing[version] = reason

    def hold_version(self, version: str) -> None:
        """Revisions serving ``version`` stay not-ready (still starting) until :meth:`release_version`."""
        self._pending.add(version)

    def release_version(self, version: str) -> None:
        self._pending.discard(version)
        self._failing.pop(version, None)

    def revisions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return list(self._services.get((namespace, name), {}).get("revisions", []))

    def forget(self, namespace: str, name: str) -> None:
        self._services.pop((namespace, name), None)

    def _ready(self, version: str) -> tuple[bool, str | None]:
        if version in self._failing:
            return False, self._failing[version]
        if version in self._pending:
            return False, "revision is starting: 0/1 replicas available"
        return True, None

    def reconcile(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The ``status`` KServe would report for ``obj`` (and remember revisions)."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        key = (meta.get("namespace", "default"), meta["name"])
        svc = self._services.setdefault(key, {"revisions": [], "rolledout": None, "previous": None})
        mode = (meta.get("annotations") or {}).get(MODE_ANNOTATION, "Serverless")
        if mode in ("Standard", "RawDeployment"):
            return self._reconcile_standard(obj, svc)
        return self._reconcile_serverless(obj, svc)

    def _host(self, prefix: str, name: str, ns: str) -> str:
        return f"http://{prefix}{name}-predictor.{ns}.{self.domain}"

    def _reconcile_serverless(self, obj: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
        meta, spec = obj["metadata"], obj["spec"]
        name, ns = meta["name"], meta.get("namespace", "default")
        pred = copy.deepcopy(spec["predictor"])
        pct = pred.pop("canaryTrafficPercent", None)
        template = _hash(pred)
        revs = svc["revisions"]
        if not revs or revs[-1]["template"] != template:
            version = predictor_version(pred)
            revs.append({"name": f"{name}-predictor-{len(revs) + 1:05d}", "template": template, "version": version})
            self.revision_versions[revs[-1]["name"]] = version
        for rev in revs:
            rev["ready"], rev["reason"] = self._ready(rev["version"])
        latest = revs[-1]
        ready_revs = [r for r in revs if r["ready"]]
        latest_ready = ready_revs[-1]["name"] if ready_revs else None
        tags = (meta.get("annotations") or {}).get(TAG_ANNOTATION) == "true"
        if svc["rolledout"] is None and latest["ready"]:
            svc["rolledout"] = latest["name"]  # first revision rolls out directly
        traffic: list[dict[str, Any]] = []
        if latest["ready"] and (pct is None or pct == 100) and latest["name"] != svc["rolledout"] and pct is None:
            svc["previous"], svc["rolledout"] = svc["rolledout"], latest["name"]
        rolled = svc["rolledout"]
        if latest["ready"] and latest["name"] != rolled and pct is not None:
            traffic.append({"revisionName": latest["name"], "percent": pct, "latestRevision": True})
            traffic.append({"revisionName": rolled, "percent": 100 - pct, "latestRevision": False})
            if tags:
                traffic[0].update(tag="latest", url=self._host("latest-", name, ns))
                traffic[1].update(tag="prev", url=self._host("prev-", name, ns))
        elif rolled is not None:
            traffic.append({"revisionName": rolled, "percent": 100, "latestRevision": rolled == latest["name"]})
            if tags:
                traffic[0].update(tag="latest" if rolled == latest["name"] else "prev",
                                  url=self._host("latest-" if rolled == latest["name"] else "prev-", name, ns))
            if tags and svc["previous"] and rolled == latest["name"]:
                traffic.append({"revisionName": svc["previous"], "percent": 0, "latestRevision": False,
                                "tag": "prev", "url": self._host("prev-", name, ns)})
        conditions = []
        now = _now()
        if latest["ready"]:
            conditions.append({"type": "PredictorReady", "status": "True", "lastTransitionTime": now})
        else:
            conditions.append({"type": "PredictorReady", "status": "False", "reason": "RevisionFailed" if latest["version"] in self._failing else "RevisionMissing",
                               "message": f"Revision \"{latest['name']}\" failed with message: {latest['reason']}.",
                               "lastTransitionTime": now})
        serving = rolled is not None
        conditions.append({"type": "IngressReady", "status": "True" if serving else "False", "lastTransitionTime": now})
        all_ready = latest["ready"] and serving
        ready_cond = {"type": "Ready", "status": "True" if all_ready else "False", "lastTransitionTime": now}
        if not all_ready:
            ready_cond.update(reason="RevisionFailed", message=conditions[0].get("message", "not ready"))
        conditions.append(ready_cond)
        url = f"http://{name}.{ns}.{self.domain}"
        predictor_status = {
            "latestCreatedRevision": latest["name"],
            "traffic": traffic,
            "url": self._host("", name, ns),
            "address": {"url": f"http://{name}-predictor.{ns}.svc.cluster.local"},
        }
        if latest_ready:
            predictor_status["latestReadyRevision"] = latest_ready
        if rolled:
            predictor_status["latestRolledoutRevision"] = rolled
        if svc["previous"]:
            predictor_status["previousRolledoutRevision"] = svc["previous"]
        return {
            "url": url,
            "address": {"url": f"http://{name}.{ns}.svc.cluster.local"},
            "components": {"predictor": predictor_status},
            "conditions": conditions,
            "deploymentMode": "Serverless",
            "observedGeneration": meta.get("generation", 1),
        }

    def _reconcile_standard(self, obj: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
        meta, spec = obj["metadata"], obj["spec"]
        name, ns = meta["name"], meta.get("namespace", "default")
        pred = spec["predictor"]
        version = predictor_version(pred)
        ready, reason = self._ready(version)
        rev = f"{name}-predictor-{_hash(pred)[:8]}"
        self.revision_versions[rev] = version
        status: dict[str, Any] = {
            "url": f"http://{name}-{ns}.{self.domain}",
            "components": {"predictor": {"latestCreatedRevision": rev, "url": f"http://{name}-predictor-{ns}.{self.domain}"}},
            "deploymentMode": "Standard",
            "observedGeneration": meta.get("generation", 1),
        }
        if ready:
            status["components"]["predictor"]["latestReadyRevision"] = rev
        canaries = []
        for entry in spec.get("canary") or ():
            c_ready, c_reason = self._ready(predictor_version(entry["predictor"]))
            # kserve components/predictor.go reconcileCanaryDeployments: CanaryStatus.Name is the canary's
            # predictor name (its Deployment is PredictorServiceName(isvc, that name))
            c_name = entry["predictor"].get("name", "")
            self.revision_versions[c_name] = predictor_version(entry["predictor"])
            canaries.append({"name": c_name, "ready": c_ready,
                             "trafficPercent": int(entry["trafficPercent"]) if c_ready else 0})
            if not c_ready:
                reason = reason or c_reason
        if canaries:
            status["canaryStatuses"] = canaries
        ok = ready and all(c["ready"] for c in canaries)
        cond = {"type": "Ready", "status": "True" if ok else "False", "lastTransitionTime": _now()}
        if not ok:
            cond.update(reason="MinimumReplicasUnavailable", message=reason or "not ready")
        status["conditions"] = [
            {"type": "PredictorReady", "status": "True" if ready else "False", "lastTransitionTime": _now()},
            cond,
        ]
        return status


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "code": code, "reason": reason, "message": message}


ADMIN = "system:admin"
CORE_KINDS = {"secrets": "Secret", "serviceaccounts": "ServiceAccount", "configmaps": "ConfigMap"}


@dataclass(frozen=True)
class LoggedCall:
    """One request the emulator answered: who asked, what RBAC calls it, what came back."""

    user: str  # system:serviceaccount:<ns>:<name>, or system:admin for the test itself
    call: Any  # serving.cluster.rbac.ApiCall
    status: int  # HTTP status answered (403 when RBAC refused it)


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _make_emulator_class():
    import attrs
    import kmock
    from kmock._internal import rendering

    @attrs.define(kw_only=True)
    class _Emulator(kmock.KubernetesEmulator):
        """kmock's emulator with API-server semantics for InferenceServices and Events."""

        store: dict = attrs.field(factory=dict)
        events: list = attrs.field(factory=list)
        calls: list = attrs.field(factory=list)
        standin: KServeStandIn = attrs.field(factory=KServeStandIn)
        auto_reconcile: bool = True
        rv: int = 0
        tokens: dict = attrs.field(factory=dict)  # bearer token -> user name
        require_auth: bool = False
        roles: dict = attrs.field(factory=dict)  # user -> [Role dicts bound to it]
        log: list = attrs.field(factory=list)  # LoggedCall, every resource request
        core: dict = attrs.field(factory=dict)  # (plural, namespace, name) -> object
        lock: Any = attrs.field(factory=threading.RLock)
        changed: Any = attrs.field(factory=threading.Condition)

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self.resources[kmock.resource(GROUP, VERSION, PLURAL)] = kmock.ResourceInfo(
                kind="InferenceService", singular="inferenceservice", shortnames={"isvc"}, namespaced=True,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )

        def _next_rv(self) -> str:
            self.rv += 1
            return str(self.rv)

        def _user(self, request) -> str | None:
            auth = request.headers.get("Authorization") or request.headers.get("authorization") or ""
            scheme, _, token = auth.partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""  # the official client sends "bearer"
            if token in self.tokens:
                return self.tokens[token]
            return None if self.require_auth else ADMIN

        def _authorize(self, request):
            """(user, ApiCall or None, denial response or None) for one request."""
            from serving.cluster.rbac import RbacError, call_from_request, is_granted

            user = self._user(request)
            try:
                call = call_from_request(str(request.method.value), str(request.url))
            except RbacError:
                call = None  # discovery and other non-resource paths
            if user is None:
                if call is not None:
                    self.log.append(LoggedCall("system:anonymous", call, 401))
                return user, call, aiohttp.web.json_response(
                    _status_body(401, "Unauthorized", "Unauthorized"), status=401)
            if call is None:
                return user, None, None
            if user in self.roles and not any(is_granted(r, call) for r in self.roles[user]):
                self.log.append(LoggedCall(user, call, 403))
                msg = (f'{call.resource} is forbidden: User "{user}" cannot {call.verb} resource '
                       f'"{call.resource}" in API group "{call.api_group}" in the namespace "{call.namespace}"')
                return user, call, aiohttp.web.json_response(_status_body(403, "Forbidden", msg), status=403)
            return user, call, None

        async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
            user, call, denied = self._authorize(request)
            if denied is not None:
                return denied
            with self.lock:
                response = await self._dispatch(request)
            if call is not None:
                self.log.append(LoggedCall(user, call, response.status))
                if call.verb not in ("get", "list", "watch") and response.status < 300:
                    with self.changed:
                        self.changed.notify_all()
            return response

        async def _dispatch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
            res = request.resource
            plural = getattr(res, "plural", None)
            if res is not None and plural in CORE_KINDS and not getattr(res, "group", ""):
                verb = _VERBS.get(str(request.method.value), str(request.method.value).lower())
                if verb == "get" and request.name is None:
                    verb = "list"
                self.calls.append((verb, plural))
                try:
                    return self._core(request, plural, verb)
                except _ApiError as exc:
                    return aiohttp.web.json_response(_status_body(exc.code, exc.reason, exc.message), status=exc.code)
            if res is not None and plural in (PLURAL, "events"):
                verb = _VERBS.get(str(request.method.value), str(request.method.value).lower())
                if verb == "get" and request.name is None:
                    verb = "watch" if request.params.get("watch") in ("true", "1") else "list"
                self.calls.append((verb, plural if request.subresource is None else f"{plural}/{request.subresource}"))
                try:
                    if plural == "events":
                        return self._events(request, verb)
                    return self._isvc(request, verb)
                except _ApiError as exc:
                    return aiohttp.web.json_response(_status_body(exc.code, exc.reason, exc.message), status=exc.code)
            return await super()._handle(request)

        def _core(self, request, plural, verb):
            ns = request.namespace or "default"
            if verb == "list":
                items = [copy.deepcopy(o) for (p, n, _), o in sorted(self.core.items()) if p == plural and n == ns]
                return aiohttp.web.json_response({"apiVersion": "v1", "kind": CORE_KINDS[plural] + "List",
                                                  "metadata": {"resourceVersion": str(self.rv)}, "items": items})
            if verb in ("create", "update"):
                body = copy.deepcopy(request.data or {})
                name = request.name or (body.get("metadata") or {}).get("name")
                key = (plural, ns, name)
                if verb == "create" and key in self.core:
                    raise _ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
                if verb == "update" and key not in self.core:
                    raise _ApiError(404, "NotFound", f'{plural} "{name}" not found')
                if plural == "secrets":  # the API server folds stringData into data
                    data = dict(body.get("data") or {})
                    for k, v in (body.pop("stringData", None) or {}).items():
                        data[k] = base64.b64encode(str(v).encode()).decode()
                    body["data"] = data
                meta = body.setdefault("metadata", {})
                meta.update(name=name, namespace=ns, resourceVersion=self._next_rv())
                meta.setdefault("uid", str(uuid.uuid4()))
                body.setdefault("apiVersion", "v1")
                body.setdefault("kind", CORE_KINDS[plural])
                self.core[key] = body
                return aiohttp.web.json_response(body, status=201 if verb == "create" else 200)
            key = (plural, ns, request.name)
            if key not in self.core:
                raise _ApiError(404, "NotFound", f'{plural} "{request.name}" not found')
            if verb == "get":
                return aiohttp.web.json_response(copy.deepcopy(self.core[key]))
            if verb == "delete":
                del self.core[key]
                return aiohttp.web.json_response(_status_body(200, "", "deleted") | {"status": "Success"})
            raise _ApiError(405, "MethodNotAllowed", f"{verb} on {plural} is not served by the emulator")

        def set_status(self, namespace: str, name: str, status: dict) -> bool:
            """Write ``status`` as a controller's status update would; False when the object is gone."""
            with self.lock:
                obj = self.store.get((namespace, name))
                if obj is None:
                    return False
                if obj.get("status") != status:
                    obj["status"] = copy.deepcopy(status)
                    obj["metadata"]["resourceVersion"] = self._next_rv()
                return True

        def _events(self, request, verb):
            if verb == "create":
                ev = dict(request.data or {})
                ev.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
                self.events.append(ev)
                return aiohttp.web.json_response(ev, status=201)
            if verb == "list":
                return aiohttp.web.json_response({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": self.events})
            raise _ApiError(405, "MethodNotAllowed", f"{verb} on events is not served by the emulator")

        def _isvc(self, request, verb):
            ns = request.namespace or "default"
            name = request.name
            key = (ns, name)
            if verb == "list":
                items = [copy.deepcopy(o) for (n, _), o in sorted(self.store.items()) if request.namespace in (None, n)]
                return aiohttp.web.json_response({"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceServiceList",
                                                  "metadata": {"resourceVersion": str(self.rv)}, "items": items})
            if verb == "watch":
                raise _ApiError(405, "MethodNotAllowed", "watch is not served by this emulator")
            if verb == "create":
                body = copy.deepcopy(request.data or {})
                name = (body.get("metadata") or {}).get("name")
                key = (ns, name)
                if key in self.store:
                    raise _ApiError(409, "AlreadyExists", f'inferenceservices.{GROUP} "{name}" already exists')
                self._validate(body)
                meta = body.setdefault("metadata", {})
                meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                            resourceVersion=self._next_rv())
                body.pop("status", None)
                self.store[key] = body
                self._reconcile(key)
                return aiohttp.web.json_response(self.store[key], status=201)
            if key not in self.store:
                raise _ApiError(404, "NotFound", f'inferenceservices.{GROUP} "{name}" not found')
            current = self.store[key]
            if verb == "get":
                return aiohttp.web.json_response(current)
            if verb == "delete":
                del self.store[key]
                self.standin.forget(ns, name)
                return aiohttp.web.json_response(_status_body(200, "", "deleted") | {"status": "Success"})
            if verb in ("update", "patch"):
                body = copy.deepcopy(request.data or {})
                given_rv = (body.get("metadata") or {}).get("resourceVersion")
                if given_rv is not None and str(given_rv) != current["metadata"]["resourceVersion"]:
                    raise _ApiError(
                        409, "Conflict",
                        f'Operation cannot be fulfilled on inferenceservices.{GROUP} "{name}": the object has been '
                        "modified; please apply your changes to the latest version and try again",
                    )
                if verb == "update":
                    if given_rv is None:
                        raise _ApiError(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
                    new = body
                    new["status"] = copy.deepcopy(current.get("status"))
                else:
                    ctype = request.headers.get("Content-Type", "")
                    if "merge-patch" not in ctype:
                        raise _ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format ({ctype}); custom resources accept application/merge-patch+json")
                    new = merge_patch(current, body)
                keep = current["metadata"]
                meta = new.setdefault("metadata", {})
                for field in ("uid", "creationTimestamp", "namespace", "name", "generation"):
                    meta[field] = keep.get(field) if field != "name" else name
                if request.subresource == "status":
                    new["spec"] = current["spec"]
                else:
                    new["status"] = current.get("status")
                if _hash(new.get("spec")) != _hash(current.get("spec")):
                    meta["generation"] = keep["generation"] + 1
                check = copy.deepcopy(new)
                check.pop("status", None)
                self._validate(check)
                meta["resourceVersion"] = self._next_rv()
                self.store[key] = new
                if request.subresource != "status":
                    self._reconcile(key)
                return aiohttp.web.json_response(self.store[key])
            raise _ApiError(405, "MethodNotAllowed", f"{verb} is not served")

        def _validate(self, body: dict) -> None:
            from serving.isvc import IsvcError, validate_isvc

            check = copy.deepcopy(body)
            check.pop("status", None)
            try:
                validate_isvc(check)
            except IsvcError as exc:
                raise _ApiError(422, "Invalid", f"InferenceService.{GROUP} is invalid: {exc}") from None

        def _reconcile(self, key) -> None:
            if not self.auto_reconcile:
                return
            obj = self.store[key]
            obj["status"] = self.standin.reconcile(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()

        def reconcile_all(self) -> None:
            """Run the stand-in controller over every object (after :attr:`auto_reconcile` was off)."""
            for key, obj in self.store.items():
                obj["status"] = self.standin.reconcile(obj)
                obj["metadata"]["resourceVersion"] = self._next_rv()

    return _Emulator


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class KubeEmulator:
    """Runs the emulator on a loopback port in a background thread.

    Attributes (while entered): ``url``, ``handler`` (the kmock emulator: ``store``,
    ``calls``, ``events``, ``standin``, ``auto_reconcile``).
    """

    def __init__(self, namespace: str = "default", *, tls: bool = False, auto_reconcile: bool = True,
                 require_auth: bool = False) -> None:
        self.namespace = namespace
        self.tls = tls
        self._auto_reconcile = auto_reconcile
        self._require_auth = require_auth
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.ca_path: Path | None = None
        self.handler = None
        self.url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def calls(self) -> list[tuple[str, str]]:
        return list(self.handler.calls)

    @property
    def standin(self) -> KServeStandIn:
        return self.handler.standin

    @property
    def log(self) -> list[LoggedCall]:
        """Every resource request answered so far (who, the RBAC call, the status)."""
        return list(self.handler.log)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def issue_token(self, service_account: str, namespace: str | None = None) -> str:
        """A bearer token that authenticates as ``system:serviceaccount:<ns>:<service_account>``."""
        token = _secrets.token_urlsafe(24)
        self.handler.tokens[token] = f"system:serviceaccount:{namespace or self.namespace}:{service_account}"
        return token

    def service_account_files(self, folder: str | Path, service_account: str, namespace: str | None = None) -> Path:
        """Write what kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: token, ca.crt, namespace."""
        if not self.tls:
            raise RuntimeError("service_account_files needs KubeEmulator(tls=True): in-cluster clients speak https")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(self.issue_token(service_account, namespace))
        (folder / "ca.crt").write_bytes(self.ca_path.read_bytes())
        (folder / "namespace").write_text(namespace or self.namespace)
        return folder

    def bind_kit_rbac(self, documents) -> dict[str, list[dict]]:
        """Bind the kit's Roles to their RoleBindings' service accounts in this namespace.

        ``documents``: parsed YAML documents (Roles and RoleBindings; others are ignored). As
        kustomize does with ``namespace:``, Roles and subjects are placed in :attr:`namespace`.
        Returns the user -> Roles map now enforced.
        """
        docs = [d for d in documents if isinstance(d, dict)]
        roles = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Role"}
        for binding in (d for d in docs if d.get("kind") == "RoleBinding"):
            role = copy.deepcopy(roles[binding["roleRef"]["name"]])
            role.setdefault("metadata", {})["namespace"] = self.namespace
            for subject in binding.get("subjects") or ():
                if subject.get("kind") == "ServiceAccount":
                    user = f"system:serviceaccount:{self.namespace}:{subject['name']}"
                    self.handler.roles.setdefault(user, []).append(role)
        return dict(self.handler.roles)

    def set_status(self, name: str, namespace: str, status: dict) -> bool:
        return self.handler.set_status(namespace, name, status)

    def objects(self) -> list[dict[str, Any]]:
        """A consistent copy of every InferenceService."""
        with self.handler.lock:
            return [copy.deepcopy(o) for _, o in sorted(self.handler.store.items())]

    def core_object(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        with self.handler.lock:
            obj = self.handler.core.get((plural, namespace or self.namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def wait_change(self, timeout_s: float) -> None:
        """Block until a write is answered or ``timeout_s`` passes (a controller's watch, simplified)."""
        with self.handler.changed:
            self.handler.changed.wait(timeout_s)

    def object(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        return copy.deepcopy(self.handler.store[(namespace or self.namespace, name)])

    def client_configuration(self):
        """A ``kubernetes.client.Configuration`` pointing at the emulator."""
        import kubernetes

        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.verify_ssl = bool(self.tls)
        if self.tls:
            cfg.ssl_ca_cert = str(self.ca_path)
        return cfg

    def write_kubeconfig(self, path, token: str = "test-token") -> str:
        """Write a kubeconfig naming the emulator (for code that loads kubeconfig files).

        ``token``: the user's bearer token (e.g. :meth:`issue_token` for a service account, as a CI
        system holds one); with TLS the emulator's CA is embedded.
        """
        import yaml

        cluster: dict[str, Any] = {"server": self.url}
        if self.tls:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_path.read_bytes()).decode()
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "tester", "user": {"token": token}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": self.namespace}}],
        }
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(doc, fh)
        return str(path)

    def __enter__(self) -> "KubeEmulator":
        import kmock

        ready = threading.Event()
        errors: list[BaseException] = []
        server_kwargs: dict[str, Any] = {}
        if self.tls:
            import aiohttp.test_utils

            self._tmp = tempfile.TemporaryDirectory(prefix="kube-emulator-")
            self.ca_path, ssl_ctx = _tls_material(Path(self._tmp.name))

            class _TlsServer(aiohttp.test_utils.RawTestServer):
                async def start_server(self, loop=None, **kwargs):  # aiohttp takes ssl here, not in __init__
                    return await super().start_server(loop=loop, ssl=ssl_ctx, **kwargs)

            server_kwargs["server_cls"] = _TlsServer

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                cls = _make_emulator_class()
                async with cls(auto_reconcile=self._auto_reconcile, require_auth=self._require_auth) as handler, \
                        kmock.Server(handler, **server_kwargs) as server:
                    self.handler = handler
                    self.url = str(server.url).rstrip("/")
                    ready.set()
                    await self._stop.wait()
            except BaseException as exc:  # surfaced in __enter__
                errors.append(exc)
                ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the Kubernetes emulator did not start within 30s")
        if errors:
            raise RuntimeError(f"the Kubernetes emulator failed to start: {errors[0]!r}") from errors[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        if self._tmp is not None:
            self._tmp.cleanup()


def _tls_material(folder: Path):
    """A CA and a server certificate for 127.0.0.1 signed by it; returns (ca.crt path, server SSLContext)."""
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-emulator-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ca_path, ctx
