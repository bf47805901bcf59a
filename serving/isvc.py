"""InferenceService rendering and validation against KServe's own CRD schema.

Errors::

    IsvcError (ValueError)
    ├── IsvcSpecError        a setting is impossible (the field is named)
    └── IsvcSchemaError      the rendered object fails the CRD's openAPIV3Schema

The schema is ``inferenceservices.crd.yaml`` from KServe, shipped in
``serving/cluster/crds`` (:func:`crd_path`; ``LLMOPS_KSERVE_CRD`` names another file).
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import copy
import enum
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from serving.cluster.names import MODEL_VERSION_ENV

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
PROMETHEUS_SCRAPE_ANNOTATION = "serving.kserve.io/enable-prometheus-scraping"
PROMETHEUS_PORT_ANNOTATION = "prometheus.kserve.io/port"
PROMETHEUS_PATH_ANNOTATION = "prometheus.kserve.io/path"
HTTP_PORT = 8080  # the model server's HTTP port (also serves /metrics)
METRICS_PATH = "/metrics"
GPU_RESOURCE = "nvidia.com/gpu"
HF_HOME = "/var/cache/huggingface"  # HF_HOME inside the server container (an emptyDir)
WRITABLE_DIRS = (("tmp", "/tmp"), ("hf-cache", HF_HOME))  # emptyDir volume name -> mount path
MODEL_FORMAT = "llmops-llm"  # the modelFormat our ServingRuntime declares
MODEL_VERSION_POD_LABEL = "llmops.dev/model-version"  # on vLLM-served pods (their metrics have no version label)
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


class IsvcError(LlmopsError, ValueError):
    """Base class for InferenceService rendering errors."""


class IsvcSpecError(IsvcError):
    """An impossible or unsafe setting; the message names the field."""


class IsvcSchemaError(IsvcError):
    """The object does not validate against KServe's CRD schema."""


class DeploymentMode(str, enum.Enum):
    """KServe deployment modes (annotation ``serving.kserve.io/deploymentMode``)."""

    SERVERLESS = "Serverless"  # Knative: canaryTrafficPercent, revisions, tag routing
    STANDARD = "Standard"  # raw Deployments (formerly RawDeployment): spec.canary[] via Gateway API

    @classmethod
    def parse(cls, value: "str | DeploymentMode") -> "DeploymentMode":
        if isinstance(value, cls):
            return value
        aliases = {"serverless": cls.SERVERLESS, "standard": cls.STANDARD, "rawdeployment": cls.STANDARD}
        try:
            return aliases[str(value).strip().lower()]
        except KeyError:
            raise IsvcSpecError(
                f"deployment_mode: unknown mode {value!r}; use one of {', '.join(m.value for m in cls)}"
            ) from None


def openai_base_of(predictor: dict[str, Any]) -> str:
    """Where the OpenAI routes of a rendered predictor's runtime live (``/v1`` for vLLM's own server)."""
    runtime = ((predictor or {}).get("model") or {}).get("runtime")
    for profile in RUNTIME_PROFILES.values():
        if profile.runtime == runtime:
            return profile.openai_base
    return RUNTIME_PROFILES[ServingRuntimeKind.LLMOPS].openai_base


def parse_node_selector(items, what: str) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings (each may hold several, comma-separated) -> node-selector pairs.

    Raises:
        IsvcSpecError: an item is not KEY=VALUE; the message starts with ``what`` (the flag or parameter).
    """
    pairs = []
    for raw in items:
        for part in filter(None, (p.strip() for p in str(raw).split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise IsvcSpecError(f"{what} {part!r}: write KEY=VALUE, e.g. nvidia.com/gpu.present=true")
            pairs.append((key, value))
    return tuple(pairs)


def require_digest(ref: str, field_name: str) -> None:
    """Refuse an image or ``oci://`` reference that is not pinned by digest."""
    if not DIGEST_RE.search(ref):
        raise IsvcSpecError(
            f"{field_name}: {ref!r} is not pinned by digest; use repo@sha256:<64 hex> "
            "(a moving tag would let the served bytes change under the rollout)"
        )


