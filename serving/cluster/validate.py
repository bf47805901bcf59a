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
* ``PodMonitor`` (prometheus-operator CRD, not shipped anywhere we can read):
  a structural schema written from the prometheus-operator API reference
  for ``monitoring.coreos.com/v1``, covering the fields this kit uses and
  refusing any other field.

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


# --- PodMonitor: structural schema from the prometheus-operator API reference ----

_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}

PODMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _k8s_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": False,
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "honorLabels": {"type": "boolean"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


@functools.lru_cache(maxsize=1)
def _podmonitor_validator():
    return _validator_for(PODMONITOR_SCHEMA)


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
    _run(_podmonitor_validator(), obj, "the PodMonitor structural schema")


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
