"""Pure reconcile logic of the local backend: KServe's traffic and rolled-out bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.backends.base import TrafficTarget as T
from serving.backends.local_launch import LocalSpecError, check_supported, launch_spec, resolve_model_dir
from serving.backends.local_traffic import (
    RevisionGC,
    revisions_to_collect,
    RevisionBookkeeping as S,
    predictor_condition,
    predictor_template,
    propagate_rollout,
    reconcile_traffic,
    revision_name,
    revisions_to_keep,
    route_traffic,
    same_template,
)
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc

R1, R2, R3 = (revision_name("demo", i) for i in (1, 2, 3))


def test_revision_names_are_knative_style():
    assert R1 == "demo-predictor-00001"
    assert revision_name("x", 123) == "x-predictor-00123"


@pytest.mark.parametrize(
    "state, canary, tags, expected",
    [
        # nothing ready yet: no traffic
        (S(R1, None, None, None), None, True, ()),
        # first revision: everything to latest (canary ignored without a rolled-out revision)
        (S(R1, R1, None, None), None, True, (T(R1, 100, True, "latest"),)),
        (S(R1, R1, None, None), 10, False, (T(R1, 100, True, None),)),
        # canary 25 on a ready new revision
        (S(R2, R2, R1, None), 25, True, (T(R2, 25, True, "latest"), T(R1, 75, False, "prev"))),
        # prev is tagged even without tag routing (KServe does so); latest only with it
        (S(R2, R2, R1, None), 25, False, (T(R2, 25, True, None), T(R1, 75, False, "prev"))),
        # canary whose revision is not ready yet: "latest" still resolves to the last ready one
        (S(R2, R1, R1, None), 25, True, (T(R1, 25, True, "latest"), T(R1, 75, False, "prev"))),
        # rollback step: canary 0 sends everything to latestRolledoutRevision
        (S(R2, R2, R1, None), 0, True, (T(R2, 0, True, "latest"), T(R1, 100, False, "prev"))),
        # canary 100: no prev target
        (S(R2, R2, R1, None), 100, True, (T(R2, 100, True, "latest"),)),
        # promote: field removed
        (S(R2, R2, R1, None), None, True, (T(R2, 100, True, "latest"),)),
    ],
)
def test_route_traffic(state, canary, tags, expected):
    assert route_traffic(state, canary, tags) == expected


@pytest.mark.parametrize(
    "state, traffic, expected",
    [
        # latest ready takes 100%: it becomes rolled out, the former one previous
        (S(R2, R2, R1, None), (T(R2, 100, True),), S(R2, R2, R2, R1)),
        # first rollout
        (S(R1, R1, None, None), (T(R1, 100, True),), S(R1, R1, R1, None)),
        # canary share: nothing rolled out yet
        (S(R2, R2, R1, None), (T(R2, 25, True), T(R1, 75, False, "prev")), S(R2, R2, R1, None)),
        # failed canary (latest ready is still R1): unchanged
        (S(R2, R1, R1, None), (T(R1, 25, True), T(R1, 75, False)), S(R2, R1, R1, None)),
        # canary set again on a promoted spec: split over the same revision -> fall back to previous
        (S(R2, R2, R2, R1), (T(R2, 20, True), T(R2, 80, False)), S(R2, R2, R1, R1)),
    ],
)
def test_propagate_rollout(state, traffic, expected):
    assert propagate_rollout(state, traffic) == expected


def test_full_canary_lifecycle_reaches_kserve_fixed_points():
    # v1 first apply
    st, tr = reconcile_traffic(S(R1, R1, None, None), None, True)
    assert st == S(R1, R1, R1, None) and tr == (T(R1, 100, True, "latest"),)
    # v2 with canary 25, ready
    st, tr = reconcile_traffic(S(R2, R2, st.latest_rolledout, None), 25, True)
    assert st == S(R2, R2, R1, None)
    assert tr == (T(R2, 25, True, "latest"), T(R1, 75, False, "prev"))
    # promote
    st, tr = reconcile_traffic(st, None, True)
    assert st == S(R2, R2, R2, R1) and tr == (T(R2, 100, True, "latest"),)
    # a canary percent set again after promotion rolls the split back onto R1
    st2, tr2 = reconcile_traffic(st, 20, True)
    assert st2.latest_rolledout == R1
    assert tr2 == (T(R2, 20, True, "latest"), T(R1, 80, False, "prev"))


def test_rollback_restores_the_old_spec_as_a_new_cold_revision():
    st, tr = reconcile_traffic(S(R2, R2, R1, None), 0, True)
    assert tr == (T(R2, 0, True, "latest"), T(R1, 100, False, "prev"))
    # v1's spec at 0% is a new generation: Knative makes R3 for it; while R3 starts, R1 keeps 100%
    st, tr = reconcile_traffic(S(R3, R2, st.latest_rolledout, st.previous_rolledout), 0, True)
    assert st == S(R3, R2, R1, None) and tr == (T(R2, 0, True, "latest"), T(R1, 100, False, "prev"))
    assert revisions_to_keep(st, tr) == {R1, R2, R3}
    # R3 ready and the canary percent dropped: R3 takes everything, R1 stays as the rollback target, R2 goes
    st, tr = reconcile_traffic(S(R3, R3, st.latest_rolledout, st.previous_rolledout), None, True)
    assert st == S(R3, R3, R3, R1) and tr == (T(R3, 100, True, "latest"),)
    assert revisions_to_keep(st, tr) == {R1, R3}


@pytest.mark.parametrize(
    "state, traffic, keep",
    [
        (S(R1, R1, R1, None), (T(R1, 100, True),), {R1}),
        (S(R2, R2, R1, None), (T(R2, 25, True), T(R1, 75, False)), {R1, R2}),
        # promoted: keep the previous one alive as a rollback target
        (S(R2, R2, R2, R1), (T(R2, 100, True),), {R1, R2}),
        # third version promoted: R1 is neither latest nor rolled out nor previous
        (S(R3, R3, R3, R2), (T(R3, 100, True),), {R2, R3}),
        # starting canary: keep the last ready one serving
        (S(R3, R2, R2, R1), (T(R2, 100, True),), {R1, R2, R3}),
    ],
)
def test_revisions_to_keep(state, traffic, keep):
    assert revisions_to_keep(state, traffic) == keep


H = 3600.0
NOW = 100 * H


def _revs(n: int, age_h: float = 60.0, inactive_h: float | None = 20.0) -> dict:
    """``n`` revisions r01.. created about ``age_h`` hours ago (a minute apart, r01 oldest), out of traffic about
    ``inactive_h`` hours ago."""
    out = {}
    for i in range(1, n + 1):
        rec = {"created_at": NOW - age_h * H - (n - i) * 60}
        if inactive_h is not None:
            rec["inactive_since"] = NOW - inactive_h * H - (n - i) * 60
        out[f"r{i:02d}"] = rec
    return out


GC_CASES = [
    # (revisions, active, gc, collected): knative/serving pkg/reconciler/gc/gc.go collect
    ("20 or fewer revisions: nothing", _revs(20), {"r20"}, RevisionGC(), []),
    ("stale beyond the 20 kept, oldest first", _revs(23), {"r23"}, RevisionGC(), ["r01", "r02"]),
    ("created within 48 h: kept", _revs(23, age_h=10.0), {"r23"}, RevisionGC(), []),
    ("served within 15 h: kept", _revs(23, inactive_h=1.0), {"r23"}, RevisionGC(), []),
    ("active revisions never count or go", _revs(23), {"r01", "r02", "r23"}, RevisionGC(), []),
    ("past max_non_active even when fresh", _revs(6, age_h=1.0, inactive_h=1.0), {"r06"},
     RevisionGC(min_non_active=1, max_non_active=3), ["r01", "r02"]),
    ("everything disabled: nothing", _revs(30), set(),
     RevisionGC(retain_since_create_time_s=None, retain_since_last_active_time_s=None, max_non_active=None), []),
]


@pytest.mark.parametrize("revs,active,gc,collected", [c[1:] for c in GC_CASES], ids=[c[0] for c in GC_CASES])
def test_revision_gc_follows_knative(revs, active, gc, collected):
    assert revisions_to_collect(revs, frozenset(active), NOW, gc) == collected


def test_template_ignores_canary_percent_and_key_order():
    a = {"model": {"storageUri": "/m", "args": ["--x"]}, "canaryTrafficPercent": 10, "minReplicas": 1}
    b = {"minReplicas": 1, "model": {"args": ["--x"], "storageUri": "/m"}}
    assert same_template(predictor_template(a), predictor_template(b))
    assert not same_template(predictor_template(a), {"minReplicas": 1, "model": {"storageUri": "/m2"}})


def test_resolve_model_dir(tmp_path):
    assert resolve_model_dir(f"file://{tmp_path}") == tmp_path
    assert resolve_model_dir(str(tmp_path)) == tmp_path
    assert resolve_model_dir("rel/m", base=tmp_path) == tmp_path / "rel" / "m"


@pytest.mark.parametrize("uri", ["s3://bucket/m", "gs://b/m"])
def test_remote_storage_is_refused_with_the_fix(uri):
    with pytest.raises(LocalSpecError, match=r"storageUri.*local model folder"):
        resolve_model_dir(uri)


@pytest.mark.parametrize("uri", ["oci://reg/m:latest", "oci-layout:/x"])
def test_modelcar_must_be_pinned(uri):
    with pytest.raises(LocalSpecError, match=r"not pinned by digest"):
        resolve_model_dir(uri)


def test_modelcar_is_pulled_from_a_layout(micro_model, tmp_path):
    from components.build_image import build_image

    ref = build_image(micro_model, f"oci-layout:{tmp_path / 'layout'}", mode="modelcar", base=None).reference
    assert resolve_model_dir(ref) == Path(".llmops-models") / ref.rsplit("@sha256:", 1)[1]
    pulled = resolve_model_dir(ref, pull_cache=tmp_path / "cache")
    assert (pulled / "config.json").read_bytes() == (micro_model / "config.json").read_bytes()


def _isvc(**kw):
    return render_isvc(ServiceSpec(name="demo", predictor=PredictorSpec(storage_uri="/models/m", **kw)))


def test_launch_spec_reads_version_args_env():
    pred = _isvc(model_version="7", args=("--fault_latency_ms", "50"), env=(("A", "b"),))["spec"]["predictor"]
    spec = launch_spec(pred, R1)
    assert spec.model_version == "7"
    assert spec.args[:2] == ("--fault_latency_ms", "50")
    assert ("A", "b") in spec.env and ("LLMOPS_MODEL_VERSION", "7") in spec.env


def test_launch_spec_defaults_version_to_revision_name():
    pred = _isvc()["spec"]["predictor"]
    assert launch_spec(pred, R2).model_version == R2


def test_refuses_custom_containers():
    obj = render_isvc(ServiceSpec(name="demo", predictor=PredictorSpec(image="r/x@sha256:" + "b" * 64)))
    with pytest.raises(LocalSpecError, match="custom containers/images need the kserve backend"):
        check_supported(obj)


def test_refuses_other_model_formats():
    obj = _isvc()
    obj["spec"]["predictor"]["model"]["modelFormat"] = {"name": "sklearn"}
    with pytest.raises(LocalSpecError, match="'sklearn' is not served locally"):
        check_supported(obj)


def test_refuses_env_value_from():
    obj = _isvc()
    obj["spec"]["predictor"]["model"]["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    with pytest.raises(LocalSpecError, match=r"env\[0\] \(TOKEN\).*literal"):
        check_supported(obj)


def test_refuses_standard_mode():
    obj = _isvc()
    obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    with pytest.raises(LocalSpecError, match="implements Serverless revisions"):
        check_supported(obj)


@pytest.mark.parametrize(
    "revisions, state, status, reason",
    [
        ({}, S(), "Unknown", "RevisionMissing"),
        ({R1: {"state": "Starting"}}, S(R1), "Unknown", "RevisionMissing"),
        ({R1: {"state": "Ready"}}, S(R1, R1), "True", None),
        ({R1: {"state": "Ready"}, R2: {"state": "Failed", "reason": "boom"}}, S(R2, R1, R1), "False", "RevisionFailed"),
    ],
)
def test_predictor_condition(revisions, state, status, reason):
    cond = predictor_condition(revisions, state)
    assert cond["status"] == status and cond.get("reason") == reason
    if status == "False":
        assert "boom" in cond["message"] and R2 in cond["message"]


def test_factory_refuses_unknown_names_listing_known():
    from serving.backends.factory import BackendName, make_backend

    with pytest.raises(ValueError, match="unknown serving backend 'knative'; known backends: kserve, local"):
        make_backend("knative")
    assert BackendName.parse("LOCAL") is BackendName.LOCAL


def test_factory_builds_local(tmp_path):
    from serving.backends.factory import make_backend
    from serving.backends.local import LocalBackend

    backend = make_backend("local", state_dir=tmp_path / "s")
    assert isinstance(backend, LocalBackend) and backend.state_dir == (tmp_path / "s").resolve()
