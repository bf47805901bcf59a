"""Build and push real images to a real registry (docker-registry on loopback), read them back with skopeo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from components.build_image import (
    AuthError,
    BaseImageNotFound,
    BuildEvent,
    Credentials,
    ModelFolderError,
    RegistryUnreachable,
    build_image,
)
from oci_images.registry import OCI_INDEX, RegistryClient
from oci_images.reference import parse_image_ref
from tests.support.oci_registry import free_port, registry_available, run_registry

pytestmark = pytest.mark.integration

if registry_available():
    pytest.skip(registry_available(), allow_module_level=True)
if not shutil.which("skopeo"):
    pytest.skip("skopeo is not installed: apt-get install skopeo", allow_module_level=True)

SMALL = 256 << 10  # split threshold for tests: files >= 256 KiB get their own layer


def _skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def busybox_base(registry, tmp_path_factory) -> str:
    """A modelcar base built from Debian's busybox-static by our own builder, from scratch."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("/bin/busybox missing: apt-get install busybox-static")
    root = tmp_path_factory.mktemp("busybox-root")
    (root / "bin").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "ln", "sleep"):
        os.link(root / "bin" / "busybox", root / "bin" / applet)
    result = build_image(root, f"{registry.host}/base/busybox:1", mode="plain", base=None, insecure=True,
                         cmd=["sh"], user="65532:65532")
    return f"{registry.host}/base/busybox:1" if result.tag == "1" else result.reference


