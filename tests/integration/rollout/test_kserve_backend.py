"""The ``kserve`` backend over real HTTP against the kmock Kubernetes emulator.

The official ``kubernetes`` client talks to :class:`tests.support.kube_emulator.KubeEmulator`,
which validates every written InferenceService against KServe's CRD (422 otherwise)
and fills ``status`` with the test-side KServe stand-in.
"""

from __future__ import annotations

import pytest

from serving.backends.base import BackendUnavailable, Conflict, NotFound, PredictorStatus
from serving.backends.factory import make_backend
from serving.isvc import DeploymentMode, render_isvc, validate_isvc
from serving.rollout.controller import RolloutController, RolloutRefused, predictor_version
from serving.rollout.state import LEASE_ANNOTATION, RolloutPhase, RolloutState
from tests.support.kube_emulator import KubeEmulator
from tests.support.rollout_fakes import NAME, NS, SLOW, RecordingHooks, ScriptedMetrics, service, strategy

pytestmark = pytest.mark.integration

ROLE_VERBS = {"get", "list", "watch", "patch", "update", "create"}  # the rollout Role on inferenceservices


@pytest.fixture
def kube():
    with KubeEmulator(namespace=NS) as emulator:
        yield emulator


@pytest.fixture
def backend(kube):
    import kubernetes

    return make_backend("kserve", api_client=kubernetes.client.ApiClient(kube.client_configuration()), namespace=NS)


def _seed(backend, mode=DeploymentMode.SERVERLESS):
    return backend.apply(render_isvc(service("1", mode)))


def test_crud_resource_version_and_errors(backend, kube):
    with pytest.raises(NotFound, match="not found"):
        backend.get(NAME, NS)
    created = _seed(backend)
    assert created["metadata"]["resourceVersion"]
    got = backend.get(NAME, NS)
    assert PredictorStatus.from_isvc(got).latest_ready == f"{NAME}-predictor-00001"
    with pytest.raises(Conflict, match="already exists"):
        backend.apply(render_isvc(service("1")))
    stale = dict(got, metadata=dict(got["metadata"], resourceVersion="1"))
    with pytest.raises(Conflict, match="has been modified"):
        backend.apply(stale)
    with pytest.raises(Conflict):
        backend.patch_annotations(NAME, NS, {"a": "b"}, "1")
    patched = backend.patch_annotations(NAME, NS, {"llmops.io/x": "1"}, got["metadata"]["resourceVersion"])
    assert patched["metadata"]["annotations"]["llmops.io/x"] == "1"
    removed = backend.patch_annotations(NAME, NS, {"llmops.io/x": None}, patched["metadata"]["resourceVersion"])
    assert "llmops.io/x" not in removed["metadata"]["annotations"]
    backend.delete(NAME, NS)
    backend.delete(NAME, NS)  # missing is not an error
    with pytest.raises(NotFound):
        backend.get(NAME, NS)