class ServingRuntimeKind(str, enum.Enum):
    """Which model server serves a release (see :data:`RUNTIME_PROFILES`)."""

    LLMOPS = "llmops"  # our runtime (python -m serving), ServingRuntime llmops-llm
    VLLM = "vllm"  # KServe's kserve-vllmserver: vLLM's own OpenAI server
    HUGGINGFACE = "huggingfaceserver"  # KServe's kserve-huggingfaceserver (vLLM backend on GPUs)

    @classmethod
    def parse(cls, value: "str | ServingRuntimeKind") -> "ServingRuntimeKind":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise IsvcSpecError(
                f"serving_runtime: unknown runtime {value!r}; use one of {', '.join(k.value for k in cls)}"
            ) from None


@dataclass(frozen=True)
class RuntimeProfile:
    """How an InferenceService names a runtime and what arguments it adds.

    The formats and runtime names are those of KServe's own runtime files
    (``config/runtimes/kserve-vllmserver.yaml``: modelFormat ``vLLM``;
    ``kserve-huggingfaceserver.yaml``: modelFormat ``huggingface``; see ``shared/kserve``).
    KServe appends ``spec.predictor.model.args`` to the runtime container's own args.
    """

    kind: ServingRuntimeKind
    runtime: str  # (Cluster)ServingRuntime name
    model_format: str  # spec.predictor.model.modelFormat.name
    version_arg: bool  # the server takes --model_version (labels its own metrics)
    # where the OpenAI routes are: KServe's servers mount them at /openai/v1; vLLM's own api_server at /v1
    # (runtime-kserve-vllmserver.yaml runs vllm.entrypoints.openai.api_server; its probes read /v1/models)
    openai_base: str = "/openai/v1"

    def args(self, gpus: int) -> list[str]:
        """Arguments for ``gpus`` GPUs per replica (0: CPU)."""
        if self.kind is ServingRuntimeKind.HUGGINGFACE:
            # huggingfaceserver/__main__.py: --backend picks vLLM or transformers; vLLM needs a GPU here.
            out = ["--backend=vllm" if gpus else "--backend=huggingface"]
        else:
            out = []
        if gpus > 1 and self.kind is not ServingRuntimeKind.LLMOPS:
            out.append(f"--tensor-parallel-size={gpus}")  # vLLM engine arg: shard over the pod's GPUs
        return out


RUNTIME_PROFILES: dict[ServingRuntimeKind, RuntimeProfile] = {
    ServingRuntimeKind.LLMOPS: RuntimeProfile(ServingRuntimeKind.LLMOPS, "llmops-llm", MODEL_FORMAT, True),
    ServingRuntimeKind.VLLM: RuntimeProfile(ServingRuntimeKind.VLLM, "kserve-vllmserver", "vLLM", False, "/v1"),
    ServingRuntimeKind.HUGGINGFACE: RuntimeProfile(
        ServingRuntimeKind.HUGGINGFACE, "kserve-huggingfaceserver", "huggingface", False
    ),
}