@pytest.fixture(scope="module")
def runtime_base(registry, tmp_path_factory) -> str:
    """A fake serving runtime: a layer with a python script and an entrypoint."""
    root = tmp_path_factory.mktemp("runtime-root")
    (root / "app").mkdir()
    (root / "app" / "serve.py").write_text("import sys\nprint('serving', sys.argv[1:])\n")
    build_image(root, f"{registry.host}/base/runtime:1", mode="plain", base=None, insecure=True,
                entrypoint=["python", "/app/serve.py"], env={"PORT": "8080"}, user="1000:1000")
    return f"{registry.host}/base/runtime:1"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    d = tmp_path / "model"
    (d / "tokenizer").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    (d / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    (d / "model.safetensors").write_bytes(os.urandom(600 << 10))  # own layer
    (d / "extra.safetensors").write_bytes(os.urandom(300 << 10))  # own layer
    return d


def _copy_to_layout(ref: str, dest: Path) -> tuple[dict, dict]:
    _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:x")
    index = json.loads((dest / "index.json").read_text())
    mdigest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((dest / "blobs" / "sha256" / mdigest).read_text())
    config = json.loads((dest / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    return manifest, config


def _files_in_layers(layout: Path, manifest: dict, prefix: str) -> dict[str, tuple[str, int]]:
    """path under ``prefix`` -> (sha256, mode) across all layers."""
    out: dict[str, tuple[str, int]] = {}
    for layer in manifest["layers"]:
        with tarfile.open(layout / "blobs" / "sha256" / layer["digest"].split(":")[1]) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(prefix):
                    data = tar.extractfile(member).read()
                    out[member.name[len(prefix):]] = (hashlib.sha256(data).hexdigest(), member.mode)
                    assert member.uid == 0 and member.gid == 0 and member.mtime == 0
    return out


def test_modelcar_push_is_readable_by_skopeo_and_matches_folder(registry, busybox_base, model_dir, tmp_path):
    result = build_image(model_dir, f"{registry.host}/models/tiny:v1", base=busybox_base, insecure=True,
                         split_threshold=SMALL, model_name="tiny", model_version="3", source_revision="abc123")
    assert result.reference.startswith(f"{registry.host}/models/tiny@sha256:")
    assert result.tag == "v1" and registry.tags("models/tiny") == ["v1"]
    # base layer mounted (cross-repository), 2 large-file layers + 1 rest layer + config uploaded
    assert result.blobs_skipped == 1 and result.blobs_uploaded == 4
    assert [layer.from_base for layer in result.layers] == [True, False, False, False]

    info = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/models/tiny:v1"))
    assert info["Digest"] == result.digest
    assert info["Labels"]["io.llmops.model.name"] == "tiny"
    assert info["Labels"]["io.llmops.model.version"] == "3"
    assert info["Labels"]["io.llmops.model.digest"] == result.model_digest
    assert info["Labels"]["org.opencontainers.image.revision"] == "abc123"
    assert info["Labels"]["org.opencontainers.image.base.name"] == busybox_base

    layout = tmp_path / "copied"
    manifest, config = _copy_to_layout(result.reference, layout)
    files = _files_in_layers(layout, manifest, "models/")
    expected = {p.relative_to(model_dir).as_posix(): _sha(p) for p in model_dir.rglob("*") if p.is_file()}
    assert {k: v[0] for k, v in files.items()} == expected
    assert all(mode == 0o644 for _, mode in files.values())
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Cmd"] == ["sh"]  # base command kept
    bins = _files_in_layers(layout, manifest, "bin/")
    assert set(bins) == {"busybox", "sh", "ln", "sleep"} and bins["sh"][1] == 0o755
    assert len(config["rootfs"]["diff_ids"]) == 4 and len(config["history"]) >= 4


def test_serving_image_keeps_runtime_entrypoint_and_puts_model_under_mnt_models(registry, runtime_base, model_dir,
                                                                                tmp_path):
    result = build_image(model_dir, f"{registry.host}/serving/tiny", mode="serving", base=runtime_base,
                         insecure=True, tag="v2", split_threshold=SMALL, env={"MODEL_DIR": "/mnt/models"})
    layout = tmp_path / "copied"
    manifest, config = _copy_to_layout(result.reference, layout)
    assert config["config"]["Entrypoint"] == ["python", "/app/serve.py"]
    assert config["config"]["User"] == "1000:1000"  # a non-root base user is kept
    assert "PORT=8080" in config["config"]["Env"] and "MODEL_DIR=/mnt/models" in config["config"]["Env"]
    assert set(_files_in_layers(layout, manifest, "mnt/models/")) == {
        "config.json", "tokenizer/tokenizer.json", "model.safetensors", "extra.safetensors"}
    assert "serve.py" in _files_in_layers(layout, manifest, "app/")


def test_same_folder_twice_gives_same_digest_and_uploads_nothing(registry, busybox_base, model_dir):
    target = f"{registry.host}/models/repro:v1"
    first = build_image(model_dir, target, base=busybox_base, insecure=True, split_threshold=SMALL)
    second = build_image(model_dir, target, base=busybox_base, insecure=True, split_threshold=SMALL)
    assert second.digest == first.digest
    assert second.blobs_uploaded == 0 and second.bytes_uploaded == 0
    assert second.blobs_skipped == len(second.layers) + 1  # every layer and the config


def test_changed_small_file_uploads_only_its_layer(registry, busybox_base, model_dir):
    target = f"{registry.host}/models/delta:v1"
    first = build_image(model_dir, target, base=busybox_base, insecure=True, split_threshold=SMALL)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3}))
    second = build_image(model_dir, target, base=busybox_base, insecure=True, split_threshold=SMALL)
    assert second.digest != first.digest
    changed = {layer.digest for layer in second.layers} - {layer.digest for layer in first.layers}
    assert len(changed) == 1  # only the small-files layer
    assert second.blobs_uploaded == 2  # that layer and the new config
    small_layer = next(layer for layer in second.layers if layer.digest in changed)
    assert second.bytes_uploaded < small_layer.size + 4096  # weights not re-sent
    assert second.bytes_uploaded < 300 << 10


