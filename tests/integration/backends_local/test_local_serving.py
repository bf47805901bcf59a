"""The local serving backend with real model-server processes (``python -m serving``) and its router.

One lifecycle, in KServe's terms, on one shared state folder:
serve v1 with the CLI -> canary v2 at 25% -> roll back (0%, then v1's spec) ->
canary v2 again -> promote -> a broken canary v3 fails visibly -> a new backend
object sees the same truth -> ``llmops down`` leaves no process behind.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter

import httpx
import psutil
import pytest

from serving.backends.base import PredictorStatus
from serving.backends.local import LocalBackend
from serving.isvc import PredictorSpec, ServiceSpec, render_isvc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NS = "default"
NAME = "demo"
PROMPT = "Q: convert 37 km to m\nA:"
READY_S = 240


def _isvc(model, version, canary=None):
    spec = ServiceSpec(name=NAME, predictor=PredictorSpec(storage_uri=str(model), model_version=version))
    return render_isvc(spec, canary)


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _served_counts(backend: LocalBackend, revision: str) -> float:
    """Requests the revision's own server counted (its /metrics, model_version label)."""
    (url,) = backend.revision_urls(NAME, NS, revision)
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llmops_requests_total{") and 'code="200"' in line
    )


def _complete(client: httpx.Client, path: str = "") -> httpx.Response:
    resp = client.post(path + "/openai/v1/completions", json={"model": NAME, "prompt": PROMPT, "max_tokens": 1})
    assert resp.status_code == 200, resp.text
    return resp


