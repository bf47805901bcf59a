"""Image documents: resolve a base (index -> platform manifest -> config), write the new config and manifest."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from oci_images.errors import BaseImageNotFound, ImageBuildError
from components.build_image.layers import Layer
from oci_images.reference import ImageRef
from oci_images.registry import (
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_MANIFEST,
    RegistryClient,
)
from components.build_image.spec import NONROOT_USER, BuildSpec

log = logging.getLogger(__name__)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    # (manifest format, compressed) -> layer media type
    (OCI_MANIFEST, True): "application/vnd.oci.image.layer.v1.tar+gzip",
    (OCI_MANIFEST, False): "application/vnd.oci.image.layer.v1.tar",
    (DOCKER_MANIFEST, True): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    (DOCKER_MANIFEST, False): "application/vnd.docker.image.rootfs.diff.tar",
}
CONFIG_TYPES = {OCI_MANIFEST: OCI_CONFIG, DOCKER_MANIFEST: DOCKER_CONFIG}


@dataclass(frozen=True)
class BaseImage:
    """A resolved base: its manifest for one platform and its config."""

    ref: ImageRef | None  # None for scratch
    manifest_digest: str | None  # digest of the platform manifest
    media_type: str  # manifest format (OCI or Docker schema 2)
    config: dict  # parsed image config
    layers: tuple[dict, ...]  # layer descriptors as in the base manifest


def parse_platform(platform: str) -> tuple[str, str, str | None]:
    parts = platform.split("/")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else None


def timestamp(epoch: int) -> str:
    """RFC 3339 time of ``epoch`` in UTC, as written in image configs."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def scratch_base(platform: str) -> BaseImage:
    """An empty base ("FROM scratch"): no layers, a config built from nothing."""
    os_, arch, variant = parse_platform(platform)
    config: dict = {"architecture": arch, "os": os_}
    if variant:
        config["variant"] = variant
    config.update({"config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
    return BaseImage(ref=None, manifest_digest=None, media_type=OCI_MANIFEST, config=config, layers=())


def _platform_matches(p: dict, os_: str, arch: str, variant: str | None) -> bool:
    if p.get("os") != os_ or p.get("architecture") != arch:
        return False
    if variant is None:
        return True
    return p.get("variant") == variant or (arch == "arm64" and variant == "v8" and not p.get("variant"))


def resolve_base(client: RegistryClient, ref: ImageRef, platform: str) -> BaseImage:
    """Fetch the base manifest (choosing ``platform`` from an index) and its config.

    Raises:
        BaseImageNotFound: no such image, or no manifest for ``platform``.
        ImageBuildError: a Docker schema-1 manifest (re-push it with a current tool).
    """
    os_, arch, variant = parse_platform(platform)
    fetched = client.get_manifest(ref)
    doc = json.loads(fetched.body)
    media_type = doc.get("mediaType") or fetched.media_type
    if media_type in INDEX_TYPES or (not media_type and "manifests" in doc):
        chosen = [m for m in doc.get("manifests", []) if _platform_matches(m.get("platform", {}), os_, arch, variant)]
        if not chosen:
            have = sorted(
                "/".join(filter(None, [m.get("platform", {}).get(k) for k in ("os", "architecture", "variant")]))
                for m in doc.get("manifests", [])
            )
            raise BaseImageNotFound(
                f"base image {ref} has no manifest for platform {platform} (it has: {', '.join(have) or 'none'}); "
                "pass platform= one of those, or choose another base"
            )
        fetched = client.get_manifest(ref.with_digest(chosen[0]["digest"]), accept=MANIFEST_TYPES)
        doc = json.loads(fetched.body)
        media_type = doc.get("mediaType") or fetched.media_type
    if media_type not in MANIFEST_TYPES:
        raise ImageBuildError(
            f"base image {ref} has a manifest of type {media_type or 'unknown'}; only OCI and Docker schema 2 "
            "are supported: re-push the base with a current docker/skopeo"
        )
    config = json.loads(client.get_blob(ref.repository, doc["config"]["digest"]))
    if config.get("os") != os_ or config.get("architecture") != arch:
        raise BaseImageNotFound(
            f"base image {ref} is {config.get('os')}/{config.get('architecture')}, not {platform}: "
            "pass the matching platform= or choose a base built for it"
        )
    log.info("base %s: %s, %d layer(s)", ref, fetched.digest, len(doc.get("layers", [])))
    return BaseImage(
        ref=ref, manifest_digest=fetched.digest, media_type=media_type, config=config,
        layers=tuple(doc.get("layers", [])),
    )


def default_labels(spec: BuildSpec, base: BaseImage, model_digest: str | None) -> dict[str, str]:
    """Labels every image gets: OCI annotations keys plus ``io.llmops.*`` for the model."""
    labels = {"org.opencontainers.image.created": timestamp(spec.source_date_epoch)}
    if spec.model_name:
        labels["org.opencontainers.image.title"] = spec.model_name
        labels["io.llmops.model.name"] = spec.model_name
    if spec.model_version:
        labels["org.opencontainers.image.version"] = str(spec.model_version)
        labels["io.llmops.model.version"] = str(spec.model_version)
    if spec.source_revision:
        labels["org.opencontainers.image.revision"] = spec.source_revision
    if base.ref is not None:
        labels["org.opencontainers.image.base.name"] = str(base.ref)
        labels["org.opencontainers.image.base.digest"] = base.manifest_digest or ""
    if model_digest and spec.mode.value != "plain":
        labels["io.llmops.model.digest"] = model_digest
        labels["io.llmops.image.mode"] = spec.mode.value
    return labels


def _is_root(user: str | None) -> bool:
    return not user or user.split(":")[0] in ("0", "root")


def compose_config(spec: BuildSpec, base: BaseImage, layers: tuple[Layer, ...], model_digest: str | None) -> dict:
    """The new image config: the base's, plus our layers' diff_ids, history, env, labels and user."""
    cfg = copy.deepcopy(base.config)
    created = timestamp(spec.source_date_epoch)
    cfg["created"] = created
    run = cfg.setdefault("config", {}) or {}
    cfg["config"] = run
    if spec.env:
        env = [e for e in run.get("Env") or [] if e.split("=", 1)[0] not in spec.env]
        env += [f"{k}={v}" for k, v in spec.env.items()]
        run["Env"] = env
    run["Labels"] = {**(run.get("Labels") or {}), **default_labels(spec, base, model_digest), **spec.labels}
    if spec.user is not None:
        run["User"] = spec.user
    elif _is_root(run.get("User")):
        run["User"] = NONROOT_USER  # never ship a root image unless asked (user="0")
    if spec.entrypoint is not None:
        run["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd is not None:
        run["Cmd"] = list(spec.cmd)
    rootfs = cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + [layer.diff_id for layer in layers]
    history = list(cfg.get("history") or [])
    history += [{"created": created, "created_by": layer.created_by, "comment": "llmops"} for layer in layers]
    history.append({"created": created, "created_by": "llmops build-image: LABEL/ENV/USER", "comment": "llmops",
                    "empty_layer": True})
    cfg["history"] = history
    return cfg


def compose_manifest(media_type: str, config_blob: bytes, config_digest: str, layer_descriptors: list[dict]) -> dict:
    """An image manifest (OCI or Docker schema 2) over the config and layer descriptors."""
    manifest: dict = {"schemaVersion": 2, "mediaType": media_type}
    manifest["config"] = {"mediaType": CONFIG_TYPES[media_type], "digest": config_digest, "size": len(config_blob)}
    manifest["layers"] = layer_descriptors
    return manifest


def to_bytes(doc: dict) -> bytes:
    """Canonical-enough JSON: fixed key order as built, no spaces (the digest depends on these bytes)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
