"""Unit tests of the image step: references, reproducible layers, auth, config, builders, CLI."""


import base64
import hashlib
import json
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from components.build_image import (
    AuthError,
    BuilderUnavailable,
    BuildSpec,
    Credentials,
    ImageBuildError,
    ModelFolderError,
    Mode,
    build_image,
    make_builder,
)
from oci_images.auth import credentials_from_docker_config
from components.build_image.builders.kaniko import KANIKO_EXECUTOR, KanikoBuilder, kaniko_args
from components.build_image.dockerfile import render_dockerfile, write_build_context
from components.build_image.image import compose_config, scratch_base
from components.build_image.layers import build_layers
from oci_images.reference import ImageRef, LayoutRef, parse_image_ref, parse_target
from oci_images.registry import RegistryClient


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "tok.json").write_text("[]")
    (d / "run.sh").write_text("#!/bin/sh\n")
    (d / "run.sh").chmod(0o700)
    (d / "weights.bin").write_bytes(os.urandom(200_000))
    return d


# -- references ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("busybox", ImageRef("docker.io", "library/busybox")),
    ("127.0.0.1:5000/a/b:v1", ImageRef("127.0.0.1:5000", "a/b", "v1")),
    ("localhost/x@sha256:" + "a" * 64, ImageRef("localhost", "x", None, "sha256:" + "a" * 64)),
    ("ghcr.io/org/m:1.0", ImageRef("ghcr.io", "org/m", "1.0")),
])
def test_parse_image_ref(text, expected):
    assert parse_image_ref(text) == expected


@pytest.mark.parametrize("text,message", [
    ("Reg.io/UPPER:x", "repository 'UPPER'"),
    ("r.io/x@sha256:12", "is not 'sha256:' followed by 64"),
    ("r.io/x:bad tag", "tag .bad tag. in .* is not valid"),
    (" busybox", "has spaces"),
])
def test_parse_image_ref_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        parse_image_ref(text)


def test_parse_target_layout_and_digest_refused():
    assert parse_target("oci-layout:/tmp/x:v1") == LayoutRef("/tmp/x", "v1")
    assert parse_target("oci-layout:/tmp/x") == LayoutRef("/tmp/x", None)
    with pytest.raises(ValueError, match="pinned to a digest"):
        parse_target("r.io/x@sha256:" + "b" * 64)


# -- layers -------------------------------------------------------------------------------------------
def test_layers_are_reproducible_and_normalised(folder, tmp_path):
    a = build_layers(folder, "/models", tmp_path / "a", split_threshold=100_000, epoch=0)
    os.utime(folder / "config.json", (1e9, 1e9))  # mtimes must not matter
    b = build_layers(folder, "/models", tmp_path / "b", split_threshold=100_000, epoch=0)
    assert [l.digest for l in a.layers] == [l.digest for l in b.layers]
    assert a.tree_digest == b.tree_digest and len(a.layers) == 2  # weights alone, rest together
    with tarfile.open(a.layers[1].path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == sorted(members, key=lambda n: n.split("/"))
    assert members["models/run.sh"].mode == 0o755 and members["models/config.json"].mode == 0o644
    assert members["models/sub"].isdir() and members["models/sub"].mode == 0o755
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 and m.uname == "" for m in members.values())
    raw = a.layers[0].path.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # gzip: mtime 0, no name
    expected = hashlib.sha256((folder / "weights.bin").read_bytes()).hexdigest()
    assert a.file_hashes["weights.bin"] == expected


def test_epoch_changes_digest_and_uncompressed_layers(folder, tmp_path):
    a = build_layers(folder, "/models", tmp_path / "a", epoch=0)
    b = build_layers(folder, "/models", tmp_path / "b", epoch=1_700_000_000)
    c = build_layers(folder, "/models", tmp_path / "c", compress=False)
    assert a.layers[0].digest != b.layers[0].digest
    assert c.layers[0].digest == c.layers[0].diff_id == a.layers[0].diff_id


