"""``llmops rollout`` end to end: real servers (local backend) and the Kubernetes emulator (kserve)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serving.backends.base import PredictorStatus
from serving.isvc import render_isvc
from serving.rollout.controller import RolloutController, predictor_version
from tests.support.kube_emulator import KubeEmulator
from tests.support.rollout_fakes import NAME as KNAME, NS as KNS, ScriptedMetrics, service, strategy

pytestmark = pytest.mark.integration


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_rolls_back_a_faulty_canary_on_real_servers(tiny_model, tmp_path):
    from serving.backends.local import LocalBackend
    from serving.isvc import PredictorSpec, ServiceSpec

    state_dir = tmp_path / "serving"
    backend = LocalBackend(state_dir, ready_timeout_s=240)
    try:
        v1 = ServiceSpec(name="chat", namespace="cli", predictor=PredictorSpec(storage_uri=str(tiny_model), model_version="1"))
        backend.apply(render_isvc(v1))
        assert PredictorStatus.from_isvc(backend.wait_ready("chat", "cli", 240)).ready
        done = subprocess.run(
            [sys.executable, "-m", "pipelines", "rollout", "--backend", "local", "--state-dir", str(state_dir),
             "--name", "chat", "--namespace", "cli", "--storage-uri", str(tiny_model), "--model-version", "2",
             "--predictor-arg=--fault_error_rate", "--predictor-arg=0.8",
             "--steps", "10,25,50,100", "--interval", "2", "--warmup", "3", "--min-requests", "5",
             "--load-rps", "30", "--no-quality", "--report-dir", str(tmp_path / "report"), "--timeout", "400"],
            capture_output=True, text=True, timeout=500,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "rollout cli/chat v2: ROLLED BACK" in done.stdout
        assert "error rate" in done.stdout
        assert "canary  10%" in done.stderr  # progress lines
        assert "HTTP Request" not in done.stderr, "one log line per load-generator request"
        report = json.loads((tmp_path / "report" / "rollout.json").read_text())
        assert report["outcome"] == "rolled_back" and report["step_reached"] == 10
        assert predictor_version(backend.get("chat", "cli")["spec"]["predictor"]) == "1"
    finally:
        for ns, name in backend.services():
            backend.delete(name, ns)


def test_cli_refuses_while_another_controller_holds_the_lease(tmp_path, capsys):
    import kubernetes

    from pipelines.cli import main
    from serving.backends.kserve import KServeBackend

    with KubeEmulator(namespace=KNS) as kube:
        backend = KServeBackend(api_client=kubernetes.client.ApiClient(kube.client_configuration()))
        backend.apply(render_isvc(service("1")))
        import time

        other = RolloutController(backend, service("2"), strategy(lease_ttl_s=600), ScriptedMetrics(backend, KNAME, KNS, standin=kube.standin), holder="ci-job-41")
        other.step(time.time())
        rc = main(["rollout", "--backend", "kserve", "--kubeconfig", kube.write_kubeconfig(tmp_path / "kubeconfig"),
                   "--name", KNAME, "--namespace", KNS, "--storage-uri", "pvc://models/v3", "--model-version", "3",
                   "--metrics", "prometheus", "--prometheus-url", "http://127.0.0.1:9", "--no-quality",
                   "--report-dir", str(tmp_path / "r")])
    assert rc == 2
    assert "controller 'ci-job-41' holds the rollout lease (rollout of v2, Progressing)" in capsys.readouterr().err