def test_invalid_object_is_refused_by_the_api(backend):
    obj = render_isvc(service("1"))
    obj["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    from serving.backends.base import BackendError

    with pytest.raises(BackendError, match=r"(?s)422.*canaryTrafficPercent.*not of type"):
        backend.apply(obj)


def test_tag_routing_endpoints_during_a_canary(backend):
    _seed(backend)
    obj = backend.get(NAME, NS)
    obj["spec"]["predictor"] = dict(render_isvc(service("2"))["spec"]["predictor"], canaryTrafficPercent=25)
    backend.apply(obj)
    eps = backend.endpoints(NAME, NS)
    assert eps.latest_url == f"http://latest-{NAME}-predictor.{NS}.example.com"
    assert eps.prev_url == f"http://prev-{NAME}-predictor.{NS}.example.com"
    assert eps.url == f"http://{NAME}.{NS}.example.com"
    traffic = {t.revision: t.percent for t in PredictorStatus.from_isvc(backend.get(NAME, NS)).traffic}
    assert traffic == {f"{NAME}-predictor-00002": 25, f"{NAME}-predictor-00001": 75}


def test_unreachable_api_server_says_the_fix(tmp_path):
    import kubernetes

    cfg = kubernetes.client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # discard port: nothing listens
    backend = make_backend("kserve", api_client=kubernetes.client.ApiClient(cfg), request_timeout_s=2)
    with pytest.raises(BackendUnavailable, match="cannot reach the Kubernetes API at http://127.0.0.1:9.*KUBECONFIG"):
        backend.get(NAME, NS)


def test_missing_kubeconfig_says_the_fix(tmp_path):
    with pytest.raises(BackendUnavailable, match="cannot load the kubeconfig .*nope.*in-cluster|KUBECONFIG"):
        make_backend("kserve", kubeconfig=str(tmp_path / "nope"))


def test_kubeconfig_file_is_used(kube, tmp_path):
    path = kube.write_kubeconfig(tmp_path / "config")
    backend = make_backend("kserve", kubeconfig=path)
    _seed(backend)
    assert backend.get(NAME, NS)["metadata"]["name"] == NAME


def _drive(ctrl, now=1_000_000.0, ticks=300):
    for _ in range(ticks):
        out = ctrl.step(now)
        if out.done:
            return out
        now += max(out.next_check_s, 0.1)
    raise AssertionError("rollout did not finish")


@pytest.mark.parametrize("mode", [DeploymentMode.SERVERLESS, DeploymentMode.STANDARD])
def test_rollout_promotes_over_the_kubernetes_api(kube, backend, mode):
    _seed(backend, mode)
    hooks = RecordingHooks()
    metrics = ScriptedMetrics(backend, NAME, NS, standin=kube.standin)
    ctrl = RolloutController(backend, service("2", mode), strategy(), metrics, hooks=hooks, holder="ctl")
    weights = []
    now = 1_000_000.0
    for _ in range(300):
        out = ctrl.step(now)
        obj = kube.object(NAME)
        validate_isvc({k: v for k, v in obj.items() if k != "status"})
        spec = obj["spec"]
        w = spec["canary"][0]["trafficPercent"] if spec.get("canary") else spec["predictor"].get("canaryTrafficPercent")
        if w is not None and (not weights or weights[-1] != w):
            weights.append(w)
        if out.done:
            break
        now += max(out.next_check_s, 0.1)
    assert out.result == "promoted"
    assert weights == [10, 25, 50, 100]
    final = kube.object(NAME)
    assert predictor_version(final["spec"]["predictor"]) == "2"
    assert "canary" not in final["spec"] and "canaryTrafficPercent" not in final["spec"]["predictor"]
    assert LEASE_ANNOTATION not in final["metadata"]["annotations"]
    assert RolloutState.from_obj(final).phase is RolloutPhase.PROMOTED
    assert hooks.kinds == ["promoted"]
    used = set(kube.calls)
    assert {res for _, res in used} == {"inferenceservices", "events"}
    assert {verb for verb, res in used if res == "inferenceservices"} <= ROLE_VERBS, used
    assert {verb for verb, res in used if res == "events"} == {"create"}
    reasons = [e["reason"] for e in kube.handler.events]
    assert reasons == ["RolloutStarted", "CanaryAdvanced", "CanaryAdvanced", "CanaryAdvanced", "CanaryPromoted"]


@pytest.mark.parametrize("mode", [DeploymentMode.SERVERLESS, DeploymentMode.STANDARD])
def test_rollout_rolls_back_over_the_kubernetes_api(kube, backend, mode):
    _seed(backend, mode)
    hooks = RecordingHooks()
    metrics = ScriptedMetrics(backend, NAME, NS, {"2": SLOW}, standin=kube.standin)
    ctrl = RolloutController(backend, service("2", mode), strategy(), metrics, hooks=hooks, holder="ctl")
    out = _drive(ctrl)
    assert out.result == "rolled_back"
    final = kube.object(NAME)
    assert predictor_version(final["spec"]["predictor"]) == "1"
    assert "canary" not in final["spec"] and "canaryTrafficPercent" not in final["spec"]["predictor"]
    traffic = PredictorStatus.from_isvc(final)
    if mode is DeploymentMode.SERVERLESS:
        serving = [t for t in traffic.traffic if t.percent == 100]
        assert kube.standin.revision_versions[serving[0].revision] == "1"
    assert hooks.kinds == ["rolled_back"] and "latency" in hooks.events[0][1].reason


def test_second_controller_refused_over_the_api(kube, backend):
    _seed(backend)
    metrics = ScriptedMetrics(backend, NAME, NS, standin=kube.standin)
    a = RolloutController(backend, service("2"), strategy(), metrics, holder="ctl-a")
    b = RolloutController(backend, service("2"), strategy(), metrics, holder="ctl-b")
    a.step(1_000_000.0)
    with pytest.raises(RolloutRefused, match="'ctl-a' holds the rollout lease"):
        b.step(1_000_001.0)


def test_record_event(kube, backend):
    obj = _seed(backend)
    backend.record_event(obj, "CanaryPromoted", "v2 promoted after 4 steps")
    assert ("create", "events") in kube.calls
    ev = kube.handler.events[-1]
    assert ev["involvedObject"]["name"] == NAME and ev["reason"] == "CanaryPromoted"