def test_folder_refusals(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        build_layers(tmp_path / "x", "/models", tmp_path / "o")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelFolderError, match="is a file, not a folder"):
        build_layers(tmp_path / "f", "/models", tmp_path / "o")
    (tmp_path / "d" / "real").mkdir(parents=True)
    (tmp_path / "d" / "real" / "a").write_text("a")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "d" / "real")
    with pytest.raises(ModelFolderError, match="symlink to a folder"):
        build_layers(tmp_path / "d", "/models", tmp_path / "o")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ModelFolderError, match="dangling symlink"):
        build_layers(tmp_path / "e", "/models", tmp_path / "o")


# -- auth ---------------------------------------------------------------------------------------------
def test_docker_config_auths(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "r.example:5000": {"auth": base64.b64encode(b"me:pa:ss").decode()},
    }}))
    assert credentials_from_docker_config("r.example:5000", cfg) == Credentials("me", "pa:ss")
    assert credentials_from_docker_config("docker.io", cfg) == Credentials("hub", "pw")
    assert credentials_from_docker_config("other.io", cfg) is None
    assert "pa:ss" not in repr(Credentials("me", "pa:ss"))
    cfg.write_text("{not json")
    with pytest.raises(AuthError, match="cannot read Docker config"):
        credentials_from_docker_config("r.example:5000", cfg)


