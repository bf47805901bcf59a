"""LocalBackend against a tiny test-only server command: reconcile, concurrency, refusals."""

from __future__ import annotations

import json
import threading
from collections import Counter

import httpx
import psutil
import pytest

from serving.backends.base import Conflict, NotFound, PredictorStatus
from serving.backends.local import LocalBackend
from serving.isvc import IsvcSchemaError, PredictorSpec, ServiceSpec, render_isvc

from .conftest import isvc, make_model

NS = "default"


def _conds(obj):
    return {c["type"]: c for c in obj["status"]["conditions"]}


def test_canary_promote_rollback_and_restart(backends, tmp_path):
    b = backends()
    m1, m2 = make_model(tmp_path / "m1"), make_model(tmp_path / "m2")
    b.apply(isvc("demo", m1, "1"))
    obj = b.wait_ready("demo", NS, 60)
    st = PredictorStatus.from_isvc(obj)
    assert st.ready and st.latest_rolledout == "demo-predictor-00001"
    assert [(t.revision, t.percent, t.tag) for t in st.traffic] == [("demo-predictor-00001", 100, "latest")]

    b.apply(isvc("demo", m2, "2", canary=25))
    obj = b.wait_ready("demo", NS, 60)
    st = PredictorStatus.from_isvc(obj)
    assert st.latest_created == st.latest_ready == "demo-predictor-00002"
    assert {t.revision: t.percent for t in st.traffic} == {"demo-predictor-00002": 25, "demo-predictor-00001": 75}
    ep = b.endpoints("demo", NS)
    with httpx.Client(base_url=ep.url, timeout=10) as client:
        seen = Counter(client.post("/openai/v1/completions", json={}).json()["model_version"] for _ in range(40))
    assert seen == {"1": 30, "2": 10}  # smooth weighted round-robin: exact shares
    assert httpx.post(ep.latest_url + "/openai/v1/completions", json={}).json()["model_version"] == "2"
    assert httpx.post(ep.prev_url + "/openai/v1/completions", json={}).json()["model_version"] == "1"

    # a restarted controller: a new backend object on the same folder sees the same truth
    b2 = backends()
    assert b2.get("demo", NS)["status"] == b.get("demo", NS)["status"]
    assert b2.revision_urls("demo", NS, "demo-predictor-00002") == b.revision_urls("demo", NS, "demo-predictor-00002")

    # rollback as the controller does it: canary 0 (everything back on revision 1), then v1's spec at 0%: Knative
    # makes a new revision 3 for it (no reuse of revision 1); traffic stays on revision 1 until 3 is ready
    pids_before = b.pids("demo", NS)
    b2.apply(isvc("demo", m2, "2", canary=0))
    st = PredictorStatus.from_isvc(b2.get("demo", NS))
    assert {t.revision: t.percent for t in st.traffic} == {"demo-predictor-00002": 0, "demo-predictor-00001": 100}
    obj = b2.apply(isvc("demo", m1, "1", canary=0))
    st = PredictorStatus.from_isvc(obj)
    assert st.latest_created == "demo-predictor-00003" and st.latest_rolledout == "demo-predictor-00001"
    assert sum(t.percent for t in st.traffic if t.revision == "demo-predictor-00001") == 100
    obj = b2.wait_ready("demo", NS, 60)
    assert PredictorStatus.from_isvc(obj).latest_ready == "demo-predictor-00003"
    obj = b2.apply(isvc("demo", m1, "1"))
    st = PredictorStatus.from_isvc(obj)
    assert st.latest_created == st.latest_ready == st.latest_rolledout == "demo-predictor-00003"
    pids = b2.pids("demo", NS)
    assert pids["demo-predictor-00003"] != pids_before["demo-predictor-00001"]  # a new process, as on a cluster
    assert "demo-predictor-00002" not in pids
    assert not psutil.pid_exists(pids_before["demo-predictor-00002"]) or psutil.Process(
        pids_before["demo-predictor-00002"]
    ).status() == psutil.STATUS_ZOMBIE

    # v2's spec again: a new revision 4 as well, then it is rolled out
    obj = b2.apply(isvc("demo", m2, "2"))
    obj = b2.wait_ready("demo", NS, 60)
    st = PredictorStatus.from_isvc(obj)
    assert st.latest_created == "demo-predictor-00004"
    assert st.latest_rolledout == "demo-predictor-00004" and st.previous_rolledout == "demo-predictor-00003"

    pids = b2.pids("demo", NS)
    b2.delete("demo", NS)
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(NotFound, match="default/demo not found"):
        b.get("demo", NS)