@dataclass(frozen=True)
class PredictorSpec:
    """What one revision of the predictor serves and how it is sized."""

    storage_uri: str | None = None  # model location: oci://repo@sha256:..., s3://..., gs://..., pvc://...
    image: str | None = None  # full serving image by digest (instead of storage_uri + runtime)
    runtime: str | None = "llmops-llm"  # ServingRuntime name when storage_uri is used
    model_version: str = ""  # registry version, passed to the server as LLMOPS_MODEL_VERSION
    args: tuple[str, ...] = ()  # extra model-server arguments
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables
    cpu: str = "2"  # CPU request and limit
    memory: str = "8Gi"  # memory request and limit
    gpus: int = 0  # nvidia.com/gpu limit
    node_selector: tuple[tuple[str, str], ...] = ()  # e.g. (("nvidia.com/gpu.present", "true"),)
    tolerations: tuple[dict, ...] = ()  # Kubernetes toleration objects
    min_replicas: int = 1  # lower bound for the autoscaler
    max_replicas: int = 1  # upper bound for the autoscaler
    scale_metric: str = "concurrency"  # concurrency suits LLMs better than cpu
    scale_target: int = 8  # in-flight requests per replica before scaling out
    service_account: str | None = None  # for storage credentials
    require_gpu_node_selector: bool = True  # a GPU request must say where GPUs are
    protocol_version: str | None = None  # "v1" or "v2" (KServe default v1); None leaves it unset
    serving_runtime: str = ServingRuntimeKind.LLMOPS.value  # llmops, vllm or huggingfaceserver (with storage_uri)

    @property
    def profile(self) -> RuntimeProfile:
        """The runtime's :class:`RuntimeProfile`."""
        return RUNTIME_PROFILES[ServingRuntimeKind.parse(self.serving_runtime)]

    def validate(self) -> None:
        """Raise :class:`IsvcSpecError` naming the first impossible field."""
        kind = ServingRuntimeKind.parse(self.serving_runtime)
        if kind is not ServingRuntimeKind.LLMOPS and not self.storage_uri:
            raise IsvcSpecError(f"serving_runtime: {kind.value} serves a model from storage_uri; set storage_uri")
        if kind is not ServingRuntimeKind.LLMOPS and self.model_version and not LABEL_VALUE_RE.fullmatch(
            self.model_version
        ):
            raise IsvcSpecError(
                f"model_version: {self.model_version!r} must be a Kubernetes label value for {kind.value} "
                "(it becomes the pod label that tells canary from stable): letters, digits, '-', '_', '.', <= 63"
            )
        if bool(self.storage_uri) == bool(self.image):
            raise IsvcSpecError("predictor: set exactly one of storage_uri or image")
        if self.image:
            require_digest(self.image, "image")
        if self.storage_uri and self.storage_uri.startswith("oci://"):
            require_digest(self.storage_uri, "storage_uri")
        if self.min_replicas < 0:
            raise IsvcSpecError(f"min_replicas: must be >= 0, got {self.min_replicas}")
        if self.max_replicas < 1:
            raise IsvcSpecError(f"max_replicas: must be >= 1, got {self.max_replicas}")
        if self.min_replicas > self.max_replicas:
            raise IsvcSpecError(
                f"min_replicas: {self.min_replicas} is above max_replicas {self.max_replicas}"
            )
        if self.gpus < 0:
            raise IsvcSpecError(f"gpus: must be >= 0, got {self.gpus}")
        if self.gpus and self.require_gpu_node_selector and not self.node_selector:
            raise IsvcSpecError(
                "node_selector: a GPU request needs a node selector for GPU nodes "
                "(e.g. nvidia.com/gpu.present=true), or set require_gpu_node_selector=False"
            )
        if self.scale_metric not in ("cpu", "memory", "concurrency", "rps"):
            raise IsvcSpecError(
                f"scale_metric: {self.scale_metric!r} is not one of cpu, memory, concurrency, rps"
            )
        if self.scale_target < 1:
            raise IsvcSpecError(f"scale_target: must be >= 1, got {self.scale_target}")
        if self.protocol_version not in (None, "v1", "v2"):
            raise IsvcSpecError(f"protocol_version: {self.protocol_version!r} is not one of v1, v2")
        for key, value in self.node_selector:
            if not key or not isinstance(value, str):
                raise IsvcSpecError(f"node_selector: {key!r}={value!r} needs a label key and a string value")
        for tol in self.tolerations:
            if tol.get("operator", "Equal") not in ("Equal", "Exists"):
                raise IsvcSpecError(f"tolerations: operator {tol.get('operator')!r} is not Equal or Exists")


@dataclass(frozen=True)
class ServiceSpec:
    """One InferenceService: name, namespace, mode and its predictor."""

    name: str  # DNS-1035 label: lowercase letters, digits, '-'
    namespace: str = "default"  # Kubernetes namespace
    predictor: PredictorSpec = field(default_factory=PredictorSpec)
    deployment_mode: DeploymentMode = DeploymentMode.SERVERLESS
    tag_routing: bool = True  # expose latest-/prev- addresses for probes
    labels: tuple[tuple[str, str], ...] = ()  # extra metadata labels
    annotations: tuple[tuple[str, str], ...] = ()  # extra metadata annotations
    prometheus_scraping: bool = True  # KServe scraping annotations (port 8080, /metrics)

    def validate(self) -> None:
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.name or ""):
            raise IsvcSpecError(
                f"name: {self.name!r} is not a DNS-1035 label (lowercase letters, digits, '-', "
                "start with a letter, at most 63 characters)"
            )
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.namespace or ""):
            raise IsvcSpecError(f"namespace: {self.namespace!r} is not a valid namespace name")
        DeploymentMode.parse(self.deployment_mode)
        self.predictor.validate()


