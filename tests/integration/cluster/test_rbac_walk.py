"""RBAC walk: drive the real ``kserve`` backend against the Kubernetes API emulator
and check every call it made against the rollout controller's Role."""

from __future__ import annotations

import copy

import pytest

from serving.backends.kserve import KServeBackend
from serving.cluster.rbac import ApiCall, RbacError, call_from_request, ungranted
from serving.cluster.render import ROLLOUT_RULES, ROLLOUT_SA, render_role
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc
from tests.support.kube_emulator import KubeEmulator

pytestmark = pytest.mark.integration

NS = "models"
ISVC = "serving.kserve.io"
DIGEST = "sha256:" + "ab" * 32


def _predictor(version: str, digest_char: str) -> PredictorSpec:
    return PredictorSpec(
        storage_uri=f"oci://registry.example.com/llmops/llm@sha256:{digest_char * 64}",
        model_version=version,
        service_account="llmops-predictor",
    )


def recorded_calls(kube: KubeEmulator) -> list[ApiCall]:
    """Every resource call the emulator answered, as the API server would authorize it."""
    calls = []
    for request in list(kube.handler):
        try:
            calls.append(call_from_request(str(request.method.value), str(request.url)))
        except RbacError:
            continue  # discovery / non-resource paths are not RBAC resource checks
    return calls


@pytest.fixture(scope="module")
def rollout_walk():
    """A rollout's worth of backend calls: create, read, canary, annotate, promote, record an event."""
    with KubeEmulator(namespace=NS) as kube:
        import kubernetes

        backend = KServeBackend(api_client=kubernetes.client.ApiClient(kube.client_configuration()))
        spec = ServiceSpec("llm", NS, _predictor("1", "a"))
        created = backend.apply(render_isvc(spec))  # create
        current = backend.get("llm", NS)  # get
        canary = render_isvc(ServiceSpec("llm", NS, _predictor("2", "b")), canary_traffic_percent=10)
        canary["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        updated = backend.apply(canary)  # update
        annotated = backend.patch_annotations(
            "llm", NS, {"llmops.io/rollout-step": "1"}, updated["metadata"]["resourceVersion"]
        )  # patch
        backend.endpoints("llm", NS)  # get
        backend.record_event(annotated, "CanaryStep", "step 1: 10% to version 2")  # events create
        promoted = copy.deepcopy(backend.get("llm", NS))
        promoted["spec"]["predictor"].pop("canaryTrafficPercent")
        backend.apply(promoted)  # update
        calls = recorded_calls(kube)
        events = list(kube.handler.events)
    assert created["metadata"]["name"] == "llm" and events, "the walk did not reach the emulator"
    return calls


def test_walk_made_the_calls_a_rollout_makes(rollout_walk):
    verbs = {(c.verb, c.api_group, c.resource) for c in rollout_walk}
    assert verbs == {
        ("create", ISVC, "inferenceservices"),
        ("get", ISVC, "inferenceservices"),
        ("update", ISVC, "inferenceservices"),
        ("patch", ISVC, "inferenceservices"),
        ("create", "", "events"),
    }
    assert {c.namespace for c in rollout_walk} == {NS}


def test_rollout_role_grants_every_call_the_backend_made(rollout_walk):
    role = render_role(ROLLOUT_SA, NS, ROLLOUT_RULES)
    assert ungranted(role, rollout_walk) == []


@pytest.mark.parametrize("rule_index, verb", [(0, v) for v in ROLLOUT_RULES[0]["verbs"]] + [(1, "create")])
def test_walk_fails_when_a_verb_is_removed_from_the_role(rollout_walk, rule_index, verb):
    rules = copy.deepcopy(list(ROLLOUT_RULES))
    rules[rule_index]["verbs"].remove(verb)
    missing = ungranted(render_role(ROLLOUT_SA, NS, tuple(rules)), rollout_walk)
    assert missing, f"removing {verb!r} went unnoticed"
    assert {c.verb for c in missing} == {verb}


def test_role_bound_in_another_namespace_grants_nothing(rollout_walk):
    role = render_role(ROLLOUT_SA, "other", ROLLOUT_RULES)
    assert ungranted(role, rollout_walk) == list(dict.fromkeys(rollout_walk))


def test_delete_is_outside_the_rollout_role():
    with KubeEmulator(namespace=NS) as kube:
        import kubernetes

        backend = KServeBackend(api_client=kubernetes.client.ApiClient(kube.client_configuration()))
        backend.apply(render_isvc(ServiceSpec("llm", NS, _predictor("1", "a"))))
        backend.delete("llm", NS)
        calls = recorded_calls(kube)
    missing = ungranted(render_role(ROLLOUT_SA, NS, ROLLOUT_RULES), calls)
    assert missing == [ApiCall("delete", ISVC, "inferenceservices", NS, "llm")]


def test_pipeline_role_grants_every_call_the_rollout_step_makes(rollout_walk):
    """The pipeline's pods run the rollout step: their Role needs the same InferenceService calls."""
    from serving.cluster.render import PIPELINE_RULES, PIPELINE_SA

    assert ungranted(render_role(PIPELINE_SA, NS, PIPELINE_RULES), rollout_walk) == []
