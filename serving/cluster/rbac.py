"""A small RBAC evaluator: which API calls would a Role refuse?

Kubernetes authorizes a request when any rule of a bound Role matches its verb,
API group, resource (``resource`` or ``resource/subresource``) and, when the rule
lists ``resourceNames``, the object's name. A namespaced Role only covers its own
namespace. :func:`ungranted` applies exactly those rules to a list of calls, and
:func:`call_from_request` turns an HTTP request the Kubernetes client sent into
the call the API server would authorize (``GET`` on a collection is ``list``,
``?watch=true`` is ``watch``, ``DELETE`` on a collection is ``deletecollection``).

Errors::

    RbacError (ValueError)   a malformed Role or a request path that is not a Kubernetes API path
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

KNOWN_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


class RbacError(LlmopsError, ValueError):
    """A malformed Role, or a path that is not a Kubernetes resource path."""


@dataclass(frozen=True)
class ApiCall:
    """One authorization request, as the API server sees it."""

    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    api_group: str  # "" for the core group, e.g. "serving.kserve.io"
    resource: str  # plural, with "/subresource" when one is addressed (e.g. "inferenceservices/status")
    namespace: str | None  # None for cluster-scoped calls
    name: str | None = None  # object name, when the call addresses one object

    def __str__(self) -> str:
        group = self.api_group or "core"
        where = f"namespace {self.namespace}" if self.namespace else "cluster scope"
        obj = f" {self.name}" if self.name else ""
        return f"{self.verb} {group}/{self.resource}{obj} in {where}"


def _rule_matches(rule: Mapping[str, Any], call: ApiCall) -> bool:
    verbs = rule.get("verbs") or []
    groups = rule.get("apiGroups") or []
    resources = rule.get("resources") or []
    names = rule.get("resourceNames") or []
    if "*" not in verbs and call.verb not in verbs:
        return False
    if "*" not in groups and call.api_group not in groups:
        return False
    base = call.resource.split("/", 1)[0]
    if "*" not in resources and call.resource not in resources:
        # "pods/*" grants every subresource of pods, never pods itself
        if not ("/" in call.resource and f"{base}/*" in resources):
            return False
    if names and call.name not in names:
        return False
    return True


def _rules(role: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    kind = role.get("kind")
    if kind not in ("Role", "ClusterRole"):
        raise RbacError(f"expected a Role or ClusterRole, got kind {kind!r}")
    rules = role.get("rules") or []
    for i, rule in enumerate(rules):
        for key in ("verbs", "apiGroups", "resources"):
            if not isinstance(rule.get(key), list):
                raise RbacError(f"rules[{i}].{key}: must be a list")
        unknown = [v for v in rule["verbs"] if v != "*" and v not in KNOWN_VERBS]
        if unknown:
            raise RbacError(f"rules[{i}].verbs: unknown verb(s) {unknown}; known: {', '.join(KNOWN_VERBS)}")
    return rules


def is_granted(role: Mapping[str, Any], call: ApiCall) -> bool:
    """Whether ``role`` (bound in its own namespace, or a ClusterRole) grants ``call``."""
    rules = _rules(role)
    if role["kind"] == "Role":
        if call.namespace is None or call.namespace != (role.get("metadata") or {}).get("namespace"):
            return False
    return any(_rule_matches(r, call) for r in rules)


def ungranted(role: Mapping[str, Any], calls: Iterable[ApiCall]) -> list[ApiCall]:
    """The calls ``role`` does not grant, first occurrence of each, in order.

    Args:
        role: a ``rbac.authorization.k8s.io/v1`` Role (namespace in its metadata) or ClusterRole.
        calls: what the code asked the API server to do.

    Returns:
        The distinct calls that would get ``403 Forbidden``; empty when all are granted.
    """
    _rules(role)  # refuse a malformed Role even when there is nothing to check
    missing: list[ApiCall] = []
    for call in calls:
        if call not in missing and not is_granted(role, call):
            missing.append(call)
    return missing


_CORE = re.compile(r"^/api/(?P<version>[^/]+)(?P<rest>/.*)?$")
_GROUP = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?P<rest>/.*)?$")


def call_from_request(method: str, url: str) -> ApiCall:
    """Translate one HTTP request to the Kubernetes API into the call it authorizes.

    Args:
        method: HTTP method (GET, POST, PUT, PATCH, DELETE).
        url: the request path with its query string (host optional).

    Raises:
        RbacError: the path is not a namespaced or cluster resource path.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    query = parse_qs(parts.query)
    m = _CORE.match(path)
    group = ""
    if not m:
        m = _GROUP.match(path)
        if not m:
            raise RbacError(f"{method} {url}: not a Kubernetes resource path (/api/v1/... or /apis/GROUP/VERSION/...)")
        group = m.group("group")
    segs = [s for s in (m.group("rest") or "").split("/") if s]
    namespace = None
    if len(segs) >= 2 and segs[0] == "namespaces" and len(segs) != 2:
        namespace, segs = segs[1], segs[2:]
    if not segs:
        raise RbacError(f"{method} {url}: no resource in the path (discovery is not an RBAC-checked resource call)")
    resource, name, sub = segs[0], (segs[1] if len(segs) > 1 else None), (segs[2] if len(segs) > 2 else None)
    method = method.upper()
    watch = query.get("watch", ["false"])[0] in ("true", "1")
    if method == "GET":
        verb = "watch" if watch else ("get" if name else "list")
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        raise RbacError(f"{method} {url}: HTTP method has no RBAC verb")
    return ApiCall(
        verb=verb,
        api_group=group,
        resource=f"{resource}/{sub}" if sub else resource,
        namespace=namespace,
        name=name if verb not in ("create", "list", "watch", "deletecollection") else None,
    )
