"""Schema validation for every manifest the cluster kit ships or renders.

Which schema checks which kind:

* built-in kinds (ServiceAccount, Role, RoleBinding, NetworkPolicy, ...):
  the Kubernetes OpenAPI schemas shipped by ``kubernetes-validate``, strict
  mode (unknown fields refused), for :data:`KUBERNETES_VERSION`;
* ``InferenceService``: KServe's own CRD (:func:`serving.isvc.validate_isvc`);
* ``ServingRuntime`` / ``ClusterServingRuntime``: KServe's CRD for these is not
  in the repository, so the schema is derived from the ``kserve`` SDK's
  ``V1alpha1ServingRuntime`` model (every field name and type the SDK knows;
  unknown fields refused) with the Kubernetes core types inside it
  (``V1Container``, ``V1Volume``, ``V1Toleration``, ...) checked against the
  same strict Kubernetes schemas as the built-in kinds;
* ``PodMonitor``: prometheus-operator's own CRD (``serving/cluster/crds/
  podmonitors.crd.yaml``, or ``shared/prometheus-operator`` beside the
  repository), its ``openAPIV3Schema`` in strict mode: a field the schema does
  not name is refused, as ``kubectl apply --validate=strict`` refuses it
  (the API server would silently prune it, e.g. a misspelt relabelling).

Errors::

    ManifestError (ValueError)
    └── ManifestSchemaError   an object fails its kind's schema (kind/name and JSON path named)
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable

KUBERNETES_VERSION = "1.33"  # the Kubernetes version the kit is validated against
KSERVE_VERSION = "0.21"


class ManifestError(LlmopsError, ValueError):
    """Base class for cluster-kit manifest errors."""


class ManifestSchemaError(ManifestError):
    """A manifest does not validate against its kind's schema."""


def _label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def _schema_dir(strict: bool = True) -> Path:
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    suffix = "-local-strict" if strict else "-local"
    return root / f"v{KUBERNETES_VERSION}.0{suffix}"


K8S_DEFS_URI = "https://kubernetes.io/api/_definitions.json"  # the $id of kubernetes-validate's definitions


@functools.lru_cache(maxsize=1)
def _k8s_registry():
    from referencing import Registry, Resource

    with open(_schema_dir() / "_definitions.json", encoding="utf-8") as fh:
        defs = json.load(fh)
    return Resource.from_contents(defs) @ Registry()


def _k8s_ref(name: str) -> dict[str, str]:
    """A $ref to one Kubernetes definition, e.g. ``io.k8s.api.core.v1.Container``."""
    return {"$ref": f"{K8S_DEFS_URI}#/$defs/{name}"}


def _validator_for(schema: dict[str, Any]):
    import jsonschema

    return jsonschema.Draft202012Validator(schema, registry=_k8s_registry())


def validate_builtin(obj: dict[str, Any]) -> None:
    """Validate a built-in Kubernetes object (strict: unknown fields refused).

    Raises:
        ManifestSchemaError: the object fails, or no schema exists for its kind.
    """
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        raise ManifestSchemaError(
            f"{_label(obj)} fails the Kubernetes {KUBERNETES_VERSION} schema at {path}: {exc.message}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestSchemaError(f"{_label(obj)}: {exc.message}") from None


# --- ServingRuntime: schema derived from the kserve SDK model -------------------

_K8S_PREFIXES = {
    "V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
}


def _sdk_type_schema(type_name: str) -> dict[str, Any]:
    type_name = type_name.strip()
    scalars = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
               "float": {"type": "number"}, "object": {}}
    if type_name in scalars:
        return scalars[type_name]
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        return {"type": "array", "items": _sdk_type_schema(m.group(1))}
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        return {"type": "object", "additionalProperties": _sdk_type_schema(m.group(1))}
    if type_name.startswith("V1alpha1") or type_name.startswith("V1beta1"):
        return _sdk_model_schema(type_name)
    if type_name in _K8S_PREFIXES:
        return _k8s_ref(_K8S_PREFIXES[type_name])
    if type_name.startswith("V1"):
        return _k8s_ref(f"io.k8s.api.core.v1.{type_name[2:]}")
    raise ManifestError(f"no schema mapping for SDK type {type_name!r}")


