"""Render the cluster kit: what a platform team applies to run llmops on Kubernetes.

One :class:`KitSpec` (namespace, model, deployment mode, images, the namespaces
allowed to reach the predictor) renders:

* ``ClusterServingRuntime`` ``llmops-llm`` (cluster scope, applied once) and a
  namespaced ``ServingRuntime`` of the same name, for model format ``llmops-llm``;
* ServiceAccounts ``llmops-pipeline`` (pipeline runs), ``llmops-rollout``
  (the rollout controller) and ``llmops-predictor`` (the predictor pods: pulls
  the modelcar image, no API token);
* one least-privilege Role + RoleBinding for each of the first two;
* a NetworkPolicy letting only the ingress/gateway namespaces and the
  Prometheus namespace reach the predictor pods;
* a ``PodMonitor`` scraping the predictor pods' ``/metrics``;
* the ``InferenceService`` itself when a model location is given.

The kustomize tree beside this file (``base/``, ``overlays/serverless``,
``overlays/standard``, ``clusterwide/``) is written by :func:`write_kustomize_tree`
from the same functions, so ``kubectl kustomize overlays/<mode>`` and
:func:`render_kit` agree (a test checks both). Refresh it after a change with
``python -m serving.cluster.render --write-kustomize``.

Errors::

    KitError (ValueError)   an impossible kit setting (the field is named)
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serving.isvc import (
    DIGEST_RE,
    HF_HOME,
    HTTP_PORT,
    METRICS_PATH,
    MODEL_FORMAT,
    MODEL_VERSION_POD_LABEL,
    PROMETHEUS_PATH_ANNOTATION,
    PROMETHEUS_PORT_ANNOTATION,
    WRITABLE_DIRS,
    DeploymentMode,
    IsvcSpecError,
    PredictorSpec,
    ServiceSpec,
    render_isvc,
)

KIT_DIR = Path(__file__).resolve().parent
RUNTIME_NAME = MODEL_FORMAT  # the ServingRuntime's name; PredictorSpec.runtime defaults to it
from serving.cluster.names import (  # noqa: E402  (one source of truth for names that cross the boundary)
    DEFAULT_NAMESPACE,
    PIPELINE_SA,
    PREDICTOR_SA,
    RAW_APP_LABEL_PREFIX,
    REGISTRY_PULL_SECRET,
    ROLLOUT_SA,
    RUNTIME_IMAGE_REPO,
)
DEFAULT_MODEL = "llm"
# A visibly fake digest: replace it with the model-server image you built (see docs/cluster.md).
PLACEHOLDER_RUNTIME_IMAGE = f"{RUNTIME_IMAGE_REPO}@sha256:" + "0" * 64
PART_OF = {"app.kubernetes.io/part-of": "llmops"}
# Knative queue-proxy ports the activator, ingress gateway and autoscaler reach in Serverless mode:
# 8012 serving, 8022 admin (readiness), 9090 autoscaler metrics.
KNATIVE_QUEUE_PORTS = (8012, 8022, 9090)
# The name the predictor container's port has inside the pod: Knative renames the
# user port to "user-port"; Standard mode keeps the runtime's name.
POD_PORT_NAME = {DeploymentMode.SERVERLESS: "user-port", DeploymentMode.STANDARD: "http1"}
DEFAULT_INGRESS_NAMESPACES = {
    DeploymentMode.SERVERLESS: ("knative-serving", "istio-system"),  # activator + Knative's gateway
    DeploymentMode.STANDARD: ("envoy-gateway-system",),  # the Gateway API implementation's pods
}
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class KitError(LlmopsError, ValueError):
    """An impossible cluster-kit setting; the message names the field."""


@dataclass(frozen=True)
class KitSpec:
    """Everything the cluster kit varies on."""

    namespace: str = DEFAULT_NAMESPACE  # where the pipeline, controller and InferenceService live
    model: str = DEFAULT_MODEL  # the InferenceService name
    mode: DeploymentMode = DeploymentMode.SERVERLESS  # Serverless (Knative) or Standard (Gateway API)
    runtime_image: str = PLACEHOLDER_RUNTIME_IMAGE  # model-server image, pinned by digest
    ingress_namespaces: tuple[str, ...] | None = None  # who may call the predictor; None: the mode's default
    prometheus_namespace: str = "monitoring"  # where Prometheus runs
    storage_uri: str | None = None  # oci://...@sha256:..., s3://...: also render the InferenceService
    predictor: PredictorSpec | None = None  # sizing for that InferenceService (storage_uri is filled in)

    def resolved_mode(self) -> DeploymentMode:
        try:
            return DeploymentMode.parse(self.mode)
        except IsvcSpecError as exc:
            raise KitError(f"mode: {exc}".replace("mode: deployment_mode: ", "mode: ")) from None

    def ingress(self) -> tuple[str, ...]:
        if self.ingress_namespaces is None:
            return DEFAULT_INGRESS_NAMESPACES[self.resolved_mode()]
        return tuple(self.ingress_namespaces)

    def validate(self) -> None:
        """Raise :class:`KitError` naming the first impossible field."""
        if not NAME_RE.fullmatch(self.namespace or ""):
            raise KitError(f"namespace: {self.namespace!r} is not a valid namespace name (lowercase DNS label)")
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.model or ""):
            raise KitError(
                f"model: {self.model!r} is not a DNS-1035 label (lowercase letters, digits, '-', start with a letter)"
            )
        self.resolved_mode()
        if not DIGEST_RE.search(self.runtime_image or ""):
            raise KitError(
                f"runtime_image: {self.runtime_image!r} is not pinned by digest; use repo@sha256:<64 hex>"
            )
        for ns in (*self.ingress(), self.prometheus_namespace):
            if not NAME_RE.fullmatch(ns or ""):
                raise KitError(f"ingress_namespaces/prometheus_namespace: {ns!r} is not a valid namespace name")
        if self.predictor is not None:
            _ = self.predictor.profile  # an unknown serving_runtime is refused (IsvcSpecError) whatever is rendered
        if not self.ingress():
            raise KitError("ingress_namespaces: at least one namespace must be able to reach the predictor")
        if self.storage_uri and self.storage_uri.startswith("oci://") and not DIGEST_RE.search(self.storage_uri):
            raise KitError(
                f"storage_uri: {self.storage_uri!r} is not pinned by digest; use oci://repo@sha256:<64 hex>"
            )


# --- pieces -------------------------------------------------------------------


def _meta(name: str, namespace: str | None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = {**PART_OF, **labels}
    return meta


def serving_runtime_spec(runtime_image: str) -> dict[str, Any]:
    """The ``spec`` shared by the ServingRuntime and the ClusterServingRuntime."""
    probe = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
    return {
        "annotations": {PROMETHEUS_PORT_ANNOTATION: str(HTTP_PORT), PROMETHEUS_PATH_ANNOTATION: METRICS_PATH},
        "supportedModelFormats": [{"name": MODEL_FORMAT, "version": "1", "autoSelect": True, "priority": 1}],
        "protocolVersions": ["v1", "v2"],
        "multiModel": False,
        "containers": [
            {
                "name": "kserve-container",
                "image": runtime_image,
                "command": ["python", "-m", "serving"],
                "args": ["--model_dir=/mnt/models", "--model_name={{.Name}}", f"--http_port={HTTP_PORT}"],
                "env": [
                    {"name": "HF_HOME", "value": HF_HOME},
                    {"name": "HF_HUB_OFFLINE", "value": "1"},  # the model comes from /mnt/models only
                    {"name": "TMPDIR", "value": "/tmp"},
                ],
                "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
                "readinessProbe": {
                    "httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT},
                    "initialDelaySeconds": 5,
                    **probe,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT},
                    "initialDelaySeconds": 30,
                    **probe,
                },
                "resources": {
                    "requests": {"cpu": "1", "memory": "2Gi"},
                    "limits": {"cpu": "1", "memory": "2Gi"},
                },
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 1000,
                    "runAsGroup": 1000,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [{"name": v, "mountPath": m} for v, m in WRITABLE_DIRS],
            }
        ],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "hf-cache", "emptyDir": {"sizeLimit": "20Gi"}},
        ],
    }


def render_serving_runtime(kit: KitSpec, namespace: str | None) -> dict[str, Any]:
    """The namespaced ``ServingRuntime`` for model format ``llmops-llm``."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": _meta(RUNTIME_NAME, namespace),
        "spec": serving_runtime_spec(kit.runtime_image),
    }


