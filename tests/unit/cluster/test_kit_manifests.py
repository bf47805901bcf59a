"""Every manifest the kit ships or renders passes its schema; the kustomize tree matches the renderer."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serving.cluster import render
from serving.cluster.render import KitError, KitSpec, kustomize_files, render_kit
from serving.cluster.validate import KUBERNETES_VERSION, ManifestSchemaError, validate_all, validate_manifest
from serving.isvc import DeploymentMode, PredictorSpec

KIT = render.KIT_DIR
OCI = "oci://registry.example.com/llmops/llm@sha256:" + "ab" * 32
IMAGE = "registry.example.com/llmops/model-server@sha256:" + "cd" * 32


def full_kit(mode: DeploymentMode) -> list[dict]:
    gpu = PredictorSpec(gpus=1, node_selector=(("nvidia.com/gpu.present", "true"),), memory="24Gi", max_replicas=3)
    kit = KitSpec(namespace="team-a", model="chat", mode=mode, runtime_image=IMAGE, storage_uri=OCI, predictor=gpu)
    return render_kit(kit, include_cluster_scoped=True)


def kept_manifests() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(KIT.rglob("*.yaml")):
        if "crds" in path.parts or path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


@pytest.mark.parametrize("mode", list(DeploymentMode))
def test_rendered_kit_passes_every_schema(mode):
    objs = full_kit(mode)
    kinds = [o["kind"] for o in objs]
    assert kinds == [
        "ClusterServingRuntime", "ServiceAccount", "ServiceAccount", "ServiceAccount",
        "Role", "RoleBinding", "Role", "RoleBinding",
        "ServingRuntime", "NetworkPolicy", "PodMonitor", "InferenceService",
    ]
    assert validate_all(objs) == len(objs)


def test_every_kept_manifest_passes_its_schema():
    docs = kept_manifests()
    assert {d["kind"] for _, d in docs} >= {"ClusterServingRuntime", "ServingRuntime", "ServiceAccount", "Role",
                                            "RoleBinding", "NetworkPolicy", "PodMonitor"}
    for path, doc in docs:
        validate_manifest(doc)


def test_kept_tree_is_what_the_renderer_writes():
    expected = kustomize_files()
    on_disk = {
        str(p.relative_to(KIT)): p.read_text()
        for sub in ("base", "overlays", "clusterwide")
        for p in (KIT / sub).rglob("*")
        if p.is_file()
    }
    assert on_disk == expected, "run `python -m serving.cluster.render --write-kustomize`"


@pytest.mark.parametrize("kdir", ["base", "clusterwide", "overlays/serverless", "overlays/standard"])
def test_kustomization_lists_exactly_the_files_that_exist(kdir):
    folder = KIT / kdir
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    local = {r for r in listed if not r.startswith("..")}
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != "kustomization.yaml"}
    assert local == present
    for ref in (r for r in listed if r.startswith("..")):
        assert (folder / ref / "kustomization.yaml").is_file()


def _kustomize_in_python(mode: DeploymentMode, namespace: str) -> list[dict]:
    """What kustomize does to this tree: base + overlay resources, namespace set, subjects rewritten."""
    objs = []
    for kdir in ("base", f"overlays/{mode.value.lower()}"):
        folder = KIT / kdir
        for res in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]:
            if res.endswith(".yaml"):
                objs += [d for d in yaml.safe_load_all((folder / res).read_text()) if d]
    for o in objs:
        o["metadata"]["namespace"] = namespace
        for s in o.get("subjects", []):
            if s.get("namespace") == "default":
                s["namespace"] = namespace
    return objs


def _key(o: dict) -> tuple:
    return (o["kind"], o["metadata"]["name"])


@pytest.mark.parametrize("mode", list(DeploymentMode))
def test_overlay_equals_renderer_output(mode):
    rendered = render_kit(KitSpec(mode=mode))
    overlay = _kustomize_in_python(mode, render.DEFAULT_NAMESPACE)
    assert sorted(overlay, key=_key) == sorted(rendered, key=_key)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) is not installed")
@pytest.mark.parametrize("mode", list(DeploymentMode))
def test_kubectl_kustomize_builds_what_the_renderer_renders(mode):
    out = subprocess.run(
        ["kubectl", "kustomize", str(KIT / "overlays" / mode.value.lower())],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(built, key=_key) == sorted(render_kit(KitSpec(mode=mode)), key=_key)


def test_serving_runtime_is_what_kserve_needs():
    rt = render.render_serving_runtime(KitSpec(runtime_image=IMAGE), "ns")
    spec = rt["spec"]
    assert spec["supportedModelFormats"][0]["name"] == "llmops-llm"
    c = spec["containers"][0]
    assert c["image"] == IMAGE
    assert c["args"] == ["--model_dir=/mnt/models", "--model_name={{.Name}}", "--http_port=8080"]
    assert c["ports"][0]["containerPort"] == 8080
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert spec["annotations"] == {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/var/cache/huggingface"}
    assert {v["name"]: "emptyDir" in v for v in spec["volumes"]} == {n: True for n in mounts.values()}
    assert {"name": "HF_HOME", "value": "/var/cache/huggingface"} in c["env"]


@pytest.mark.parametrize(
    "mode, serving_ports, from_ns",
    [
        (DeploymentMode.SERVERLESS, [8012, 8022, 9090], ["knative-serving", "istio-system"]),
        (DeploymentMode.STANDARD, [8080], ["envoy-gateway-system"]),
    ],
)
def test_network_policy_admits_only_ingress_and_prometheus(mode, serving_ports, from_ns):
    np = render.render_network_policy(KitSpec(model="chat", mode=mode), "ns")
    spec = np["spec"]
    assert spec["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "chat", "component": "predictor"}
    assert spec["policyTypes"] == ["Ingress"]
    serving, metrics = spec["ingress"]
    names = lambda rule: [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in rule["from"]]  # noqa: E731
    assert names(serving) == from_ns and [p["port"] for p in serving["ports"]] == serving_ports
    assert names(metrics) == ["monitoring"] and [p["port"] for p in metrics["ports"]] == [8080]


def test_network_policy_namespaces_are_configurable():
    np = render.render_network_policy(KitSpec(ingress_namespaces=("gw",), prometheus_namespace="prom"), "ns")
    assert [r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for r in np["spec"]["ingress"]] == ["gw", "prom"]


def test_pod_monitor_selects_the_predictor_pods():
    for mode, port in ((DeploymentMode.SERVERLESS, "user-port"), (DeploymentMode.STANDARD, "http1")):
        pm = render.render_pod_monitor(KitSpec(model="chat", mode=mode), "ns")
        assert pm["spec"]["selector"]["matchLabels"]["serving.kserve.io/inferenceservice"] == "chat"
        (endpoint,) = pm["spec"]["podMetricsEndpoints"]
        assert {k: endpoint[k] for k in ("port", "path", "interval")} == {"port": port, "path": "/metrics", "interval": "15s"}
        # the version relabelling too, whatever runtime the kit was rendered for: a release may pick vLLM later
        assert [r["targetLabel"] for r in endpoint["relabelings"]] == ["revision", "model_version"]


def test_predictor_service_account_has_no_token_and_a_pull_secret():
    sa = next(o for o in render.render_service_accounts("ns") if o["metadata"]["name"] == "llmops-predictor")
    assert sa["automountServiceAccountToken"] is False
    assert sa["imagePullSecrets"] == [{"name": "llmops-registry-pull"}]


@pytest.mark.parametrize(
    "kit, message",
    [
        (KitSpec(runtime_image="registry.example.com/server:1.0"), "runtime_image: 'registry.example.com/server:1.0' is not pinned by digest"),
        (KitSpec(storage_uri="oci://r.example/m:v1"), "storage_uri: 'oci://r.example/m:v1' is not pinned by digest"),
        (KitSpec(mode="Knative"), "mode: unknown mode 'Knative'; use one of Serverless, Standard"),
        (KitSpec(namespace="Team_A"), "namespace: 'Team_A' is not a valid namespace name"),
        (KitSpec(model="9chat"), "model: '9chat' is not a DNS-1035 label"),
        (KitSpec(ingress_namespaces=()), "ingress_namespaces: at least one namespace"),
        (KitSpec(storage_uri=OCI, predictor=PredictorSpec(gpus=2)), "node_selector: a GPU request needs a node selector"),
        (KitSpec(storage_uri=OCI, predictor=PredictorSpec(min_replicas=3, max_replicas=1)), "min_replicas: 3 is above max_replicas 1"),
    ],
)
def test_bad_kit_is_refused_naming_the_field(kit, message):
    with pytest.raises(KitError) as err:
        render_kit(kit)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "kind, mutate, message",
    [
        ("ServingRuntime", lambda o: o["spec"]["containers"][0].__setitem__("imagePolicy", "x"),
         "spec.containers.0: Additional properties are not allowed ('imagePolicy' was unexpected)"),
        ("ServingRuntime", lambda o: o["spec"]["containers"][0]["ports"][0].__setitem__("containerPort", "http"),
         "spec.containers.0.ports.0.containerPort: 'http' is not of type 'integer'"),
        ("ServingRuntime", lambda o: o["spec"].__setitem__("supportedModelFormat", []),
         "'supportedModelFormat' was unexpected"),
        ("Role", lambda o: o["rules"][0].__setitem__("verb", ["get"]), "rules.0"),
        ("NetworkPolicy", lambda o: o["spec"]["ingress"][0]["ports"][0].__setitem__("protocol", 6), "ingress.0.ports.0.protocol"),
        ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0].__setitem__("portName", "http"),
         "'portName' was unexpected"),
        ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0]["relabelings"][0].__setitem__("source_labels", ["x"]),
         "'source_labels' was unexpected"),
        ("PodMonitor", lambda o: o["spec"].pop("selector"), "'selector' is a required property"),
        ("InferenceService", lambda o: o["spec"]["predictor"].__setitem__("maxReplicas", "many"),
         "spec.predictor.maxReplicas: 'many' is not of type 'integer'"),
    ],
)
def test_schema_refuses_a_broken_manifest(kind, mutate, message):
    obj = copy.deepcopy(next(o for o in full_kit(DeploymentMode.SERVERLESS) if o["kind"] == kind))
    mutate(obj)
    with pytest.raises(ManifestSchemaError) as err:
        validate_manifest(obj)
    assert message in str(err.value)
    assert f"{kind}/" in str(err.value)


def test_unknown_builtin_kind_is_refused():
    with pytest.raises(ManifestSchemaError, match=f"Couldn't find schema for kind Gizmo .* version {KUBERNETES_VERSION}"):
        validate_manifest({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}})
