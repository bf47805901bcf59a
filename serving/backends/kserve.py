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
        in_cluster: ``True``: the pod's service account (token, CA and
            ``KUBERNETES_SERVICE_HOST``, via ``load_incluster_config``);
            ``False``: a kubeconfig; ``None`` (auto): a kubeconfig when one
            exists, else the service account when running in a pod.
        request_timeout_s: per-request timeout.
        namespace: default namespace (informational; every call names its namespace).
        service_account_dir: where the pod's ``token`` and ``ca.crt`` are
            (default: ``/var/run/secrets/kubernetes.io/serviceaccount``, where kubelet mounts them).

    Raises:
        BackendUnavailable: no usable configuration was found (says the fix).
    """

    def __init__(
        self,
        api_client: Any = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        request_timeout_s: float = 30.0,
        namespace: str | None = None,
        service_account_dir: str | None = None,
    ) -> None:
        import kubernetes

        self._k8s = kubernetes
        if api_client is None:
            if in_cluster is None:
                in_cluster = use_in_cluster(kubeconfig)
            try:
                if in_cluster:
                    api_client = incluster_api_client(service_account_dir)
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
                from serving.urls import mask_credentials

                host = mask_credentials(getattr(self.api_client.configuration, "host", "?"))
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


def incluster_api_client(service_account_dir: str | None = None):
    """An ``ApiClient`` authenticated as the pod's service account.

    The same loader as ``kubernetes.config.load_incluster_config`` (host from
    ``KUBERNETES_SERVICE_HOST``/``_PORT``, the token refreshed as kubelet rotates it,
    the cluster CA), with the folder as a parameter instead of a process-wide default.
    """
    from pathlib import Path

    import kubernetes
    from kubernetes.config.incluster_config import InClusterConfigLoader

    from serving.cluster.names import SERVICE_ACCOUNT_DIR

    folder = Path(service_account_dir or SERVICE_ACCOUNT_DIR)
    cfg = kubernetes.client.Configuration()
    InClusterConfigLoader(token_filename=str(folder / "token"), cert_filename=str(folder / "ca.crt")).load_and_set(cfg)
    return kubernetes.client.ApiClient(cfg)


def use_in_cluster(kubeconfig: str | None = None) -> bool:
    """Auto choice: the pod's service account when no kubeconfig file exists and the process runs in a pod.

    A kubeconfig wins when it is named (``kubeconfig`` or ``$KUBECONFIG``) or
    ``~/.kube/config`` exists; Kubernetes sets ``KUBERNETES_SERVICE_HOST`` in every pod.
    """
    import os
    from pathlib import Path

    from serving.cluster.names import IN_CLUSTER_ENV

    if kubeconfig or os.environ.get("KUBECONFIG") or (Path.home() / ".kube" / "config").is_file():
        return False
    return bool(os.environ.get(IN_CLUSTER_ENV))


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
