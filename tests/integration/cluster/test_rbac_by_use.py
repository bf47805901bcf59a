"""RBAC proven by use, the checker itself: the emulator enforces the kit's Roles per service account
and :func:`tests.support.rbac_by_use.check_rbac_by_use` reports refused calls and unused grants.

The e2e (tests/e2e/test_cluster_in_a_box.py::test_rbac_proven_by_use) runs the same check over every
call of a whole release; this test shows the check can fail, in seconds.
"""

from __future__ import annotations

import copy

import pytest

from serving.backends.base import BackendUnavailable
from serving.backends.kserve import KServeBackend
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc
from tests.support.cluster_box import CONTROLLER_SA, PIPELINE_SA, kit_documents
from tests.support.kube_emulator import KubeEmulator
from tests.support.rbac_by_use import check_rbac_by_use

pytestmark = pytest.mark.integration

NS = "llmops"


def _spec(version: str, char: str) -> ServiceSpec:
    return ServiceSpec("llm", NS, PredictorSpec(storage_uri=f"oci://registry.example.com/llmops/llm@sha256:{char * 64}",
                                                model_version=version))


@pytest.fixture
def kube(tmp_path):
    with KubeEmulator(NS, tls=True) as kube:
        kube.bind_kit_rbac(kit_documents("base"))
        yield kube


def _backend(kube, tmp_path, account: str) -> KServeBackend:
    path = tmp_path / f"kubeconfig-{account}"
    kube.write_kubeconfig(path, token=kube.issue_token(account, NS))
    return KServeBackend(kubeconfig=str(path))


def _rollout_walk(backend: KServeBackend) -> None:
    backend.apply(render_isvc(_spec("1", "a")))
    current = backend.get("llm", NS)
    canary = render_isvc(_spec("2", "b"), canary_traffic_percent=10)
    canary["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    updated = backend.apply(canary)
    backend.patch_annotations("llm", NS, {"llmops.io/rollout-state": "{}"}, updated["metadata"]["resourceVersion"])
    backend.record_event(updated, "CanaryStep", "10%")


def test_a_full_walk_of_the_controller_account_is_granted_and_uses_every_grant(kube, tmp_path):
    _rollout_walk(_backend(kube, tmp_path, CONTROLLER_SA))
    report = check_rbac_by_use(kube, NS, accounts=(CONTROLLER_SA,))
    assert report.denied == [], report.text()
    assert report.unused[CONTROLLER_SA] == [], report.text()
    assert {(c.verb, c.resource) for c in report.used[CONTROLLER_SA]} >= {
        ("create", "inferenceservices"), ("get", "inferenceservices"), ("update", "inferenceservices"),
        ("patch", "inferenceservices"), ("create", "events")}


def test_a_call_outside_the_role_is_refused_and_reported(kube, tmp_path):
    backend = _backend(kube, tmp_path, CONTROLLER_SA)
    backend.apply(render_isvc(_spec("1", "a")))
    with pytest.raises(BackendUnavailable, match="403"):
        backend.delete("llm", NS)  # the backend's cleanup verb: not in the controller's Role
    report = check_rbac_by_use(kube, NS, accounts=(CONTROLLER_SA,))
    assert [(d.call.verb, d.status) for d in report.denied] == [("delete", 403)], report.text()
    assert kube.object("llm")  # nothing was deleted


def test_a_grant_nothing_uses_is_reported(kube, tmp_path):
    roles = kube.handler.roles[f"system:serviceaccount:{NS}:{PIPELINE_SA}"]
    widened = copy.deepcopy(roles[0])
    widened["rules"].append({"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["delete"]})
    kube.handler.roles[f"system:serviceaccount:{NS}:{PIPELINE_SA}"] = [widened]
    _rollout_walk(_backend(kube, tmp_path, PIPELINE_SA))
    report = check_rbac_by_use(kube, NS, accounts=(PIPELINE_SA,))
    assert ("serving.kserve.io", "inferenceservices", "delete", None) in report.unused[PIPELINE_SA], report.text()
    assert report.denied == []


def test_an_unknown_token_is_attributed_to_no_one(tmp_path):
    with KubeEmulator(NS, tls=True, require_auth=True) as kube:
        path = tmp_path / "kubeconfig"
        kube.write_kubeconfig(path, token="not-a-token")
        with pytest.raises(BackendUnavailable, match="401"):
            KServeBackend(kubeconfig=str(path)).get("llm", NS)
        assert [(e.user, e.status) for e in kube.log] == [("system:anonymous", 401)]