def test_interrupted_push_leaves_no_tag_and_rerun_sends_only_the_rest(tmp_path, busybox_base, model_dir):
    with run_registry(tmp_path / "reg") as reg:
        sent: list[BuildEvent] = []

        def crash_after_two(event: BuildEvent) -> None:
            if event.kind == "blob_uploaded":
                sent.append(event)
                if len(sent) == 2:
                    reg.kill()  # the registry dies between blobs, as a crash would

        target = f"{reg.host}/models/crash:v1"
        with pytest.raises(RegistryUnreachable, match="did not answer"):
            build_image(model_dir, target, base=None, insecure=True, split_threshold=SMALL, on_event=crash_after_two)
        reg.start()
        assert reg.tags("models/crash") == []  # no tag points at a half-pushed image
        result = build_image(model_dir, target, base=None, insecure=True, split_threshold=SMALL)
        assert result.blobs_skipped == 2  # the two blobs that arrived before the crash
        assert result.blobs_uploaded == 2  # the third layer and the config
        arrived = {e.digest for e in sent}
        assert arrived <= {layer.digest for layer in result.layers}
        rest = [layer for layer in result.layers if layer.digest not in arrived]
        assert len(rest) == 1  # only the layer that had not arrived is sent again (plus the small config)
        assert rest[0].size <= result.bytes_uploaded < rest[0].size + 4096
        assert reg.tags("models/crash") == ["v1"]
        json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{result.reference}"))


def test_multi_arch_base_index_picks_the_requested_platform(registry, tmp_path, model_dir):
    root = tmp_path / "r"
    root.mkdir()
    (root / "marker").write_text("x")
    amd = build_image(root, f"{registry.host}/base/multi", mode="plain", base=None, insecure=True,
                      platform="linux/amd64", labels={"arch": "amd64"})
    arm = build_image(root, f"{registry.host}/base/multi", mode="plain", base=None, insecure=True,
                      platform="linux/arm64/v8", labels={"arch": "arm64"})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d.digest, "size": 0,
         "platform": {"os": "linux", "architecture": arch, **({"variant": "v8"} if arch == "arm64" else {})}}
        for d, arch in ((arm, "arm64"), (amd, "amd64"))]}
    with RegistryClient(registry.host, insecure=True) as client:
        for entry in index["manifests"]:
            entry["size"] = len(client.get_manifest(parse_image_ref(f"{registry.host}/base/multi@{entry['digest']}")).body)
        client.put_manifest("base/multi", "all", json.dumps(index).encode(), OCI_INDEX)
    for platform, arch in (("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")):
        res = build_image(model_dir, f"{registry.host}/models/multi:{arch}", base=f"{registry.host}/base/multi:all",
                          insecure=True, platform=platform)
        info = json.loads(_skopeo("inspect", "--tls-verify=false", f"--override-arch={arch}",
                                  f"docker://{res.reference}"))
        assert info["Architecture"] == arch and info["Labels"]["arch"] == arch
    with pytest.raises(BaseImageNotFound, match=r"no manifest for platform linux/s390x .*linux/amd64"):
        build_image(model_dir, f"{registry.host}/models/multi:s390x", base=f"{registry.host}/base/multi:all",
                    insecure=True, platform="linux/s390x")


def test_oci_layout_target_is_readable_by_skopeo(registry, busybox_base, model_dir, tmp_path):
    layout = tmp_path / "layout"
    result = build_image(model_dir, f"oci-layout:{layout}:v1", base=busybox_base, insecure=True,
                         split_threshold=SMALL)
    assert result.reference == f"oci-layout:{layout}@{result.digest}"
    info = json.loads(_skopeo("inspect", f"oci:{layout}:v1"))
    assert info["Digest"] == result.digest and len(info["Layers"]) == 4
    pushed = build_image(model_dir, f"{registry.host}/models/same:v1", base=busybox_base, insecure=True,
                         split_threshold=SMALL)
    assert {layer.digest for layer in pushed.layers} == {layer.digest for layer in result.layers}
    again = build_image(model_dir, f"oci-layout:{layout}:v1", base=busybox_base, insecure=True, split_threshold=SMALL)
    assert again.digest == result.digest and again.blobs_uploaded == 0


