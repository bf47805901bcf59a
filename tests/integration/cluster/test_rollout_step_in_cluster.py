"""The pipeline's rollout step as it runs in a pod: library call, service-account auth, the pipeline's Role.

Guards issue 12 defects 1 and 3: the step is :func:`components.rollout.step.run_rollout_step`
(no CLI argv), authenticates with the pod's service-account token and CA (no kubeconfig),
reads metrics from Prometheus, and everything it asks the API server is granted by the
``llmops-pipeline`` Role of the kit — checked against an emulator that enforces that Role,
and walked the other way: every verb the Role grants on InferenceServices is used.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml

from model_registry.types import STATUS_TAG
from components.rollout.step import RolloutStepConfig, RolloutStepError, run_rollout_step
from serving.backends.kserve import KServeBackend
from serving.cluster import names
from serving.cluster.rbac import ungranted
from serving.cluster.render import PIPELINE_RULES, render_role
from tests.support.kube_emulator import KubeEmulator
from tests.support.prometheus import free_port

pytestmark = pytest.mark.integration

NS = "llmops"
KIT = Path(__file__).resolve().parents[3] / "serving" / "cluster" / "base"
PIPELINE_USER = f"system:serviceaccount:{NS}:{names.PIPELINE_SA}"


def _image(version: str) -> str:
    return f"registry.example.com/llmops/llm@sha256:{version * 64}"


@pytest.fixture()
def in_pod(tmp_path, monkeypatch):
    """An emulator enforcing the kit's Roles, and this process set up like a pod of the pipeline."""
    with KubeEmulator(namespace=NS, tls=True, require_auth=True) as kube:
        docs = [d for f in ("rbac-pipeline.yaml", "rbac-rollout.yaml") for d in yaml.safe_load_all((KIT / f).read_text())]
        kube.bind_kit_rbac(docs)
        sa_dir = kube.service_account_files(tmp_path / "sa", names.PIPELINE_SA)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", kube.host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube.port))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config
        tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
        client = mlflow.MlflowClient(tracking_uri=tracking)
        client.create_registered_model("llm")
        for version in ("1", "2"):
            client.create_model_version("llm", source=str(tmp_path), tags={STATUS_TAG: "ready"})
        yield kube, sa_dir, tracking


def _config(version: str, tracking: str, **kw) -> RolloutStepConfig:
    base = dict(image_ref=_image(version), model_name="llm", model_version=version, namespace=NS,
                prometheus_url=f"http://127.0.0.1:{free_port()}", traffic_steps="50,100", analysis_interval_s=0.5,
                min_requests=5, tracking_uri=tracking, timeout_s=15)
    base.update(kw)
    return RolloutStepConfig(**base)


def test_step_runs_as_the_pipeline_account_and_the_role_fits(in_pod, tmp_path):
    kube, sa_dir, tracking = in_pod
    backend = KServeBackend(in_cluster=None, service_account_dir=str(sa_dir), namespace=NS)
    assert backend.api_client.configuration.host == f"https://{kube.host}:{kube.port}"

    first = run_rollout_step(_config("1", tracking), tmp_path / "w1", backend=backend)
    assert first.outcome == "promoted", first.reason
    isvc = kube.object("llm", NS)
    assert isvc["spec"]["predictor"]["serviceAccountName"] == names.PREDICTOR_SA
    # Prometheus cannot be reached: the canary's analysis is an ERROR measurement and a rollback, not a crash
    second = run_rollout_step(_config("2", tracking), tmp_path / "w2", backend=backend)
    assert second.outcome == "rolled_back" and second.exit_code == 1, second.reason
    assert "Prometheus" in second.report_markdown
    assert second.report_uri and second.report_uri.startswith("runs:/")  # stored in MLflow, not file:///tmp

    mine = [c for c in kube.log if c.user == PIPELINE_USER]
    assert mine and not [c for c in mine if c.status in (401, 403)], "the API server refused the step"
    calls = [c.call for c in mine]
    role = render_role(names.PIPELINE_SA, NS, PIPELINE_RULES)
    assert ungranted(role, calls) == []
    used = {(c.verb, c.resource) for c in calls}
    # patch is the lease renewal of a wait longer than half the lease (60 s+): walked in test_rbac_walk.py
    granted_isvc = {(v, "inferenceservices") for v in PIPELINE_RULES[0]["verbs"]} - {("patch", "inferenceservices")}
    assert granted_isvc <= used, f"granted but never used: {sorted(granted_isvc - used)}"


def test_scrape_metrics_are_refused_on_a_cluster(tmp_path):
    with pytest.raises(RolloutStepError, match="prometheus"):
        run_rollout_step(_config("1", "", metrics_provider="scrape"), tmp_path)


def test_pipeline_selects_the_vllm_runtime(in_pod, tmp_path):
    """``serving_runtime=vllm``: the step creates a predictor on KServe's kserve-vllmserver, which the CRD accepts."""
    kube, sa_dir, tracking = in_pod
    backend = KServeBackend(in_cluster=None, service_account_dir=str(sa_dir), namespace=NS)
    first = run_rollout_step(_config("1", tracking, serving_runtime="vllm", gpus=1,
                                     node_selector="nvidia.com/gpu.present=true"), tmp_path / "w", backend=backend)
    assert first.outcome == "promoted", first.reason
    model = kube.object("llm", NS)["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-vllmserver" and model["modelFormat"]["name"] == "vLLM", model
    assert "--model_version" not in " ".join(model.get("args", [])), "vLLM's server has no --model_version flag"


@pytest.mark.parametrize("change, message", [
    ({"serving_runtime": "vllm", "backend": "local", "metrics_provider": "scrape"}, "runs only on a cluster"),
    ({"serving_runtime": "tgi"}, "unknown runtime 'tgi'"),
])
def test_impossible_runtime_settings_are_refused_before_anything_changes(tmp_path, change, message):
    with pytest.raises(RolloutStepError, match=message):
        run_rollout_step(_config("1", "", **change), tmp_path)
