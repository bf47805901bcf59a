"""InferenceService options of rollout/promote (defect 6) and no dev-machine paths or credentials (defect 9)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipelines.cli import build_parser
from pipelines.commands.rollout import node_selector, service_account
from serving.cluster import names
from serving.isvc import PredictorSpec, ServiceSpec, crd_path, render_isvc, validate_isvc
from serving.metrics.base import MetricsTarget, MetricsUnavailable
from serving.metrics.prometheus import PrometheusProvider

URI = "oci://registry.example.com/llmops/llm@sha256:" + "ab" * 32
ROOT = Path(__file__).resolve().parents[3]


def _args(*extra):
    return build_parser().parse_args(["rollout", "--backend", "kserve", "--name", "llm", "--storage-uri", URI,
                                      "--model-version", "2", *extra])


@pytest.mark.parametrize("command", ["rollout", "promote"])
def test_rollout_and_promote_offer_gpu_node_selector_and_service_account(command):
    argv = ["--gpus", "1", "--node-selector", "nvidia.com/gpu.present=true", "--service-account", "team-puller"]
    base = (["rollout", "--name", "llm", "--storage-uri", URI, "--model-version", "2"] if command == "rollout"
            else ["promote", "--model", "llm", "--version", "2"])
    args = build_parser().parse_args(base + ["--backend", "kserve", *argv])
    assert (args.gpus, node_selector(args), service_account(args)) == (1, (("nvidia.com/gpu.present", "true"),), "team-puller")


def test_kserve_isvc_names_the_predictor_account_and_passes_the_crd():
    args = _args("--gpus", "1", "--node-selector", "nvidia.com/gpu.present=true", "--cpu", "4", "--memory", "16Gi")
    pred = PredictorSpec(storage_uri=URI, model_version="2", cpu=args.cpu, memory=args.memory, gpus=args.gpus,
                         node_selector=node_selector(args), service_account=service_account(args))
    obj = render_isvc(ServiceSpec("llm", "llmops", pred))
    validate_isvc(obj)  # KServe's own CRD schema
    p = obj["spec"]["predictor"]
    assert p["serviceAccountName"] == names.PREDICTOR_SA  # its imagePullSecrets pull a private modelcar
    assert p["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert p["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_crd_comes_from_the_package_not_a_checkout_beside_it(monkeypatch):
    monkeypatch.delenv("LLMOPS_KSERVE_CRD", raising=False)
    assert crd_path() == ROOT / "serving" / "cluster" / "crds" / "inferenceservices.crd.yaml"


def test_prometheus_errors_mask_credentials_in_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = PrometheusProvider(f"http://llmops:hunter2@127.0.0.1:{port}", timeout_s=0.5)
    with pytest.raises(MetricsUnavailable) as err:
        provider.collect(MetricsTarget(model_name="llm", model_version="1"), 0.0, 10.0)
    assert "hunter2" not in str(err.value) and "http://***@127.0.0.1" in str(err.value)


@pytest.mark.parametrize("backend", ["kserve", "local"])
def test_rollout_step_serves_the_pushed_image_as_a_modelcar_on_either_backend(backend):
    from components.rollout.step import RolloutStepConfig

    ref = "127.0.0.1:5000/llmops/llm@sha256:" + "cd" * 32
    cfg = RolloutStepConfig(image_ref=ref, model_name="llm", model_version="1", backend=backend,
                            metrics_provider="prometheus" if backend == "kserve" else "scrape")
    cfg.validate()
    assert cfg.storage_uri == "oci://" + ref
    assert RolloutStepConfig(image_ref="oci-layout:/x@sha256:" + "cd" * 32, model_name="llm", model_version="1").storage_uri.startswith("oci-layout:")


def test_a_latency_ratio_below_one_names_the_flag(capsys):
    from pipelines.cli import main

    rc = main(["rollout", "--name", "x", "--model-version", "1", "--storage-uri", "/nope", "--max-latency-ratio", "0.5"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--max-latency-ratio 0.5: must be at least 1" in err and "Traceback" not in err
