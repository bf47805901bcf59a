"""Names that cross the cluster boundary agree everywhere (issue 12 defects 4 and 5).

One source, :mod:`serving.cluster.names`; this test reads what the others say:
the compiled pipeline's platform spec and images, the commands and tables in
docs/cluster.md, the CI workflows and the kit's manifests.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from serving.cluster import names

ROOT = Path(__file__).resolve().parents[3]
DOCS = (ROOT / "docs" / "cluster.md").read_text()
COMPILED = list(yaml.safe_load_all((ROOT / "pipelines" / "llm_release.yaml").read_text()))
SPEC = COMPILED[0]
PLATFORM = COMPILED[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
EXECUTORS = SPEC["deploymentSpec"]["executors"]
MLFLOW_KEYS = {names.MLFLOW_URI_KEY, *names.MLFLOW_CREDENTIAL_KEYS}


def _commands(text: str) -> list[list[str]]:
    """Every shell command in the ```bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line))
    return out


def _secrets_in_docs() -> dict[str, list[str]]:
    found = {}
    for argv in _commands(DOCS):
        if argv[:1] == ["kubectl"] and "secret" in argv and "create" in argv:
            i = argv.index("secret")
            found[argv[i + 2]] = [argv[i + 1], *argv[i + 3:]]
    return found


# --- compiled pipeline --------------------------------------------------------------


def test_compiled_pipeline_mounts_only_the_named_secrets():
    envs, volumes = set(), set()
    for executor, spec in PLATFORM.items():
        for ref in spec.get("secretAsEnv", []):
            for pair in ref["keyToEnv"]:
                envs.add((ref["secretName"], pair["secretKey"], pair["envVar"], ref.get("optional", False)))
        for ref in spec.get("secretAsVolume", []):
            volumes.add((executor, ref["secretName"], ref["mountPath"]))
    assert {(s, k) for s, k, _, _ in envs} <= {(names.MLFLOW_SECRET, k) for k in MLFLOW_KEYS} | {(names.HF_SECRET, names.HF_TOKEN_KEY)}
    assert all(key == env for _, key, env, _ in envs), "MLflow reads the variables by the Secret's key names"
    # a missing MLflow secret stops the pod; the credentials stay optional
    assert (names.MLFLOW_SECRET, names.MLFLOW_URI_KEY, names.MLFLOW_URI_KEY, False) in envs
    assert volumes == {("exec-build-image-op", names.REGISTRY_PUSH_SECRET, names.DOCKER_CONFIG_DIR)}


def test_docker_config_points_at_the_mounted_push_secret():
    env = {e["name"]: e["value"] for e in EXECUTORS["exec-build-image-op"]["container"].get("env", [])}
    assert env.get(names.DOCKER_CONFIG_ENV) == names.DOCKER_CONFIG_DIR


def test_every_step_runs_in_the_built_image_and_installs_nothing():
    for name, executor in EXECUTORS.items():
        container = executor["container"]
        if name.startswith("exec-kaniko"):
            continue
        assert container["image"] == names.COMPONENTS_IMAGE, name
        script = " ".join(container.get("command", []) + container.get("args", []))
        assert "pip install" not in script and "pip3 install" not in script, f"{name} pip-installs at start"


def test_rollout_step_has_the_cluster_parameters():
    inputs = SPEC["root"]["inputDefinitions"]["parameters"]
    assert inputs["metrics_provider"]["defaultValue"] == "prometheus"
    assert inputs["prometheus_url"]["defaultValue"] == names.DEFAULT_PROMETHEUS_URL
    assert inputs["namespace"]["defaultValue"] == names.DEFAULT_NAMESPACE
    assert inputs["predictor_service_account"]["defaultValue"] == names.PREDICTOR_SA
    assert inputs["finetune_gpus"]["defaultValue"] == 0  # no GPU unless asked
    container = EXECUTORS["exec-rollout"]["container"]
    script = " ".join(container["command"] + container["args"])
    assert "run_rollout_step" in script and "pipelines.cli" not in script


def test_version_is_the_packages():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["version"] == names.VERSION


# --- docs/cluster.md ------------------------------------------------------------------


def test_docs_create_the_secrets_the_pipeline_and_kit_read():
    secrets = _secrets_in_docs()
    kind, *args = secrets[names.MLFLOW_SECRET]
    keys = {a.split("=", 2)[1] for a in args if a.startswith("--from-literal=")}
    assert kind == "generic" and names.MLFLOW_URI_KEY in keys and keys <= MLFLOW_KEYS
    kind, *args = secrets[names.REGISTRY_PUSH_SECRET]
    assert kind == "generic" and any(a.startswith(f"--from-file={names.REGISTRY_PUSH_KEY}=") for a in args)
    assert secrets[names.REGISTRY_PULL_SECRET][0] == "docker-registry"
    kind, *args = secrets[names.HF_SECRET]
    assert any(a.startswith(f"--from-literal={names.HF_TOKEN_KEY}=") for a in args)
    assert set(secrets) == {names.MLFLOW_SECRET, names.REGISTRY_PUSH_SECRET, names.REGISTRY_PULL_SECRET, names.HF_SECRET}


def test_docs_submit_command_matches_the_pipeline():
    (submit,) = [a for a in _commands(DOCS) if a[:2] == ["llmops", "submit"]]
    assert submit[submit.index("--service-account") + 1] == names.PIPELINE_SA
    params = dict(submit[i + 1].split("=", 1) for i, a in enumerate(submit) if a == "--param")
    inputs = SPEC["root"]["inputDefinitions"]["parameters"]
    assert set(params) <= set(inputs), sorted(set(params) - set(inputs))
    assert params["prometheus_url"] == names.DEFAULT_PROMETHEUS_URL


@pytest.mark.parametrize("text", [names.DOCKER_CONFIG_DIR, names.COMPONENTS_IMAGE, names.RUNTIME_IMAGE_REPO,
                                  *names.ROLLOUT_ANNOTATIONS, names.PREDICTOR_SA, names.ROLLOUT_SA])
def test_docs_name_the_same_paths_and_images(text):
    assert text in DOCS


# --- CI workflows ------------------------------------------------------------------------


def test_ci_builds_the_images_under_the_names_and_tag_the_pipeline_uses():
    gh = yaml.safe_load((ROOT / "ci" / "github" / "llmops.yaml").read_text())
    assert gh["env"]["LLMOPS_VERSION"] == names.VERSION
    job = gh["jobs"]["images"]
    assert {e["name"] for e in job["strategy"]["matrix"]["include"]} == {names.COMPONENTS_IMAGE_NAME, names.RUNTIME_IMAGE_NAME}
    tags = next(s["with"]["tags"] for s in job["steps"] if "build-push" in s.get("uses", ""))
    assert "${{ matrix.name }}:${{ env.LLMOPS_VERSION }}" in tags
    gl = yaml.safe_load((ROOT / "ci" / "gitlab" / ".gitlab-ci.yml").read_text())
    assert gl["variables"]["LLMOPS_VERSION"] == names.VERSION
    assert {m["NAME"] for m in gl["images"]["parallel"]["matrix"]} == {names.COMPONENTS_IMAGE_NAME, names.RUNTIME_IMAGE_NAME}
    assert "$NAME:$LLMOPS_VERSION" in " ".join(gl["images"]["script"])


def test_ci_promote_passes_the_mlflow_secret_keys():
    gh = yaml.safe_load((ROOT / "ci" / "github" / "llmops.yaml").read_text())
    step = next(s for s in gh["jobs"]["promote"]["steps"] if s.get("name") == "llmops promote")
    assert set(step["env"]) == MLFLOW_KEYS


# --- the kit --------------------------------------------------------------------------------


def test_kit_uses_the_runtime_image_the_pull_secret_and_the_accounts():
    docs = [d for f in (ROOT / "serving" / "cluster" / "base").glob("*.yaml") for d in yaml.safe_load_all(f.read_text()) if d]
    runtime = next(d for d in docs if d["kind"] == "ServingRuntime")
    assert runtime["spec"]["containers"][0]["image"].split("@")[0] == names.RUNTIME_IMAGE_REPO
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert set(sas) == {names.PIPELINE_SA, names.ROLLOUT_SA, names.PREDICTOR_SA}
    assert sas[names.PREDICTOR_SA]["imagePullSecrets"] == [{"name": names.REGISTRY_PULL_SECRET}]


def test_kit_keeps_the_rollout_annotations_out_of_knative_revisions():
    import json

    from serving.cluster.render import KSERVE_CONFIG_PATCH, render_kserve_config_patch

    path = ROOT / "serving" / "cluster" / KSERVE_CONFIG_PATCH
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert doc == render_kserve_config_patch(), "run `python -m serving.cluster.render --write-kustomize`"
    value = json.loads(doc["data"]["inferenceService"])
    assert value["serviceAnnotationDisallowedList"] == list(names.ROLLOUT_ANNOTATIONS)
    assert "resource" in value  # KServe's default survives the merge patch
    assert f"--patch-file serving/cluster/{KSERVE_CONFIG_PATCH}" in DOCS
