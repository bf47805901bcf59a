"""The Kubeflow path end to end, in a cluster in a box (:mod:`tests.support.cluster_box`).

The compiled pipeline (``pipelines/llm_release.yaml``) runs as Kubeflow runs it,
as service account ``llmops-pipeline``, with its cluster parameters (backend
``kserve``, Prometheus URL, namespace, deployment mode) and the Secrets its
platform spec names, created in the Kubernetes API emulator the way
docs/cluster.md has a platform engineer create them. The rollout step reaches the
emulator through the in-cluster service-account path; the KServe stand-in turns
revisions into real model servers pulled from the authenticated registry; the
canary is judged from a real Prometheus; MLflow is a real server.

Scenarios, in order on one cluster (each builds on the state the previous left):

1. first deployment (v1);
2. a healthy v2 is promoted: ``champion`` moves once, one history entry;
3. a latency-regressed v3 is rolled back: v2 keeps 100%, champion unchanged,
   the rollback recorded with its evidence;
4. ``llmops promote`` from CI (``--metrics prometheus``, kubeconfig of the
   ``llmops-rollout`` account): a regressed promotion rolled back, a healthy one promoted;
5. a rollout controller killed mid-step and restarted converges to the same outcome;
6. a first deployment whose server never starts fails the run with its cause, after the release report;
7. RBAC proven by use: every call of every account, checked against the kit's Roles.
"""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.support.cluster_box import CONTROLLER_SA, PIPELINE_SA, PipelineFailed, cluster_box

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

MODEL = "llm"
# lean: tiny model, a few fine-tune steps (identical for every run: same seed, so the gate passes),
# two canary steps of 4 s intervals judged from Prometheus; 20 requests per arm per step (at 4 req/s: more would queue on one 2-core machine) give the
# sequential judge enough evidence to see a 400 ms slowdown of a tiny model
RUN = {
    "model_name": MODEL,
    "dataset": "bootstrap://tasks?train=200&eval=20",
    "finetune_steps": 3,
    "batch_size": 8,
    "traffic_steps": "50,100",
    "analysis_interval_s": 4.0,
    "min_requests": 20,
    "load_rps": 4.0,
    # 2x for latency and TTFT: the 400 ms fault is ~10x a tiny model's p95, and one shared 2-core machine's
    # scheduling noise stays well inside it (the judge's sensitivity is measured in benchmarks/canary_detection.py)
    "max_latency_ratio": 2.0,
}
SLOW = "--fault_latency_ms 400"
# --timeout below the harness's 300 s: a promotion that cannot decide gives up cleanly and releases its lease
CANARY_FLAGS = ["--steps", "50,100", "--interval", "4", "--min-requests", "20", "--load-rps", "4",
                "--max-latency-ratio", "2", "--timeout", "200"]
# Grants the code needs on paths this box does not take, each with the path; anything else unused fails.
NOT_EXERCISED = {
    (PIPELINE_SA, "serving.kserve.io", "inferenceservices", "patch"):
        "lease renewal (RolloutController._renew_if_needed, a merge patch) on a tick inside an analysis "
        "interval or bake wait once half the lease (max(120 s, 2x interval)) is gone; 4 s intervals never get there",
    (CONTROLLER_SA, "serving.kserve.io", "inferenceservices", "patch"):
        "lease renewal, as for llmops-pipeline",
    (CONTROLLER_SA, "serving.kserve.io", "inferenceservices", "create"):
        "`llmops promote` onto a service that does not exist yet (a first deployment from CI)",
}


def _missing() -> str | None:
    from tests.support.oci_registry import registry_available
    from tests.support.prometheus import prometheus_available

    if why := registry_available():
        return why
    if not prometheus_available():
        return "prometheus is not installed: apt-get install prometheus (scripts/setup.sh does it)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is needed to mount the pods' secrets"
    return None


@pytest.fixture(scope="module", params=["Serverless", "Standard"])
def box(request, tmp_path_factory):
    if why := _missing():
        pytest.skip(why)
    started = time.monotonic()
    with cluster_box(tmp_path_factory.mktemp(f"box-{request.param.lower()}"), mode=request.param) as box:
        box.timings["startup"] = time.monotonic() - started
        yield box
        print(f"\ncluster-in-a-box {request.param} timings (s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in box.timings.items()))


def _state(box) -> str:
    """The service and its pods, for assertion messages."""
    import json

    obj = box.isvc(MODEL)
    pods = [(p.name, p.version, p.state, p.reason) for p in box.kserve.pods.values()]
    return json.dumps({"annotations": obj["metadata"].get("annotations"), "spec": obj["spec"],
                       "status": obj.get("status"), "pods": pods}, indent=1)


def _ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions", []))


def _predictor(obj: dict) -> dict:
    return obj["status"]["components"]["predictor"]


def _version_of(box, revision: str | None) -> str | None:
    return box.kserve.revision_version(MODEL, box.namespace, revision) if revision else None


def _serving(box) -> list[tuple[str | None, int]]:
    """(model version, percent) of every route with a share, as the router in front of the service applies it."""
    return [(_version_of(box, t["revision"]), t["percent"]) for t in box.kserve.routes(MODEL, box.namespace)
            if t["percent"]]


def _served_versions(box, n: int = 12) -> set[str]:
    """Model versions answering the service address, through the official openai client."""
    import openai

    url = box.isvc(MODEL)["status"]["url"]
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="none", max_retries=0, timeout=30)
    seen = set()
    for _ in range(n):
        raw = client.completions.with_raw_response.create(model=MODEL, prompt="2+2=", max_tokens=2)
        seen.add(raw.headers.get("x-llmops-model-version"))
        assert raw.parse().choices, "the service answered with no choices"
    return seen