def render_predictor(p: PredictorSpec) -> dict[str, Any]:
    """The ``spec.predictor`` object for one revision."""
    p.validate()
    resources: dict[str, Any] = {
        "requests": {"cpu": p.cpu, "memory": p.memory},
        "limits": {"cpu": p.cpu, "memory": p.memory},
    }
    if p.gpus:
        resources["limits"][GPU_RESOURCE] = str(p.gpus)
        resources["requests"][GPU_RESOURCE] = str(p.gpus)
    env = [{"name": MODEL_VERSION_ENV, "value": p.model_version}] if p.model_version else []
    env += [{"name": k, "value": v} for k, v in p.env]
    security = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    pred: dict[str, Any] = {
        "minReplicas": p.min_replicas,
        "maxReplicas": p.max_replicas,
        "scaleMetric": p.scale_metric,
        "scaleTarget": p.scale_target,
    }
    if p.storage_uri:
        profile = p.profile
        model: dict[str, Any] = {
            "modelFormat": {"name": profile.model_format},
            "storageUri": p.storage_uri,
            "resources": resources,
        }
        runtime = p.runtime if profile.kind is ServingRuntimeKind.LLMOPS else profile.runtime
        if runtime:
            model["runtime"] = runtime
        if p.protocol_version:
            model["protocolVersion"] = p.protocol_version
        args = profile.args(p.gpus) + list(p.args)
        if not profile.version_arg and p.model_version:
            # vLLM's metrics carry model_name only: the pod label tells versions apart (PodMonitor relabelling).
            pred["labels"] = {MODEL_VERSION_POD_LABEL: p.model_version}
        elif p.model_version and not any(a.startswith("--model_version") for a in args):
            # the server labels its metrics with model_version; the runtime's args lack it
            args.append(f"--model_version={p.model_version}")
        if args:
            model["args"] = args
        if env:
            model["env"] = env
        pred["model"] = model
    else:
        container: dict[str, Any] = {
            "name": "kserve-container",
            "image": p.image,
            "resources": resources,
            "securityContext": security,
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            # a read-only root filesystem still needs somewhere to write
            "volumeMounts": [{"name": v, "mountPath": m} for v, m in WRITABLE_DIRS],
        }
        if p.args:
            container["args"] = list(p.args)
        if env:
            container["env"] = env
        pred["containers"] = [container]
        pred["volumes"] = [{"name": v, "emptyDir": {}} for v, _ in WRITABLE_DIRS]
    if p.service_account:
        pred["serviceAccountName"] = p.service_account
    if p.node_selector:
        pred["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        pred["tolerations"] = [dict(t) for t in p.tolerations]
    return pred


def render_isvc(spec: ServiceSpec, canary_traffic_percent: int | None = None) -> dict[str, Any]:
    """Render a full InferenceService and validate it against the CRD.

    Args:
        spec: the service.
        canary_traffic_percent: Serverless mode only; share of traffic for the
            newest revision (the rest stays on the last rolled-out one).

    Raises:
        IsvcSpecError: an impossible setting (the field is named).
        IsvcSchemaError: the result does not validate against KServe's CRD.
    """
    spec.validate()
    mode = DeploymentMode.parse(spec.deployment_mode)
    annotations = {DEPLOYMENT_MODE_ANNOTATION: mode.value}
    if spec.tag_routing:
        annotations[TAG_ROUTING_ANNOTATION] = "true"
    if spec.prometheus_scraping:
        annotations[PROMETHEUS_SCRAPE_ANNOTATION] = "true"
        annotations[PROMETHEUS_PORT_ANNOTATION] = str(HTTP_PORT)
        annotations[PROMETHEUS_PATH_ANNOTATION] = METRICS_PATH
    annotations.update(dict(spec.annotations))
    labels = {"app.kubernetes.io/managed-by": "llmops", "app.kubernetes.io/name": spec.name}
    labels.update(dict(spec.labels))
    predictor = render_predictor(spec.predictor)
    if canary_traffic_percent is not None:
        if mode is not DeploymentMode.SERVERLESS:
            raise IsvcSpecError(
                "canary_traffic_percent: only Serverless mode uses canaryTrafficPercent; "
                "Standard mode takes spec.canary[] entries"
            )
        if not 0 <= canary_traffic_percent <= 100:
            raise IsvcSpecError(f"canary_traffic_percent: must be 0..100, got {canary_traffic_percent}")
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    obj = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }
    validate_isvc(obj)
    return obj


