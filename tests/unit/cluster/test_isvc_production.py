"""InferenceService rendering with production settings, and each refusal names its field."""

from __future__ import annotations

import pytest

from serving.isvc import (
    DeploymentMode,
    IsvcSchemaError,
    IsvcSpecError,
    PredictorSpec,
    ServiceSpec,
    render_isvc,
    render_standard_canary,
    validate_isvc,
)

DIGEST = "sha256:" + "ab" * 32
OCI = f"oci://registry.example.com/llmops/llm@{DIGEST}"
GPU_NODES = (("nvidia.com/gpu.present", "true"),)
GPU_TAINT = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)


def production_predictor(**overrides) -> PredictorSpec:
    fields = dict(
        storage_uri=OCI,
        model_version="7",
        cpu="4",
        memory="24Gi",
        gpus=1,
        node_selector=GPU_NODES,
        tolerations=GPU_TAINT,
        min_replicas=1,
        max_replicas=4,
        scale_metric="concurrency",
        scale_target=4,
        service_account="llmops-predictor",
    )
    fields.update(overrides)
    return PredictorSpec(**fields)


@pytest.mark.parametrize("mode", list(DeploymentMode))
def test_production_service_sets_everything_and_passes_the_crd(mode):
    obj = render_isvc(ServiceSpec("llm", "models", production_predictor(), deployment_mode=mode))
    meta, pred = obj["metadata"], obj["spec"]["predictor"]
    assert meta["annotations"]["serving.kserve.io/deploymentMode"] == mode.value
    assert meta["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert meta["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert meta["annotations"]["prometheus.kserve.io/port"] == "8080"
    assert meta["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    model = pred["model"]
    assert model["storageUri"] == OCI and model["runtime"] == "llmops-llm"
    assert model["modelFormat"] == {"name": "llmops-llm"}
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["resources"]["limits"]["memory"] == "24Gi"
    assert "--model_version=7" in model["args"]  # the server labels its metrics with it
    assert pred["nodeSelector"] == dict(GPU_NODES)
    assert pred["tolerations"] == list(GPU_TAINT)
    assert (pred["minReplicas"], pred["maxReplicas"]) == (1, 4)
    assert (pred["scaleMetric"], pred["scaleTarget"]) == ("concurrency", 4)
    assert pred["serviceAccountName"] == "llmops-predictor"
    validate_isvc(obj)  # render_isvc already did; say it explicitly


def test_image_mode_has_writable_tmp_and_cache_on_read_only_root():
    pred = render_isvc(ServiceSpec("llm", predictor=PredictorSpec(image=f"r.example/server@{DIGEST}")))["spec"]["predictor"]
    c = pred["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/var/cache/huggingface"} <= mounts
    assert {v["name"] for v in pred["volumes"]} == {m["name"] for m in c["volumeMounts"]}


def test_prometheus_annotations_can_be_left_out():
    obj = render_isvc(ServiceSpec("llm", predictor=production_predictor(), prometheus_scraping=False))
    assert "serving.kserve.io/enable-prometheus-scraping" not in obj["metadata"]["annotations"]


@pytest.mark.parametrize(
    "make, field, fix",
    [
        (lambda: production_predictor(node_selector=()), "node_selector:", "nvidia.com/gpu.present"),
        (lambda: production_predictor(min_replicas=5, max_replicas=2), "min_replicas:", "above max_replicas 2"),
        (lambda: production_predictor(storage_uri="oci://registry.example.com/llmops/llm:v7"), "storage_uri:", "sha256"),
        (lambda: production_predictor(storage_uri=None, image="registry.example.com/server:latest"), "image:", "sha256"),
        (lambda: production_predictor(scale_metric="gpu"), "scale_metric:", "concurrency"),
        (lambda: production_predictor(protocol_version="v3"), "protocol_version:", "v1, v2"),
        (lambda: production_predictor(tolerations=({"key": "x", "operator": "Maybe"},)), "tolerations:", "Exists"),
    ],
)
def test_bad_predictor_is_refused_naming_the_field(make, field, fix):
    with pytest.raises(IsvcSpecError) as err:
        render_isvc(ServiceSpec("llm", predictor=make()))
    assert str(err.value).startswith(field)
    assert fix in str(err.value)


def test_gpu_without_selector_is_allowed_when_not_required():
    obj = render_isvc(ServiceSpec("llm", predictor=production_predictor(node_selector=(), require_gpu_node_selector=False)))
    assert "nodeSelector" not in obj["spec"]["predictor"]


def test_unknown_deployment_mode_is_refused_listing_known_ones():
    with pytest.raises(IsvcSpecError, match=r"deployment_mode: unknown mode 'Knative'; use one of Serverless, Standard"):
        render_isvc(ServiceSpec("llm", predictor=production_predictor(), deployment_mode="Knative"))


def test_standard_canary_uses_spec_canary_entries():
    spec = ServiceSpec("llm", "models", production_predictor(), deployment_mode=DeploymentMode.STANDARD)
    candidate = production_predictor(storage_uri=OCI.replace("ab" * 32, "cd" * 32), model_version="8")
    obj = render_standard_canary(spec, candidate, 10)
    assert obj["spec"]["predictor"]["model"]["storageUri"] == OCI
    [entry] = obj["spec"]["canary"]
    assert entry["trafficPercent"] == 10
    assert entry["predictor"]["model"]["storageUri"].endswith("cd" * 32)
    assert "--model_version=8" in entry["predictor"]["model"]["args"]
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]


def test_standard_canary_refusals_name_the_field():
    serverless = ServiceSpec("llm", predictor=production_predictor())
    with pytest.raises(IsvcSpecError, match=r"^deployment_mode: spec.canary\[\] is for Standard mode"):
        render_standard_canary(serverless, production_predictor(), 10)
    standard = ServiceSpec("llm", predictor=production_predictor(), deployment_mode="standard")
    with pytest.raises(IsvcSpecError, match=r"^traffic_percent: must be an integer 0..100, got 101"):
        render_standard_canary(standard, production_predictor(), 101)
    with pytest.raises(IsvcSpecError, match=r"^canary.storage_uri: .* is not pinned by digest"):
        render_standard_canary(standard, production_predictor(storage_uri="oci://r.example/m:latest"), 10)


def test_serverless_canary_percent_refused_in_standard_mode():
    with pytest.raises(IsvcSpecError, match="^canary_traffic_percent: only Serverless mode"):
        render_isvc(ServiceSpec("llm", predictor=production_predictor(), deployment_mode="Standard"), 10)


def test_crd_refuses_a_field_kserve_does_not_know():
    obj = render_isvc(ServiceSpec("llm", predictor=production_predictor()))
    obj["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(IsvcSchemaError, match=r"spec.predictor.minReplicas: 'one' is not of type 'integer'"):
        validate_isvc(obj)