def test_bearer_token_dance_over_http():
    """The registry's token flow at the HTTP boundary (no token-auth registry runs here)."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/token":
            assert request.headers["authorization"] == "Basic " + base64.b64encode(b"bob:pw").decode()
            assert request.url.params.get_list("scope") == ["repository:m/x:pull"]
            assert request.url.params["service"] == "reg"
            return httpx.Response(200, json={"token": "T0K"})
        if request.headers.get("authorization") != "Bearer T0K":
            return httpx.Response(401, headers={"WWW-Authenticate":
                'Bearer realm="https://auth.example/token",service="reg",scope="repository:m/x:pull"'})
        return httpx.Response(200, content=b'{"schemaVersion":2}',
                              headers={"content-type": "application/vnd.oci.image.manifest.v1+json"})

    client = RegistryClient("r.example", credentials=Credentials("bob", "pw"),
                            transport=httpx.MockTransport(handler))
    got = client.get_manifest(parse_image_ref("r.example/m/x:1"))
    assert got.body == b'{"schemaVersion":2}' and [r.url.path for r in seen] == [
        "/v2/m/x/manifests/1", "/token", "/v2/m/x/manifests/1"]
    client.get_manifest(parse_image_ref("r.example/m/x:1"))  # token cached: one request
    assert len(seen) == 4


# -- config -------------------------------------------------------------------------------------------
def test_compose_config_labels_user_history(folder, tmp_path):
    spec = BuildSpec(source_dir=folder, target="r.io/m:1", model_name="tiny", model_version="2",
                     source_revision="deadbeef", labels={"team": "ml"}, env={"A": "1"})
    layers = build_layers(folder, "/models", tmp_path / "o")
    cfg = compose_config(spec, scratch_base("linux/arm64/v8"), layers.layers, layers.tree_digest)
    labels = cfg["config"]["Labels"]
    assert labels["io.llmops.model.name"] == "tiny" and labels["io.llmops.model.digest"] == layers.tree_digest
    assert labels["org.opencontainers.image.revision"] == "deadbeef" and labels["team"] == "ml"
    assert cfg["config"]["User"] == "65532:65532" and cfg["config"]["Env"] == ["A=1"]
    assert (cfg["architecture"], cfg["variant"]) == ("arm64", "v8")
    assert cfg["rootfs"]["diff_ids"] == [l.diff_id for l in layers.layers]
    assert cfg["created"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize("kwargs,message", [
    ({"platform": "amd64"}, "platform 'amd64' must look like"),
    ({"compression_level": 0}, "compression_level 0 must be 1..9"),
    ({"target_path": "models"}, "must be absolute"),
    ({"env": {"A=B": "x"}}, "holds '='"),
    ({"target": "r.io/x@sha256:" + "c" * 64}, "target: .*pinned to a digest"),
    ({"base": "BAD BASE"}, "base: "),
])
def test_spec_validation_messages(folder, kwargs, message):
    spec = BuildSpec(**{"source_dir": folder, "target": "r.io/m:1", **kwargs})
    with pytest.raises(ValueError, match=message):
        spec.validate()


def test_build_image_refuses_bad_input_with_image_build_error(folder):
    with pytest.raises(ImageBuildError, match="unknown image mode 'car'; known modes: modelcar, serving, plain"):
        build_image(folder, "r.io/m:1", mode="car", base=None)
    with pytest.raises(ImageBuildError, match="invalid build request: platform"):
        build_image(folder, "r.io/m:1", base=None, platform="x")


# -- builders -----------------------------------------------------------------------------------------
def test_factory_refuses_unknown_name():
    with pytest.raises(ImageBuildError, match="unknown image builder 'buildah'; known builders: oci, docker, kaniko"):
        make_builder("buildah")
    assert make_builder("oci").name == "oci"


def test_docker_builder_without_daemon_says_fix(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(BuilderUnavailable, match="start dockerd or use --builder oci"):
        build_image(folder, "r.io/m:1", base=None, builder="docker")


def test_kaniko_renders_pinned_executor_and_args(folder):
    spec = BuildSpec(source_dir=folder, target="r.io:5000/m/x", tag="v3", base="r.io:5000/base:1", insecure=True)
    container = KanikoBuilder().render(spec, "/ctx", "/out/digest")
    assert container["image"] == KANIKO_EXECUTOR and "@sha256:" in container["image"]
    assert container["args"][:4] == ["--context=dir:///ctx", "--dockerfile=/ctx/Dockerfile",
                                     "--destination=r.io:5000/m/x:v3", "--digest-file=/out/digest"]
    assert "--reproducible" in container["args"] and "--insecure" in container["args"]
    with pytest.raises(ImageBuildError, match="registries only"):
        kaniko_args(BuildSpec(source_dir=folder, target="oci-layout:/x"), "/ctx", "/d")
    with pytest.raises(BuilderUnavailable, match="only inside a Kubernetes pod.*--builder oci"):
        build_image(folder, "r.io/m:1", base=None, builder="kaniko")
    with pytest.raises(ImageBuildError, match="pinned by digest"):
        KanikoBuilder(executor_image="gcr.io/kaniko-project/executor:latest")


def test_kaniko_component_compiles_into_a_pipeline(tmp_path):
    from kfp import compiler, dsl

    from components.build_image.component import kaniko_build_op, kaniko_context_op

    kaniko = kaniko_build_op()

    @dsl.pipeline(name="kaniko-build")
    def pipe(target: str = "r.io/m/x:1"):
        model = dsl.importer(artifact_uri="gs://bucket/model", artifact_class=dsl.Model)
        ctx = kaniko_context_op(model=model.output, target=target)
        kaniko(context=ctx.outputs["context"], destination=target)

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipe, str(out))
    text = out.read_text()
    assert KANIKO_EXECUTOR in text and "/kaniko/executor" in text and "--digest-file=" in text


def test_dockerfile_and_context(folder, tmp_path):
    spec = BuildSpec(source_dir=folder, target="r.io/m:1", mode=Mode.SERVING, base="r.io/runtime:1",
                     model_name="tiny")
    text = render_dockerfile(spec, "model")
    assert text.splitlines()[0] == "FROM r.io/runtime:1"
    assert "COPY --chown=0:0 model/ /mnt/models/" in text and 'LABEL "io.llmops.model.name"="tiny"' in text
    ctx = write_build_context(spec, tmp_path / "ctx")
    assert (ctx / "Dockerfile").is_file() and (ctx / "model" / "sub" / "tok.json").read_text() == "[]"
    assert (ctx / "model" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (folder / "run.sh").stat().st_mode & 0o777 == 0o700  # the user's file is left alone


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_writes_oci_layout_and_refuses_missing_folder(folder, tmp_path, capsys):
    from pipelines.cli import main

    assert main(["build-image", str(folder), f"oci-layout:{tmp_path / 'lay'}:v1", "--label", "a=b"]) == 0
    ref = capsys.readouterr().out.strip().splitlines()[-1]
    assert ref.startswith(f"oci-layout:{tmp_path / 'lay'}@sha256:")
    index = json.loads((tmp_path / "lay" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    assert main(["build-image", str(tmp_path / "none"), "r.io/m:1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["build-image", str(folder), "r.io/m:1", "--label", "novalue"]) == 2
    assert "must be KEY=VALUE" in capsys.readouterr().err