def render_standard_canary(spec: ServiceSpec, canary: PredictorSpec, traffic_percent: int) -> dict[str, Any]:
    """Render a Standard-mode InferenceService whose canary gets a traffic share.

    Standard mode has no revisions: the stable predictor stays in
    ``spec.predictor`` and the candidate goes in one ``spec.canary[]`` entry with
    ``trafficPercent`` (KServe splits traffic through the Gateway API).

    Args:
        spec: the service; ``spec.predictor`` is the stable version.
        canary: the candidate predictor.
        traffic_percent: share of traffic for the candidate, 0..100.

    Raises:
        IsvcSpecError: Serverless mode, a bad share, or a bad predictor (field named).
        IsvcSchemaError: the result does not validate against KServe's CRD.
    """
    mode = DeploymentMode.parse(spec.deployment_mode)
    if mode is not DeploymentMode.STANDARD:
        raise IsvcSpecError(
            "deployment_mode: spec.canary[] is for Standard mode; Serverless canaries use "
            "render_isvc(spec, canary_traffic_percent=N)"
        )
    if isinstance(traffic_percent, bool) or not isinstance(traffic_percent, int) or not 0 <= traffic_percent <= 100:
        raise IsvcSpecError(f"traffic_percent: must be an integer 0..100, got {traffic_percent!r}")
    try:
        canary.validate()
    except IsvcSpecError as exc:
        raise IsvcSpecError(f"canary.{exc}") from None
    obj = render_isvc(spec)
    candidate = render_predictor(canary)
    if "model" in candidate:
        # the CRD requires a container name on a canary's model (not on spec.predictor's)
        candidate["model"] = {"name": "kserve-container", **candidate["model"]}
    obj["spec"]["canary"] = [{"predictor": candidate, "trafficPercent": traffic_percent}]
    validate_isvc(obj)
    return obj


def crd_path() -> Path:
    """KServe's InferenceService CRD: ``$LLMOPS_KSERVE_CRD`` when set, else the copy packaged with llmops.

    Nothing outside the installed package is probed (a pod has no checkout beside it).
    """
    explicit = os.environ.get("LLMOPS_KSERVE_CRD")
    path = Path(explicit) if explicit else Path(__file__).resolve().parent / "cluster" / "crds" / "inferenceservices.crd.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"KServe's InferenceService CRD was not found at {path}; set LLMOPS_KSERVE_CRD to inferenceservices.crd.yaml"
        )
    return path


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema
    import yaml

    with open(crd_path(), encoding="utf-8") as fh:
        # the CRD is ~2 MB: libyaml parses it several times faster than the pure-Python loader
        crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = _strip_k8s_extensions(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def _strip_k8s_extensions(schema: Any) -> Any:
    """Turn Kubernetes' structural-schema extensions into plain JSON Schema.

    ``x-kubernetes-int-or-string`` fields accept both types (jsonschema would
    otherwise reject a quantity like ``"2"`` typed as integer/string).
    """
    if isinstance(schema, dict):
        out = {k: _strip_k8s_extensions(v) for k, v in schema.items()}
        if out.pop("x-kubernetes-int-or-string", False):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(schema, list):
        return [_strip_k8s_extensions(v) for v in schema]
    return schema


def validate_isvc(obj: dict[str, Any]) -> None:
    """Validate an InferenceService object against KServe's CRD schema.

    Raises:
        IsvcSchemaError: listing every violation with its JSON path.
    """
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        raise IsvcSchemaError(f"expected {API_VERSION} {KIND}, got {obj.get('apiVersion')} {obj.get('kind')}")
    body = copy.deepcopy(obj)
    errors = sorted(_validator().iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:10]]
        raise IsvcSchemaError("InferenceService fails KServe's CRD schema:\n  " + "\n  ".join(lines))