def test_stopped_revisions_are_garbage_collected_as_knative_does(backends, tmp_path):
    """Knative's GC on the local backend: past ``min_non_active`` stale revisions, the oldest non-active revision is
    deleted with its log; the serving one and the rollback target stay (defaults: 20 kept, 48 h / 15 h retained)."""
    from serving.backends.local_traffic import RevisionGC

    b = backends(revision_gc=RevisionGC(retain_since_create_time_s=0.0, retain_since_last_active_time_s=0.0,
                                        min_non_active=1))
    models = [make_model(tmp_path / f"m{i}") for i in range(1, 5)]
    for i, m in enumerate(models, start=1):
        b.apply(isvc("demo", m, str(i)))
        b.wait_ready("demo", NS, 60)
    revisions = json.loads((b.state_dir / "state.json").read_text())["services"][f"{NS}/demo"]["revisions"]
    # 4 revisions: 00004 serves, 00003 is the rollback target, 00002 is the one non-active kept, 00001 is gone
    assert sorted(revisions) == [f"demo-predictor-0000{i}" for i in (2, 3, 4)]
    assert not b.log_path("demo", NS, "demo-predictor-00001").exists()
    assert b.log_path("demo", NS, "demo-predictor-00002").exists()
    assert PredictorStatus.from_isvc(b.get("demo", NS)).latest_ready == "demo-predictor-00004"