def _llmops(*args: str, state_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=READY_S + 60,
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("serving")
    yield path
    backend = LocalBackend(path)  # whatever a failed test left behind
    for ns, name in backend.services():
        backend.delete(name, ns)


def test_canary_lifecycle_on_real_servers(state_dir, tiny_model, micro_model, tmp_path):
    import yaml
    from openai import OpenAI

    # 1. `llmops serve -f` applies v1 and exits; the detached processes keep serving
    manifest = tmp_path / "v1.yaml"
    manifest.write_text(yaml.safe_dump(_isvc(tiny_model, "1")))
    done = _llmops("serve", "-f", str(manifest), "--timeout", str(READY_S), state_dir=state_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    url = re.search(r"^url:\s+(\S+)", done.stdout, re.M).group(1)

    backend = LocalBackend(state_dir, ready_timeout_s=READY_S)
    st = PredictorStatus.from_isvc(backend.get(NAME, NS))
    rev1, rev2, rev3, rev4, rev5 = (f"{NAME}-predictor-0000{i}" for i in (1, 2, 3, 4, 5))
    assert st.ready and st.latest_rolledout == rev1 and st.url == url
    assert [(t.revision, t.percent) for t in st.traffic] == [(rev1, 100)]

    # 2. canary v2 at 25%: the split is visible through the router and in each server's own metrics
    backend.apply(_isvc(micro_model, "2", canary=25))
    st = PredictorStatus.from_isvc(backend.wait_ready(NAME, NS, READY_S))
    assert st.ready, st.reason
    assert {t.revision: (t.percent, t.tag) for t in st.traffic} == {rev2: (25, "latest"), rev1: (75, "prev")}
    before = {r: _served_counts(backend, r) for r in (rev1, rev2)}
    with httpx.Client(base_url=url, timeout=60) as client:
        seen = Counter(_complete(client).headers["x-llmops-model-version"] for _ in range(100))
        assert 15 <= seen["2"] <= 35 and seen["1"] + seen["2"] == 100, seen
        after = {r: _served_counts(backend, r) for r in (rev1, rev2)}
        assert after[rev2] - before[rev2] == seen["2"] and after[rev1] - before[rev1] == seen["1"]
        # tag routing: KServe's latest-/prev- hosts are /_tag/latest and /_tag/prev here
        ep = backend.endpoints(NAME, NS)
        assert _complete(client, ep.latest_url[len(url):]).headers["x-llmops-revision"] == rev2
        assert _complete(client, ep.prev_url[len(url):]).headers["x-llmops-revision"] == rev1

    # the official OpenAI client through the router, streaming chat included
    oai = OpenAI(base_url=url + "/openai/v1", api_key="unused", max_retries=0, timeout=60)
    completion = oai.completions.create(model=NAME, prompt=PROMPT, max_tokens=4)
    assert completion.usage.completion_tokens >= 1
    chunks = list(
        oai.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "convert 3 km to m"}], max_tokens=4, stream=True
        )
    )
    assert len(chunks) >= 2 and any(c.choices and c.choices[0].delta.content for c in chunks)

    # 3. rollback: 0% sends everything to the rolled-out v1; v1's spec (at 0% while it starts) is a new, cold
    #    revision 3, as Knative makes one per generation; v1's revision 1 serves until 3 is ready
    pids = backend.pids(NAME, NS)
    backend.apply(_isvc(micro_model, "2", canary=0))
    with httpx.Client(base_url=url, timeout=60) as client:
        assert {_complete(client).headers["x-llmops-revision"] for _ in range(10)} == {rev1}
    st = PredictorStatus.from_isvc(backend.apply(_isvc(tiny_model, "1", canary=0)))
    assert st.latest_created == rev3 and st.latest_rolledout == rev1
    assert PredictorStatus.from_isvc(backend.wait_ready(NAME, NS, READY_S)).latest_ready == rev3
    st = PredictorStatus.from_isvc(backend.apply(_isvc(tiny_model, "1")))
    assert st.ready and st.latest_created == st.latest_ready == st.latest_rolledout == rev3
    with httpx.Client(base_url=url, timeout=60) as client:
        answered = {(r.headers["x-llmops-revision"], r.headers["x-llmops-model-version"])
                    for r in (_complete(client) for _ in range(5))}
    assert answered == {(rev3, "1")}
    now = backend.pids(NAME, NS)
    assert now[rev3] != pids[rev1] and rev2 not in now and _dead(pids[rev2])

    # 4. canary v2 again (a new revision 4), then promote
    backend.apply(_isvc(micro_model, "2", canary=25))
    assert PredictorStatus.from_isvc(backend.wait_ready(NAME, NS, READY_S)).ready
    st = PredictorStatus.from_isvc(backend.apply(_isvc(micro_model, "2")))
    assert st.latest_rolledout == rev4 and st.previous_rolledout == rev3
    assert [(t.revision, t.percent) for t in st.traffic] == [(rev4, 100)]
    assert rev3 in backend.pids(NAME, NS)  # kept alive as the rollback target

    # 5. a canary whose model is broken never becomes ready: a failure with a reason, traffic unharmed
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text("{ not json")
    backend.apply(_isvc(broken, "3", canary=10))
    obj = backend.wait_ready(NAME, NS, READY_S)
    st = PredictorStatus.from_isvc(obj)
    assert not st.ready and st.latest_created == rev5 and st.latest_ready == rev4
    assert rev5 in st.reason and "exited with code" in st.reason, st.reason
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Ready"] == "False"
    with httpx.Client(base_url=url, timeout=60) as client:
        assert {_complete(client).headers["x-llmops-revision"] for _ in range(5)} == {rev4}

    # 6. a restarted controller (new object, same folder) sees the same state and processes
    fresh = LocalBackend(state_dir)
    assert fresh.get(NAME, NS)["status"] == backend.get(NAME, NS)["status"]
    assert fresh.pids(NAME, NS) == backend.pids(NAME, NS)

    # 7. `llmops down` stops every process
    pids = fresh.pids(NAME, NS)
    assert set(pids) == {"router", rev3, rev4}
    done = _llmops("down", state_dir=state_dir)
    assert done.returncode == 0 and f"stopped {NS}/{NAME}" in done.stdout, done.stderr
    assert all(_dead(pid) for pid in pids.values()), pids
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/_router/health", timeout=2)
    assert json.loads((state_dir / "state.json").read_text())["services"] == {}


def test_cli_refusals(state_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: x}\n"
                   "spec: {predictor: {minReplicas: two}}\n")
    done = _llmops("serve", "-f", str(bad), state_dir=state_dir)
    assert done.returncode == 2 and "fails KServe's CRD schema" in done.stderr and "minReplicas" in done.stderr
    remote = tmp_path / "remote.yaml"
    remote.write_text(
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: x}\n"
        "spec: {predictor: {model: {modelFormat: {name: llmops-llm}, storageUri: 's3://b/m'}}}\n"
    )
    done = _llmops("serve", "-f", str(remote), state_dir=state_dir)
    assert done.returncode == 2 and "uses s3:, which the local backend cannot read" in done.stderr
    done = _llmops("down", "nothere", state_dir=state_dir)
    assert done.returncode == 2 and "no local InferenceService default/nothere" in done.stderr
