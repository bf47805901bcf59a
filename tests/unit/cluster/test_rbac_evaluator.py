"""The RBAC evaluator applies Kubernetes' rule matching to a list of API calls."""

from __future__ import annotations

import pytest

from serving.cluster.rbac import ApiCall, RbacError, call_from_request, is_granted, ungranted
from serving.cluster.render import ROLLOUT_RULES, render_role

NS = "models"


def role(rules, namespace=NS, kind="Role"):
    meta = {"name": "r"}
    if kind == "Role":
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


ISVC = "serving.kserve.io"
READ_ISVC = {"apiGroups": [ISVC], "resources": ["inferenceservices"], "verbs": ["get", "list", "watch"]}


@pytest.mark.parametrize(
    "rules, call, granted",
    [
        ([READ_ISVC], ApiCall("get", ISVC, "inferenceservices", NS, "llm"), True),
        ([READ_ISVC], ApiCall("patch", ISVC, "inferenceservices", NS, "llm"), False),
        ([READ_ISVC], ApiCall("get", "", "inferenceservices", NS, "llm"), False),  # wrong group
        ([READ_ISVC], ApiCall("get", ISVC, "inferenceservices", "other", "llm"), False),  # other namespace
        ([READ_ISVC], ApiCall("get", ISVC, "inferenceservices/status", NS, "llm"), False),  # subresource needs its own rule
        ([{"apiGroups": [ISVC], "resources": ["inferenceservices/*"], "verbs": ["get"]}],
         ApiCall("get", ISVC, "inferenceservices/status", NS, "llm"), True),
        ([{"apiGroups": [ISVC], "resources": ["inferenceservices/*"], "verbs": ["get"]}],
         ApiCall("get", ISVC, "inferenceservices", NS, "llm"), False),
        ([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}], ApiCall("delete", "apps", "deployments", NS, "x"), True),
        ([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher"], "verbs": ["get"]}],
         ApiCall("get", "", "configmaps", NS, "kfp-launcher"), True),
        ([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher"], "verbs": ["get"]}],
         ApiCall("get", "", "configmaps", NS, "secrets-in-disguise"), False),
        ([READ_ISVC], ApiCall("list", ISVC, "inferenceservices", None), False),  # cluster-wide list, Role is namespaced
    ],
)
def test_rule_matching(rules, call, granted):
    assert is_granted(role(rules), call) is granted


def test_cluster_role_covers_every_namespace():
    assert is_granted(role([READ_ISVC], kind="ClusterRole"), ApiCall("list", ISVC, "inferenceservices", None))


def test_ungranted_lists_each_refused_call_once_in_order():
    calls = [
        ApiCall("get", ISVC, "inferenceservices", NS, "llm"),
        ApiCall("patch", ISVC, "inferenceservices", NS, "llm"),
        ApiCall("create", "", "events", NS),
        ApiCall("patch", ISVC, "inferenceservices", NS, "llm"),
    ]
    assert ungranted(role([READ_ISVC]), calls) == [calls[1], calls[2]]
    assert str(calls[1]) == "patch serving.kserve.io/inferenceservices llm in namespace models"


def test_rollout_role_grants_the_controller_calls_and_not_more():
    r = render_role("llmops-rollout", NS, ROLLOUT_RULES)
    allowed = [ApiCall(v, ISVC, "inferenceservices", NS, "llm") for v in ("get", "patch", "update")]
    allowed += [ApiCall("create", ISVC, "inferenceservices", NS), ApiCall("create", "", "events", NS)]
    assert ungranted(r, allowed) == []
    refused = [
        ApiCall("delete", ISVC, "inferenceservices", NS, "llm"),
        ApiCall("get", "", "secrets", NS, "mlflow"),
        ApiCall("create", "", "pods", NS),
        ApiCall("patch", ISVC, "inferenceservices", "kube-system", "llm"),
    ]
    assert ungranted(r, refused) == refused


def test_malformed_role_is_refused():
    with pytest.raises(RbacError, match=r"rules\[0\].verbs: unknown verb\(s\) \['read'\]"):
        ungranted(role([{"apiGroups": [""], "resources": ["pods"], "verbs": ["read"]}]), [])
    with pytest.raises(RbacError, match=r"rules\[0\].resources: must be a list"):
        ungranted(role([{"apiGroups": [""], "resources": "pods", "verbs": ["get"]}]), [])
    with pytest.raises(RbacError, match="expected a Role or ClusterRole, got kind 'RoleBinding'"):
        ungranted({"kind": "RoleBinding"}, [])


@pytest.mark.parametrize(
    "method, url, call",
    [
        ("GET", "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/llm",
         ApiCall("get", ISVC, "inferenceservices", NS, "llm")),
        ("GET", "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices",
         ApiCall("list", ISVC, "inferenceservices", NS)),
        ("GET", "http://127.0.0.1:5000/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices?watch=true&resourceVersion=3",
         ApiCall("watch", ISVC, "inferenceservices", NS)),
        ("POST", "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices",
         ApiCall("create", ISVC, "inferenceservices", NS)),
        ("PATCH", "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/llm",
         ApiCall("patch", ISVC, "inferenceservices", NS, "llm")),
        ("PUT", "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/llm/status",
         ApiCall("update", ISVC, "inferenceservices/status", NS, "llm")),
        ("DELETE", "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/llm",
         ApiCall("delete", ISVC, "inferenceservices", NS, "llm")),
        ("DELETE", "/api/v1/namespaces/models/pods", ApiCall("deletecollection", "", "pods", NS)),
        ("POST", "/api/v1/namespaces/models/events", ApiCall("create", "", "events", NS)),
        ("GET", "/api/v1/namespaces/models", ApiCall("get", "", "namespaces", None, "models")),
        ("GET", "/api/v1/nodes", ApiCall("list", "", "nodes", None)),
    ],
)
def test_call_from_request(method, url, call):
    assert call_from_request(method, url) == call


def test_non_resource_path_is_refused():
    with pytest.raises(RbacError, match="not a Kubernetes resource path"):
        call_from_request("GET", "/healthz")
    with pytest.raises(RbacError, match="no resource in the path"):
        call_from_request("GET", "/apis/serving.kserve.io/v1beta1")
