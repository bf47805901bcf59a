"""vLLM and KServe huggingfaceserver as runtimes of a release: rendering, CRD validation, CLI, drift."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from serving.cluster.validate import validate_manifest
from serving.isvc import (
    MODEL_VERSION_POD_LABEL,
    RUNTIME_PROFILES,
    IsvcSpecError,
    PredictorSpec,
    ServiceSpec,
    ServingRuntimeKind,
    render_isvc,
)

OCI = "oci://registry.example.com/llmops/llm@sha256:" + "ab" * 32
GPU_NODES = (("nvidia.com/gpu.present", "true"),)
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "kserve"


def _isvc(runtime: str, gpus: int = 0, version: str = "7", **kw) -> dict:
    predictor = PredictorSpec(storage_uri=OCI, model_version=version, serving_runtime=runtime, gpus=gpus,
                              node_selector=GPU_NODES if gpus else (), **kw)  # fmt: skip
    return render_isvc(ServiceSpec(name="llm", namespace="models", predictor=predictor))  # validated by the CRD


def test_vllm_release_renders_kserve_vllmserver_with_gpus():
    isvc = _isvc("vllm", gpus=2)
    pred = isvc["spec"]["predictor"]
    model = pred["model"]
    assert model["modelFormat"] == {"name": "vLLM"} and model["runtime"] == "kserve-vllmserver"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert model["args"] == ["--tensor-parallel-size=2"]  # no --model_version: vLLM would refuse it
    assert pred["labels"] == {MODEL_VERSION_POD_LABEL: "7"}
    assert {"name": "LLMOPS_MODEL_VERSION", "value": "7"} in model["env"]


@pytest.mark.parametrize(("gpus", "backend"), [(1, "--backend=vllm"), (0, "--backend=huggingface")])
def test_huggingfaceserver_picks_vllm_on_gpus(gpus, backend):
    model = _isvc("huggingfaceserver", gpus=gpus, args=("--max_model_len=4096",))["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "huggingface"} and model["runtime"] == "kserve-huggingfaceserver"
    assert model["args"] == [backend, "--max_model_len=4096"]


def test_our_runtime_is_unchanged():
    pred = _isvc("llmops")["spec"]["predictor"]
    assert pred["model"]["modelFormat"] == {"name": "llmops-llm"} and pred["model"]["runtime"] == "llmops-llm"
    assert pred["model"]["args"] == ["--model_version=7"] and "labels" not in pred


def test_profiles_match_kserves_own_runtime_files():
    """Drift guard: the format and runtime name we render are what KServe's runtime declares."""
    for kind, file in ((ServingRuntimeKind.VLLM, "runtime-kserve-vllmserver.yaml"),
                       (ServingRuntimeKind.HUGGINGFACE, "runtime-kserve-huggingfaceserver.yaml")):  # fmt: skip
        path = SHARED / file
        if not path.exists():
            pytest.skip(f"{path} not beside the repository")
        runtime = yaml.safe_load(path.read_text())
        profile = RUNTIME_PROFILES[kind]
        assert runtime["metadata"]["name"] == profile.runtime
        assert profile.model_format in [f["name"] for f in runtime["spec"]["supportedModelFormats"]]


def test_refusals_name_the_field():
    with pytest.raises(IsvcSpecError, match="serving_runtime: unknown runtime 'tgi'"):
        _isvc("tgi")
    with pytest.raises(IsvcSpecError, match="model_version: 'v 7' must be a Kubernetes label value"):
        _isvc("vllm", version="v 7")


def test_manifests_cli_renders_a_vllm_release(capsys):
    rc = main(["manifests", "--namespace", "team-a", "--model", "chat", "--serving-runtime", "vllm",
               "--storage-uri", OCI, "--gpus", "1", "--gpu-node-selector", "nvidia.com/gpu.present=true"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    docs = [d for d in yaml.safe_load_all(out.out) if d]
    for d in docs:
        validate_manifest(d)
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "kserve-vllmserver"
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    relabel = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_label_llmops_dev_model_version"],
            "targetLabel": "model_version", "action": "replace", "regex": "(.+)"} in relabel  # fmt: skip
    rc = main(["manifests", "--namespace", "team-a", "--model", "chat", "--serving-runtime", "triton"])
    assert rc == 2 and "serving_runtime: unknown runtime 'triton'" in capsys.readouterr().err


def test_rollout_cli_needs_prometheus_for_vllm(capsys):
    rc = main(["rollout", "--backend", "kserve", "--name", "llm", "--storage-uri", OCI, "--model-version", "7",
               "--serving-runtime", "vllm", "--metrics", "scrape"])
    assert rc == 2
    assert "--serving-runtime vllm: the analysis reads vLLM's series through Prometheus" in capsys.readouterr().err
    rc = main(["rollout", "--name", "llm", "--storage-uri", "/models/x", "--model-version", "7",
               "--serving-runtime", "vllm"])
    assert rc == 2 and "the local backend runs only the llmops model server" in capsys.readouterr().err