def _champion(box):
    from model_registry import get_champion
    from model_registry.errors import ModelNotFound

    try:
        champ = get_champion(MODEL, tracking_uri=box.mlflow.uri)
    except ModelNotFound:  # nothing registered yet (a test run on its own)
        return None
    return champ.version if champ else None


def _history(box):
    from model_registry import history

    return history(MODEL, tracking_uri=box.mlflow.uri)


def _run(box, **params):
    try:
        return box.run_pipeline(**{**RUN, **params})
    except PipelineFailed as exc:
        pytest.fail(str(exc), pytrace=False)


def _rollout_outcome(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        if "canary" in line.lower() or "rollout" in line.lower():
            for word in ("rolled_back", "promoted"):
                if word in line:
                    return word
    return None


def _promote_args(box, *extra: str) -> list[str]:
    return ["promote", "--model", MODEL, "--backend", "kserve", "--namespace", box.namespace,
            "--deployment-mode", box.mode, "--metrics", "prometheus", "--prometheus-url", box.prometheus_url,
            *CANARY_FLAGS, *extra]


def _canary_taking_traffic(box) -> bool:
    obj = box.isvc(MODEL)
    if box.mode == "Standard":
        return bool(obj["spec"].get("canary")) and any(
            c.get("ready") for c in (obj.get("status") or {}).get("canaryStatuses") or ())
    pct = obj["spec"]["predictor"].get("canaryTrafficPercent")
    return bool(pct) and any(t["percent"] == pct and t.get("latestRevision")
                             for t in _predictor(obj).get("traffic", []))


def _pods_of(box, version: str) -> list:
    return [p for p in box.kserve.pods.values() if p.isvc == MODEL and p.version == version]


def test_first_deployment(box):
    _run(box)
    obj = box.isvc(MODEL)
    assert _ready(obj), _state(box)
    if box.mode == "Serverless":
        pred = _predictor(obj)
        assert pred["latestRolledoutRevision"] == f"{MODEL}-predictor-00001", _state(box)
        assert pred["latestCreatedRevision"] == f"{MODEL}-predictor-00001", "one spec, one revision: " + _state(box)
    else:
        assert not obj["spec"].get("canary"), _state(box)
    assert len(box.kserve.pods) == 1, "one spec, one pod: " + _state(box)
    assert _serving(box) == [("1", 100)], _state(box)
    assert obj["spec"]["predictor"].get("serviceAccountName"), "the predictor pulls the private modelcar with its SA"
    assert obj["spec"]["predictor"]["model"]["storageUri"].startswith(f"oci://{box.image_repository}@sha256:")
    assert _champion(box) == "1"
    assert _served_versions(box) == {"1"}
    # the rollout step authenticated as the pipeline's service account through the in-cluster path
    users = {entry.user for entry in box.kube.log if entry.call.resource == "inferenceservices"}
    assert users == {f"system:serviceaccount:{box.namespace}:{PIPELINE_SA}"}, users
    # Prometheus scraped the pod with the labels a PodMonitor gives on a cluster
    import httpx

    deadline, series = time.monotonic() + 20, []
    while not series and time.monotonic() < deadline:  # the requests above appear at the next 1 s scrape
        series = httpx.get(f"{box.prometheus_url}/api/v1/series",
                           params={"match[]": f'llmops_requests_total{{model_name="{MODEL}"}}'}, timeout=10).json()["data"]
        time.sleep(0.5)
    assert series, "Prometheus has no llmops_requests_total series of the predictor"
    labels = series[0]
    assert labels["namespace"] == box.namespace and labels["pod"].startswith(f"{MODEL}-predictor"), labels
    assert labels["model_version"] == "1" and labels["job"] == f"{box.namespace}/{MODEL}-predictor", labels


def test_healthy_v2_promoted(box):
    before = len(_history(box))
    _run(box)
    obj = box.isvc(MODEL)
    if box.mode == "Serverless":
        pred = _predictor(obj)
        assert _version_of(box, pred["latestRolledoutRevision"]) == "2", _state(box)
        assert _version_of(box, pred["previousRolledoutRevision"]) == "1", _state(box)
        assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    else:
        # KServe's own API doc (inference_service.go): promote without restart by taking the canary's name
        assert not obj["spec"].get("canary"), _state(box)
        assert len(_pods_of(box, "2")) == 1, "promotion restarted the canary's pods: " + _state(box)
    assert _serving(box) == [("2", 100)], _state(box)
    assert _champion(box) == "2"
    new = _history(box)[before:]
    assert [(e.kind, e.from_version, e.to_version) for e in new] == [("promotion", "1", "2")], new
    assert _served_versions(box) == {"2"}


def test_latency_regressed_v3_rolled_back(box):
    before = len(_history(box))
    if box.mode == "Serverless":
        _run(box, serving_args=SLOW)  # v3 through the pipeline
        bad = "3"
    else:  # Standard: CI re-rolls the serving version with a regressed spec (saves a pipeline run). Both arms
        # are v2, told apart only by their Deployments (the PodMonitor's revision label)
        done = box.llmops(*_promote_args(box, "--version", "2", "--predictor-arg=--fault_latency_ms=400"))
        assert done.returncode == 1 and "ROLLED BACK" in done.stdout, done.stdout + done.stderr
        bad = "2"
    obj = box.isvc(MODEL)
    if box.mode == "Serverless":
        assert _version_of(box, _predictor(obj)["latestRolledoutRevision"]) == "2", _state(box)
    else:
        assert not obj["spec"].get("canary"), _state(box)
    assert _serving(box) == [("2", 100)], _state(box)
    assert _champion(box) == "2"
    new = _history(box)[before:]
    assert [(e.kind, e.from_version) for e in new] == [("rollback", bad)], new
    evidence = (new[0].reason + str(new[0].report or "")).lower()
    assert "latency" in evidence, f"the rollback names its evidence: {new[0]}"
    assert _served_versions(box) == {"2"}


def test_ci_promote_both_outcomes(box):
    before = len(_history(box))
    if box.mode == "Serverless":  # Standard did its regressed promotion above
        bad = box.llmops(*_promote_args(box, "--version", "1", "--predictor-arg=--fault_latency_ms=400"))
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "ROLLED BACK" in bad.stdout
        assert _champion(box) == "2"
    target = "3" if box.mode == "Serverless" else "1"
    good = box.llmops(*_promote_args(box, "--version", target))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PROMOTED" in good.stdout
    assert _champion(box) == target
    new = _history(box)[before:]
    kinds = ["rollback", "promotion"] if box.mode == "Serverless" else ["promotion"]
    assert [e.kind for e in new] == kinds, new
    assert (new[-1].from_version, new[-1].to_version) == ("2", target), new
    assert _serving(box) == [(target, 100)], _state(box)
    assert _served_versions(box) == {target}


def test_controller_killed_mid_step_converges(box):
    args = _promote_args(box, "--version", "2", "--holder", "ci-job-1")
    before = len(_history(box))
    proc, log = box.llmops(*args, background=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait until the canary takes traffic, then kill the controller
        if _canary_taking_traffic(box):
            break
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"the controller ended before the canary step:\n{log.read()[-3000:]}")
        time.sleep(0.2)
    else:
        pytest.fail("the canary never took traffic: " + _state(box))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    again = box.llmops(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _champion(box) == "2"
    new = _history(box)[before:]
    assert [(e.kind, e.to_version) for e in new] == [("promotion", "2")], new
    assert _serving(box) == [("2", 100)], _state(box)
    assert _served_versions(box) == {"2"}


def test_a_first_deployment_that_never_comes_up_fails_the_run_with_its_cause(box):
    """The pipeline's error branch on the cluster path: the rollout step ends in ``error`` and succeeds (keeping its
    record), the release report is still written, then the rollout-failed task fails the run with the cause.
    A service of its own (a first deployment: there is no stable to roll back to); the other service is untouched."""
    serving, champion = _serving(box), _champion(box)
    broken = "llm-broken"
    with pytest.raises(PipelineFailed) as failed:
        box.run_pipeline(**{**RUN, "model_name": broken, "serving_args": "--fault_error_rate 2"})
    cause = "--fault_error_rate must be within [0, 1], got 2.0"
    message = str(failed.value)
    assert f"rollout of {broken} v1 failed: v1 did not become ready" in message and cause in message, message[-3000:]
    pages = list((box.workdir / f"run{box.runs}").rglob("release-report/report"))
    assert pages, "the release-report task wrote no HTML artifact"
    page = pages[0].read_text()
    assert "did not become ready" in page and cause in page
    from model_registry import get_champion

    assert get_champion(broken, tracking_uri=box.mlflow.uri) is None
    assert not any(p.isvc == broken and p.state == "Ready" for p in box.kserve.pods.values())
    assert (_serving(box), _champion(box)) == (serving, champion), _state(box)


def test_rbac_proven_by_use(box):
    from tests.support.rbac_by_use import check_rbac_by_use

    report = check_rbac_by_use(box.kube, box.namespace, accounts=(PIPELINE_SA, CONTROLLER_SA))
    print("\n" + report.text())
    assert not report.denied, report.text()
    unused = {(account, g[0], g[1], g[2]) for account, grants in report.unused.items() for g in grants}
    assert unused <= set(NOT_EXERCISED), report.text()
    assert report.used[PIPELINE_SA] and report.used[CONTROLLER_SA]


def test_standin_reconciled_without_errors(box):
    assert box.kserve.errors == []