def render_cluster_serving_runtime(kit: KitSpec) -> dict[str, Any]:
    """The cluster-wide ``ClusterServingRuntime`` (same spec, no namespace)."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": _meta(RUNTIME_NAME, None),
        "spec": serving_runtime_spec(kit.runtime_image),
    }


def render_service_accounts(namespace: str | None) -> list[dict[str, Any]]:
    """The three ServiceAccounts (pipeline, rollout controller, predictor)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(PIPELINE_SA, namespace, **{"app.kubernetes.io/component": "pipeline"}),
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(ROLLOUT_SA, namespace, **{"app.kubernetes.io/component": "rollout-controller"}),
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(PREDICTOR_SA, namespace, **{"app.kubernetes.io/component": "predictor"}),
            # the model server never calls the Kubernetes API
            "automountServiceAccountToken": False,
            # pulls the modelcar (oci://) image of the model from a private registry
            "imagePullSecrets": [{"name": REGISTRY_PULL_SECRET}],
        },
    ]


ISVC_RULE_GROUP = "serving.kserve.io"

# What serving/backends/kserve.py calls (checked by tests/integration/cluster/test_rbac_walk.py):
# get, create and update (apply) and patch (annotations) InferenceServices; create Events.
# No delete, list or watch: the controller never calls them.
ROLLOUT_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": [ISVC_RULE_GROUP],
        "resources": ["inferenceservices"],
        "verbs": ["get", "create", "update", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
)