def test_broken_model_gives_ready_false_with_reason(backends, tmp_path):
    b = backends()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    b.apply(isvc("bad", broken, "1"))
    obj = b.wait_ready("bad", NS, 60)
    conds = _conds(obj)
    assert conds["Ready"]["status"] == "False" and conds["PredictorReady"]["reason"] == "RevisionFailed"
    msg = PredictorStatus.from_isvc(obj).reason
    assert "bad-predictor-00001" in msg and "exited with code 1" in msg and "cannot load model" in msg
    assert obj["status"]["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"


def test_missing_model_dir_fails_without_a_process(backends, tmp_path):
    b = backends()
    obj = b.apply(isvc("gone", tmp_path / "nowhere", "1"))
    assert PredictorStatus.from_isvc(obj).reason.endswith(f"model folder {tmp_path / 'nowhere'} does not exist")
    assert "gone-predictor-00001" not in b.pids("gone", NS)


def test_not_ready_within_timeout_fails_and_stops_the_process(backends, tmp_path):
    now = [1000.0]
    b = backends(clock=lambda: now[0], ready_timeout_s=30)
    obj = b.apply(isvc("slow", make_model(tmp_path / "m"), "1", args=("--startup_delay_s", "60")))
    assert _conds(obj)["PredictorReady"]["status"] == "Unknown"
    pid = b.pids("slow", NS)["slow-predictor-00001"]
    now[0] += 31
    obj = b.get("slow", NS)
    assert "not ready within 30s" in PredictorStatus.from_isvc(obj).reason
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_resource_version_conflicts_and_generation(backends, tmp_path):
    b = backends()
    m = make_model(tmp_path / "m")
    obj = b.apply(isvc("rv", m, "1"))
    rv = obj["metadata"]["resourceVersion"]
    assert obj["metadata"]["generation"] == 1
    patched = b.patch_annotations("rv", NS, {"llmops.io/step": "1"}, rv)
    assert int(patched["metadata"]["resourceVersion"]) > int(rv)
    assert patched["metadata"]["generation"] == 1  # metadata changes keep the generation
    with pytest.raises(Conflict, match=f"resourceVersion is {patched['metadata']['resourceVersion']}, the patch was based on {rv}"):
        b.patch_annotations("rv", NS, {"llmops.io/step": "2"}, rv)
    stale = dict(obj)
    with pytest.raises(Conflict, match="read it again and retry"):
        b.apply(stale)
    removed = b.patch_annotations("rv", NS, {"llmops.io/step": None}, patched["metadata"]["resourceVersion"])
    assert "llmops.io/step" not in removed["metadata"]["annotations"]
    fresh = isvc("rv", m, "1", canary=50)
    fresh["metadata"]["resourceVersion"] = removed["metadata"]["resourceVersion"]
    updated = b.apply(fresh)
    assert updated["metadata"]["generation"] == 2
    assert updated["status"]["observedGeneration"] == 2
    settled = b.wait_ready("rv", NS, 60)
    again = b.apply(isvc("rv", m, "1", canary=50))  # a no-op apply writes nothing
    assert again["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
    assert b.get("rv", NS)["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
    with pytest.raises(NotFound, match="drop metadata.resourceVersion to create it"):
        b.apply({**isvc("other", m, "1"), "metadata": {**isvc("other", m, "1")["metadata"], "resourceVersion": "3"}})


def test_one_writer_wins_across_processes_sharing_the_folder(backends, tmp_path):
    b = backends()
    obj = b.apply(isvc("race", make_model(tmp_path / "m"), "1"))
    rv = obj["metadata"]["resourceVersion"]
    results: list[str] = []

    def patch(i: int) -> None:
        other = LocalBackend(b.state_dir, server_command=b.server_command)  # like another process
        try:
            other.patch_annotations("race", NS, {"llmops.io/owner": str(i)}, rv)
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 5 + ["ok"]


def test_crd_violations_are_refused_with_schema_errors(backends, tmp_path):
    b = backends()
    obj = isvc("crd", make_model(tmp_path / "m"), "1")
    obj["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(IsvcSchemaError, match="spec.predictor.minReplicas: 'two' is not of type 'integer'"):
        b.apply(obj)
    assert b.services() == []  # nothing half written


def test_stored_object_with_status_passes_the_crd(backends, tmp_path):
    from serving.isvc import validate_isvc

    b = backends()
    b.apply(isvc("valid", make_model(tmp_path / "m"), "1", canary=None))
    validate_isvc(b.wait_ready("valid", NS, 60))


def test_sse_streams_through_the_router_unbuffered(backends, tmp_path):
    import time

    b = backends()
    b.apply(isvc("sse", make_model(tmp_path / "m"), "1"))
    b.wait_ready("sse", NS, 60)
    url = b.endpoints("sse", NS).url
    arrivals = []
    with httpx.stream("POST", url + "/openai/v1/completions", json={"stream": True}, timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-llmops-revision"] == "sse-predictor-00001"
        for line in resp.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic(), json.loads(line[5:])))
    assert [e["i"] for _, e in arrivals] == [0, 1, 2]
    # the server sleeps 0.3s between events: a buffering proxy would deliver them together
    assert arrivals[-1][0] - arrivals[0][0] > 0.4


def test_unreachable_revision_gives_502_json(backends, tmp_path):
    b = backends()
    b.apply(isvc("dead", make_model(tmp_path / "m"), "1"))
    b.wait_ready("dead", NS, 60)
    pid = b.pids("dead", NS)["dead-predictor-00001"]
    psutil.Process(pid).children()[0].kill() if psutil.Process(pid).children() else None
    psutil.Process(pid).kill()
    resp = httpx.post(b.endpoints("dead", NS).url + "/openai/v1/completions", json={}, timeout=10)
    assert resp.status_code == 502
    assert "dead-predictor-00001" in resp.json()["error"]["message"] and "unreachable" in resp.json()["error"]["message"]
    obj = b.get("dead", NS)
    assert _conds(obj)["Ready"]["status"] == "False"
    assert "after being ready" in PredictorStatus.from_isvc(obj).reason


def test_unknown_tag_is_404(backends, tmp_path):
    b = backends()
    b.apply(isvc("tags", make_model(tmp_path / "m"), "1"))
    b.wait_ready("tags", NS, 60)
    resp = httpx.get(b.endpoints("tags", NS).prev_url + "/v2/health/ready", timeout=10)
    assert resp.status_code == 404 and "no revision is tagged 'prev'" in resp.json()["error"]["message"]


def test_a_modelcar_pull_does_not_hold_the_state_lock(backends, tmp_path, micro_model, monkeypatch):
    """While a (slow) modelcar pull runs, other calls on the same state folder still answer."""
    import oci_images.pull as pull
    from components.build_image import build_image

    ref = build_image(micro_model, f"oci-layout:{tmp_path / 'layout'}", mode="modelcar", base=None).reference
    b, other = backends(), backends()
    other.services()  # the state folder exists
    answered: list[bool] = []
    real = pull.pull_model

    def slow_pull(*args, **kwargs):
        if not answered:  # the first (uncached) pull: is the lock free meanwhile?
            t = threading.Thread(target=lambda: answered.append(other.services() is not None))
            t.start()
            t.join(timeout=5)
            if t.is_alive():
                answered.append(False)
        return real(*args, **kwargs)

    monkeypatch.setattr(pull, "pull_model", slow_pull)
    spec = ServiceSpec(name="car", predictor=PredictorSpec(storage_uri=ref, model_version="1"))
    b.apply(render_isvc(spec))
    assert answered and answered[0] is True, "another call waited for the pull: it ran under the state lock"
    assert PredictorStatus.from_isvc(b.wait_ready("car", NS, 60)).ready
