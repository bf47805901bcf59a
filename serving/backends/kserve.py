"""The ``kserve`` serving backend: InferenceServices through the Kubernetes API.

Uses the official ``kubernetes`` client (``CustomObjectsApi``) on group
``serving.kserve.io``, version ``v1beta1``, plural ``inferenceservices``.
Writes are guarded by ``metadata.resourceVersion`` (optimistic concurrency):
HTTP 409 becomes :class:`~serving.backends.base.Conflict`, 404
:class:`~serving.backends.base.NotFound`, and an unreachable API server
:class:`~serving.backends.base.BackendUnavailable` with the fix.

Kubernetes API calls made (the Role needs exactly these verbs):

=============================  =====================  ======================
call                           resource               RBAC verb
=============================  =====================  ======================
``get``                        inferenceservices      get
``apply`` (new object)         inferenceservices      create
``apply`` (resourceVersion)    inferenceservices      update
``patch_annotations``          inferenceservices      patch
``delete``                     inferenceservices      delete (tests/cleanup only; not in the rollout Role)
``record_event``               events (core v1)       create
=============================  =====================  ======================

The rollout controller itself never deletes; ``list``/``watch`` are granted for
``kubectl``-style tooling but this module does not call them.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from serving.backends.base import (
    BackendError,
    BackendUnavailable,
    Conflict,
    Endpoints,
    NotFound,
    PredictorStatus,
    ServingBackend,
)

log = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"

_FIX = (
    "check the Kubernetes credentials: set KUBECONFIG (or pass kubeconfig=...) to a file "
    "whose current context reaches the cluster, or run inside a pod whose service account "
    "is bound to the llmops rollout Role"
)


class KServeBackend(ServingBackend):
    """InferenceServices on a Kubernetes cluster with KServe.

    Args:
        api_client: a ready ``kubernetes.client.ApiClient`` (tests, custom auth).
        kubeconfig: path to a kubeconfig file (default: ``KUBECONFIG`` / ``~/.kube/config``).
        context: kubeconfig context to use.
        in_cluster: use the pod's service account instead of a kubeconfig.
        request_timeout_s: per-request timeout.
        namespace: default namespace (informational; every call names its namespace).

    Raises:
        BackendUnavailable: no usable configuration was found (says the fix).
    """

    def __init__(
        self,
        api_client: Any = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        request_timeout_s: float = 30.0,
        namespace: str | None = None,
    ) -> None:
        import kubernetes

        self._k8s = kubernetes
        if api_client is None:
            try:
                if in_cluster:
                    kubernetes.config.load_incluster_config()
                    api_client = kubernetes.client.ApiClient()
                else:
                    api_client = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
            except (kubernetes.config.ConfigException, OSError, TypeError) as exc:
                where = "in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '(default)'}"
                raise BackendUnavailable(f"kserve backend: cannot load the {where}: {exc}; {_FIX}") from exc
        self.api_client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.timeout = request_timeout_s
        self.namespace = namespace

    # ------------------------------------------------------------ translation

    def _call(self, what: str, fn, *args, **kwargs):
        ApiException = self._k8s.client.ApiException
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            message = _api_message(exc)
            if exc.status == 404:
                raise NotFound(f"{what}: not found ({message})") from exc
            if exc.status == 409:
                raise Conflict(f"{what}: {message}") from exc
            if exc.status in (401, 403):
                raise BackendUnavailable(f"{what}: the API server refused the request ({exc.status} {message}); {_FIX}") from exc
            raise BackendError(f"{what}: API server answered {exc.status}: {message}") from exc
        except Exception as exc:  # urllib3 connection errors, timeouts
            if _is_transport_error(exc):
                host = getattr(self.api_client.configuration, "host", "?")
                raise BackendUnavailable(f"{what}: cannot reach the Kubernetes API at {host}: {exc}; {_FIX}") from exc
            raise

    # --------------------------------------------------------------- interface

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        return self._call(
            f"get inferenceservice {namespace}/{name}",
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
        )

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace") or "default"
        body = {k: v for k, v in obj.items() if k != "status"}
        if meta.get("resourceVersion"):
            return self._call(
                f"replace inferenceservice {namespace}/{name}",
                self.custom.replace_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, body,
            )
        try:
            return self._call(
                f"create inferenceservice {namespace}/{name}",
                self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body,
            )
        except Conflict as exc:
            raise Conflict(f"inferenceservice {namespace}/{name} already exists; read it and apply with its resourceVersion") from exc

    def patch_annotations(
        self, name: str, namespace: str, annotations: dict[str, str | None], resource_version: str
    ) -> dict[str, Any]:
        # a JSON merge patch carrying resourceVersion is refused with 409 when the object moved on
        body = {"metadata": {"annotations": dict(annotations), "resourceVersion": resource_version}}
        return self._call(
            f"patch annotations of inferenceservice {namespace}/{name}",
            self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, body,
        )

    def delete(self, name: str, namespace: str) -> None:
        try:
            self._call(
                f"delete inferenceservice {namespace}/{name}",
                self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
            )
        except NotFound:
            pass

    def endpoints(self, name: str, namespace: str) -> Endpoints:
        obj = self.get(name, namespace)
        return endpoints_from_isvc(obj)

    def revision_urls(self, name: str, namespace: str, revision: str) -> tuple[str, ...]:
        """Pods are not reachable from outside the cluster: use the ``prometheus`` metrics provider."""
        return ()

    def record_event(self, obj: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Emit a Kubernetes Event on the InferenceService (best effort; failures are logged)."""
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.datetime.now(datetime.timezone.utc)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
                "name": meta.get("name"), "namespace": namespace, "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1000],
            "type": type_,
            "source": {"component": "llmops-rollout"},
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            self._call(f"create event for {namespace}/{meta.get('name')}", self.core.create_namespaced_event, namespace, event)
        except BackendError as exc:
            log.warning("event not recorded: %s", exc)


def endpoints_from_isvc(obj: dict[str, Any]) -> Endpoints:
    """Service URL and the ``latest``/``prev`` tag-routing URLs from ``status``."""
    status = obj.get("status") or {}
    ps = PredictorStatus.from_isvc(obj)
    latest = next((t.url for t in ps.traffic if t.tag == "latest" and t.url), None)
    prev = next((t.url for t in ps.traffic if t.tag == "prev" and t.url), None)
    return Endpoints(url=status.get("url") or ps.url or "", latest_url=latest, prev_url=prev)


def _api_message(exc: Any) -> str:
    import json

    try:
        body = json.loads(exc.body or "{}")
        return body.get("message") or exc.reason or str(exc.status)
    except (ValueError, TypeError, AttributeError):
        return str(exc.reason or exc.status)


def _is_transport_error(exc: BaseException) -> bool:
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError))