# Pipeline pods: the rollout step drives the canary (the calls ROLLOUT_RULES grants; checked by
# tests/integration/cluster/test_rollout_step_in_cluster.py), the KFP v2 driver reads the
# kfp-launcher ConfigMap, Argo's executor reports task results. No list/watch: nothing calls them.
PIPELINE_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [ISVC_RULE_GROUP], "resources": ["inferenceservices"], "verbs": ["get", "create", "update", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher"], "verbs": ["get"]},
    {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
)


def render_role(name: str, namespace: str | None, rules: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(name, namespace),
        "rules": copy.deepcopy(list(rules)),
    }


def render_role_binding(name: str, namespace: str | None, sa: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        # in the kustomize base (no namespace) "default" is what kustomize's namespace transformer rewrites
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace or "default"}],
    }


def render_rbac(namespace: str | None) -> list[dict[str, Any]]:
    """Role + RoleBinding for the pipeline and for the rollout controller."""
    return [
        render_role(PIPELINE_SA, namespace, PIPELINE_RULES),
        render_role_binding(PIPELINE_SA, namespace, PIPELINE_SA),
        render_role(ROLLOUT_SA, namespace, ROLLOUT_RULES),
        render_role_binding(ROLLOUT_SA, namespace, ROLLOUT_SA),
    ]


def predictor_pod_labels(model: str) -> dict[str, str]:
    """Labels KServe puts on the predictor pods of InferenceService ``model``."""
    return {"serving.kserve.io/inferenceservice": model, "component": "predictor"}


def _from_namespaces(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}} for n in names]


def render_network_policy(kit: KitSpec, namespace: str | None) -> dict[str, Any]:
    """Only the ingress/gateway and Prometheus namespaces may reach the predictor pods."""
    mode = kit.resolved_mode()
    tcp = lambda port: {"protocol": "TCP", "port": port}  # noqa: E731
    if mode is DeploymentMode.SERVERLESS:
        # requests arrive at Knative's queue-proxy, which forwards to 8080 inside the pod
        serving_ports = [tcp(p) for p in KNATIVE_QUEUE_PORTS]
    else:
        serving_ports = [tcp(HTTP_PORT)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"{kit.model}-predictor", namespace),
        "spec": {
            "podSelector": {"matchLabels": predictor_pod_labels(kit.model)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": _from_namespaces(kit.ingress()), "ports": serving_ports},
                {"from": _from_namespaces((kit.prometheus_namespace,)), "ports": [tcp(HTTP_PORT)]},
            ],
        },
    }


REVISION_LABEL = "revision"  # the label the canary judge selects an arm on (serving.metrics.prometheus.selector)


def revision_relabelings(mode: DeploymentMode) -> list[dict[str, Any]]:
    """PodMonitor relabelling that puts the serving revision on every scraped series.

    Serverless: Knative labels each pod with ``serving.knative.dev/revision``,
    the name KServe reports as ``status.components.predictor.latestCreatedRevision``.
    Standard: each predictor (stable, and every ``spec.canary[]`` entry) is its
    own Deployment, whose pods KServe labels ``app: isvc.<deployment>``
    (``serving.cluster.names.predictor_deployment``); the revision is that
    Deployment's name, which the Standard router reports as the arm (a
    ReplicaSet name would change at every rolling update of one arm).
    ``pod`` and ``namespace`` are added by prometheus-operator itself.
    """
    if mode is DeploymentMode.SERVERLESS:
        return [{"sourceLabels": ["__meta_kubernetes_pod_label_serving_knative_dev_revision"],
                 "targetLabel": REVISION_LABEL, "action": "replace", "regex": "(.+)"}]
    return [{"sourceLabels": ["__meta_kubernetes_pod_label_app"], "targetLabel": REVISION_LABEL, "action": "replace",
             "regex": re.escape(RAW_APP_LABEL_PREFIX) + "(.+)"}]