@functools.lru_cache(maxsize=None)
def _sdk_model_schema(class_name: str) -> dict[str, Any]:
    import kserve.models

    cls = getattr(kserve.models, class_name, None)
    if cls is None:  # the SDK names a model it does not ship (V1alpha1WorkerSpec in 0.21): any object
        return {"type": "object"}
    props = {cls.attribute_map[attr]: _sdk_type_schema(t) for attr, t in cls.openapi_types.items()}
    return {"type": "object", "properties": props, "additionalProperties": False}


@functools.lru_cache(maxsize=1)
def _serving_runtime_validator():
    schema = dict(_sdk_model_schema("V1alpha1ServingRuntime"))
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    spec = dict(schema["properties"]["spec"])
    spec["required"] = ["containers"]
    schema["properties"] = {**schema["properties"], "spec": spec}
    return _validator_for(schema)


# --- PodMonitor: prometheus-operator's own CRD, strict ------------------------------


def podmonitor_crd_path() -> Path:
    """Locate prometheus-operator's PodMonitor CRD (``LLMOPS_PODMONITOR_CRD``, shared folder, or the shipped copy)."""
    import os

    repo = Path(__file__).resolve().parents[2]
    candidates = [Path(os.environ["LLMOPS_PODMONITOR_CRD"])] if os.environ.get("LLMOPS_PODMONITOR_CRD") else []
    candidates += [
        repo.parent / "shared" / "prometheus-operator" / "podmonitors.crd.yaml",
        repo / "serving" / "cluster" / "crds" / "podmonitors.crd.yaml",
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        "prometheus-operator's PodMonitor CRD was not found; set LLMOPS_PODMONITOR_CRD to podmonitors.crd.yaml "
        "(tried: " + ", ".join(str(c) for c in candidates) + ")"
    )


def _strict(schema: Any) -> Any:
    """The CRD schema as strict JSON Schema: unknown fields refused, int-or-string accepted as either."""
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_strict(v) if k not in ("enum", "required", "default", "example") else v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return {k: v for k, v in out.items() if not k.startswith("x-kubernetes-")}


@functools.lru_cache(maxsize=1)
def _podmonitor_validator():
    import yaml

    with open(podmonitor_crd_path(), encoding="utf-8") as fh:
        crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema.setdefault("required", [])
    schema["required"] = sorted(set(schema["required"]) | {"apiVersion", "kind", "metadata", "spec"})
    schema["properties"] = dict(schema["properties"], metadata=_k8s_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"))
    return _validator_for(schema)


def _run(validator, obj: dict[str, Any], what: str) -> None:
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:10]]
        raise ManifestSchemaError(f"{_label(obj)} fails {what}:\n  " + "\n  ".join(lines))


def validate_serving_runtime(obj: dict[str, Any]) -> None:
    """Validate a ServingRuntime or ClusterServingRuntime (SDK-derived schema)."""
    if obj.get("apiVersion") != "serving.kserve.io/v1alpha1":
        raise ManifestSchemaError(f"{_label(obj)}: apiVersion must be serving.kserve.io/v1alpha1")
    _run(_serving_runtime_validator(), obj, "the kserve SDK's V1alpha1ServingRuntime schema")


def validate_podmonitor(obj: dict[str, Any]) -> None:
    """Validate a PodMonitor against the structural schema (see module docstring)."""
    _run(_podmonitor_validator(), obj, "prometheus-operator's PodMonitor CRD schema")


def validate_manifest(obj: dict[str, Any]) -> None:
    """Validate one manifest with the schema for its kind.

    Raises:
        ManifestSchemaError: naming the object and each failing JSON path.
    """
    if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
        raise ManifestSchemaError(f"not a Kubernetes object (kind/apiVersion missing): {str(obj)[:80]}")
    kind = obj["kind"]
    if kind == "InferenceService":
        from serving.isvc import IsvcSchemaError, validate_isvc

        try:
            validate_isvc(obj)
        except IsvcSchemaError as exc:
            raise ManifestSchemaError(f"{_label(obj)}: {exc}") from None
    elif kind in ("ServingRuntime", "ClusterServingRuntime"):
        validate_serving_runtime(obj)
    elif kind == "PodMonitor":
        validate_podmonitor(obj)
    else:
        validate_builtin(obj)


def validate_all(objs: Iterable[dict[str, Any]]) -> int:
    """Validate every object; return how many were checked."""
    n = 0
    for obj in objs:
        validate_manifest(obj)
        n += 1
    return n