# -- refusals ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    with run_registry(tmp_path_factory.mktemp("auth-registry"), auth=("alice", "s3cret")) as reg:
        yield reg


def test_basic_auth_push_with_explicit_and_docker_config_credentials(auth_registry, model_dir, tmp_path, monkeypatch):
    ok = build_image(model_dir, f"{auth_registry.host}/models/auth:v1", base=None, insecure=True,
                     credentials=Credentials(username="alice", password="s3cret"))
    assert auth_registry.tags("models/auth") == ["v1"]
    cfg = tmp_path / "dockercfg"
    cfg.mkdir()
    import base64

    token = base64.b64encode(b"alice:s3cret").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {f"http://{auth_registry.host}": {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    again = build_image(model_dir, f"{auth_registry.host}/models/auth:v2", base=None, insecure=True)
    assert again.digest == ok.digest and again.blobs_uploaded == 0


def test_wrong_credentials_raise_auth_error(auth_registry, model_dir, monkeypatch, tmp_path):
    with pytest.raises(AuthError, match=r"refused .* with user 'alice': check the username and password"):
        build_image(model_dir, f"{auth_registry.host}/models/auth:bad", base=None, insecure=True,
                    credentials=Credentials(username="alice", password="wrong"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no config.json there
    with pytest.raises(AuthError, match=r"with no credentials: pass credentials=.*docker login"):
        build_image(model_dir, f"{auth_registry.host}/models/auth:anon", base=None, insecure=True)
    assert "bad" not in auth_registry.tags("models/auth")


def test_unreachable_registry_raises_with_fix(model_dir):
    port = free_port()  # nothing listens there
    with pytest.raises(RegistryUnreachable, match=rf"registry 127.0.0.1:{port} did not answer .*registry is running"):
        build_image(model_dir, f"127.0.0.1:{port}/models/x:v1", base=None, insecure=True)
    with pytest.raises(RegistryUnreachable, match="insecure=True"):
        build_image(model_dir, f"127.0.0.1:{port}/models/x:v1", base=None, insecure=False)


def test_missing_base_raises_base_image_not_found(registry, model_dir):
    with pytest.raises(BaseImageNotFound, match=r"base/nothing:1 not found .*push the base image first"):
        build_image(model_dir, f"{registry.host}/models/x:v1", base=f"{registry.host}/base/nothing:1", insecure=True)
    assert registry.tags("models/x") == []


def test_missing_or_empty_model_folder_refused_before_any_network_call(tmp_path):
    unreachable = f"127.0.0.1:{free_port()}/models/x:v1"
    with pytest.raises(ModelFolderError, match="does not exist: pass the folder"):
        build_image(tmp_path / "nope", unreachable, base=None, insecure=True)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ModelFolderError, match="holds no file: write the model into it first"):
        build_image(tmp_path / "empty", unreachable, base=None, insecure=True)


def test_registry_answers_v2_with_basic_challenge(auth_registry):
    resp = httpx.get(f"{auth_registry.url}/v2/")
    assert resp.status_code == 401 and resp.headers["www-authenticate"].lower().startswith("basic")


def test_image_reference_recorded_on_mlflow_version(registry, model_dir, tmp_path):
    """The component's lineage call, against a real MLflow store (SQLite)."""
    from mlflow.tracking import MlflowClient

    from components.build_image.lineage import record_image

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("tiny")
    # a version as model_registry leaves it after registration (visible once tagged ready)
    from model_registry.registration import STATUS_TAG

    mv = client.create_model_version("tiny", source=str(model_dir), tags={STATUS_TAG: "ready"})
    result = build_image(model_dir, f"{registry.host}/models/lineage:v1", base=None, insecure=True)
    written = record_image(result, "tiny", mv.version, tracking_uri=uri)
    tags = client.get_model_version("tiny", mv.version).tags
    assert tags["llmops.image_ref"] == result.reference == written["llmops.image_ref"]
    assert tags["llmops.image_digest"] == result.digest