def model_version_relabeling() -> dict[str, Any]:
    """Copy the pod's ``llmops.dev/model-version`` label to ``model_version`` (vLLM series have no version)."""
    source = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", MODEL_VERSION_POD_LABEL)
    return {"sourceLabels": [source], "targetLabel": "model_version", "action": "replace", "regex": "(.+)"}


def render_pod_monitor(kit: KitSpec, namespace: str | None) -> dict[str, Any]:
    """A prometheus-operator ``PodMonitor`` scraping the model server's /metrics.

    Always with the ``model_version`` relabelling: the kit is applied once and serves every runtime a
    release picks later (a vLLM release's series carry no version but its pods' label); on llmops pods,
    which carry no such label and export ``model_version`` themselves, the rule matches nothing.
    """
    monitor = _pod_monitor(kit, namespace)
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    endpoint["relabelings"] = [*endpoint.get("relabelings", []), model_version_relabeling()]
    return monitor


def _pod_monitor(kit: KitSpec, namespace: str | None) -> dict[str, Any]:
    """The PodMonitor body, labelled by revision."""
    mode = kit.resolved_mode()
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _meta(f"{kit.model}-predictor", namespace),
        "spec": {
            "selector": {"matchLabels": predictor_pod_labels(kit.model)},
            "podMetricsEndpoints": [
                {
                    "port": POD_PORT_NAME[mode], "path": METRICS_PATH, "interval": "15s",
                    "relabelings": revision_relabelings(mode),
                }
            ],
        },
    }


def render_inference_service(kit: KitSpec) -> dict[str, Any]:
    """The InferenceService for ``kit.model`` (needs ``kit.storage_uri``)."""
    if not kit.storage_uri:
        raise KitError("storage_uri: required to render the InferenceService (oci://repo@sha256:... or s3://...)")
    base = kit.predictor or PredictorSpec()
    fields = {k: getattr(base, k) for k in base.__dataclass_fields__}
    fields.update(storage_uri=kit.storage_uri, image=None, runtime=base.runtime or RUNTIME_NAME)
    if not fields["service_account"]:
        fields["service_account"] = PREDICTOR_SA
    predictor = PredictorSpec(**fields)
    spec = ServiceSpec(
        name=kit.model,
        namespace=kit.namespace,
        predictor=predictor,
        deployment_mode=kit.resolved_mode(),
        labels=tuple(PART_OF.items()),
    )
    try:
        return render_isvc(spec)
    except IsvcSpecError as exc:
        raise KitError(str(exc)) from None


# --- whole kit ------------------------------------------------------------------


