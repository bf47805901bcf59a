"""``llmops manifests`` prints or writes validated manifests and refuses bad input."""

from __future__ import annotations

import yaml

from pipelines.cli import main
from serving.cluster.validate import validate_manifest

OCI = "oci://registry.example.com/llmops/llm@sha256:" + "ab" * 32
IMAGE = "registry.example.com/llmops/model-server@sha256:" + "cd" * 32


def test_prints_the_kit_with_the_inference_service(capsys):
    rc = main(["manifests", "--namespace", "team-a", "--model", "chat", "--mode", "standard",
               "--storage-uri", OCI, "--runtime-image", IMAGE, "--gpus", "1",
               "--gpu-node-selector", "nvidia.com/gpu.present=true", "--max-replicas", "3"])
    out = capsys.readouterr()
    assert rc == 0
    docs = [d for d in yaml.safe_load_all(out.out) if d]
    for d in docs:
        validate_manifest(d)
    isvc = next(d for d in docs if d["kind"] == "InferenceService")
    assert isvc["metadata"]["namespace"] == "team-a"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert isvc["spec"]["predictor"]["maxReplicas"] == 3
    rt = next(d for d in docs if d["kind"] == "ServingRuntime")
    assert rt["spec"]["containers"][0]["image"] == IMAGE
    assert "placeholder" not in out.err


def test_writes_one_file_per_object(tmp_path, capsys):
    rc = main(["manifests", "--namespace", "ns", "--model", "llm", "--cluster-scoped", "--out", str(tmp_path)])
    assert rc == 0
    files = sorted(tmp_path.iterdir())
    assert files[0].name == "00-clusterservingruntime-llmops-llm.yaml"
    assert len(files) == 11  # no --storage-uri: no InferenceService
    assert "placeholder" in capsys.readouterr().err


def test_refusals_name_the_problem(capsys):
    cases = [
        (["--storage-uri", "oci://registry.example.com/llmops/llm:v7"], "storage_uri: 'oci://registry.example.com/llmops/llm:v7' is not pinned by digest"),
        (["--mode", "knative"], "mode: unknown mode 'knative'; use one of Serverless, Standard"),
        (["--storage-uri", OCI, "--gpus", "1"], "node_selector: a GPU request needs a node selector"),
        (["--storage-uri", OCI, "--min-replicas", "4", "--max-replicas", "2"], "min_replicas: 4 is above max_replicas 2"),
        (["--runtime-image", "registry.example.com/server:latest"], "runtime_image:"),
        (["--gpu-node-selector", "gpu"], "--gpu-node-selector 'gpu': write KEY=VALUE"),
    ]
    for extra, message in cases:
        rc = main(["manifests", "--namespace", "ns", "--model", "llm", *extra])
        err = capsys.readouterr().err
        assert rc == 2, extra
        assert message in err, (extra, err)