def render_kit(kit: KitSpec, include_cluster_scoped: bool = False) -> list[dict[str, Any]]:
    """Every namespaced object for ``kit`` (plus the ClusterServingRuntime when asked).

    Args:
        kit: the settings.
        include_cluster_scoped: prepend the ClusterServingRuntime (needs cluster-admin to apply).

    Returns:
        Plain dicts in apply order. Each one passes :func:`serving.cluster.validate.validate_manifest`.

    Raises:
        KitError: an impossible setting (the field is named).
    """
    kit.validate()
    ns = kit.namespace
    objs: list[dict[str, Any]] = []
    if include_cluster_scoped:
        objs.append(render_cluster_serving_runtime(kit))
    objs += render_service_accounts(ns)
    objs += render_rbac(ns)
    objs.append(render_serving_runtime(kit, ns))
    objs.append(render_network_policy(kit, ns))
    objs.append(render_pod_monitor(kit, ns))
    if kit.storage_uri:
        objs.append(render_inference_service(kit))
    return objs


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream."""
    return "---\n".join(yaml.safe_dump(o, sort_keys=False, default_flow_style=False) for o in objs)


def file_name(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_kit(objs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write one file per object into ``out_dir``; return the paths, apply order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, obj in enumerate(objs):
        path = out_dir / f"{i:02d}-{file_name(obj)}"
        path.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


# --- kustomize tree ----------------------------------------------------------------


def _dump(objs: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objs)


def kustomize_files(kit: KitSpec | None = None) -> dict[str, str]:
    """Relative path -> text of every file in the kustomize tree."""
    kit = kit or KitSpec()
    header = "# Generated by `python -m serving.cluster.render --write-kustomize`; edit render.py, not this file.\n"
    files: dict[str, str] = {}

    def kustomization(resources: list[str], namespace: str | None = None) -> str:
        doc: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
        if namespace:
            doc["namespace"] = namespace
        doc["resources"] = resources
        return header + yaml.safe_dump(doc, sort_keys=False)

    files["clusterwide/clusterservingruntime.yaml"] = header + _dump([render_cluster_serving_runtime(kit)])
    files["clusterwide/kustomization.yaml"] = kustomization(["clusterservingruntime.yaml"])
    # base: no namespace; the overlays set it (kustomize also fixes RoleBinding subjects)
    base = {
        "serviceaccounts.yaml": render_service_accounts(None),
        "rbac-pipeline.yaml": render_rbac(None)[:2],
        "rbac-rollout.yaml": render_rbac(None)[2:],
        "servingruntime.yaml": [render_serving_runtime(kit, None)],
    }
    for name, objs in base.items():
        files[f"base/{name}"] = header + _dump(objs)
    files["base/kustomization.yaml"] = kustomization(list(base))
    for mode in DeploymentMode:
        mk = KitSpec(namespace=kit.namespace, model=kit.model, mode=mode, runtime_image=kit.runtime_image,
                     prometheus_namespace=kit.prometheus_namespace)
        d = f"overlays/{mode.value.lower()}"
        files[f"{d}/networkpolicy.yaml"] = header + _dump([render_network_policy(mk, None)])
        files[f"{d}/podmonitor.yaml"] = header + _dump([render_pod_monitor(mk, None)])
        files[f"{d}/kustomization.yaml"] = kustomization(
            ["../../base", "networkpolicy.yaml", "podmonitor.yaml"], namespace=kit.namespace
        )
    return files


KSERVE_CONFIG_PATCH = "kserve-config/inferenceservice-config-patch.yaml"
# KServe's shipped `inferenceService` value (config/configmap/inferenceservice.yaml, kserve aaac4e29): a merge
# patch replaces the whole key, so the defaults are repeated beside the list.
KSERVE_INFERENCESERVICE_DEFAULTS = {"resource": {"cpuLimit": "1", "memoryLimit": "2Gi", "cpuRequest": "1", "memoryRequest": "2Gi"}}


def render_kserve_config_patch() -> dict[str, Any]:
    """A merge patch for KServe's ``inferenceservice-config``: keep the rollout's annotations out of revisions.

    KServe copies InferenceService annotations into the Knative revision template
    (``components/predictor.go`` buildPredictorResources) except those on
    ``serviceAnnotationDisallowedList`` (``configmap.go`` NewInferenceServicesConfig);
    without this every rollout-state write would create a revision. Apply with
    ``kubectl -n kserve patch configmap inferenceservice-config --type merge --patch-file ...``.
    """
    import json

    from serving.cluster.names import ROLLOUT_ANNOTATIONS

    value = dict(KSERVE_INFERENCESERVICE_DEFAULTS, serviceAnnotationDisallowedList=list(ROLLOUT_ANNOTATIONS))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {"inferenceService": json.dumps(value)},
    }


def write_kustomize_tree(root: Path = KIT_DIR) -> list[Path]:
    """(Re)write the kustomize tree under ``root``, and the KServe config patch beside it."""
    written = []
    patch = root / KSERVE_CONFIG_PATCH
    patch.parent.mkdir(parents=True, exist_ok=True)
    patch.write_text("# Generated by `python -m serving.cluster.render --write-kustomize`; a merge patch, not a resource:\n"
                     "# kubectl -n kserve patch configmap inferenceservice-config --type merge --patch-file <this file>\n"
                     + _dump([render_kserve_config_patch()]), encoding="utf-8")
    written.append(patch)
    for rel, text in kustomize_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.cluster.render", description=__doc__.split("\n")[0])
    parser.add_argument("--write-kustomize", action="store_true", help="rewrite the kustomize tree beside this file")
    args = parser.parse_args(argv)
    if args.write_kustomize:
        for p in write_kustomize_tree():
            print(p.relative_to(KIT_DIR))
        return 0
    print(to_yaml(render_kit(KitSpec(), include_cluster_scoped=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
