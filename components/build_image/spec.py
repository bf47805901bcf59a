"""What to build (:class:`BuildSpec`), what came out (:class:`BuildResult`), and progress events."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from oci_images.auth import Credentials
from components.build_image.layers import DEFAULT_SPLIT_THRESHOLD
from oci_images.reference import parse_image_ref, parse_target

_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")
NONROOT_USER = "65532:65532"  # the conventional "nonroot" uid/gid of distroless images


class Mode(str, Enum):
    """Where the model goes in the image."""

    MODELCAR = "modelcar"  # files under /models on a small base with `ln` and `sleep` (KServe modelcar)
    SERVING = "serving"  # a runtime image with the model under /mnt/models
    PLAIN = "plain"  # a folder copied to ``target_path`` with nothing model-specific (e.g. a base image)

    @property
    def default_path(self) -> str:
        return {Mode.MODELCAR: "/models", Mode.SERVING: "/mnt/models", Mode.PLAIN: "/"}[self]


@dataclass(frozen=True)
class BuildSpec:
    """One image build: a folder added as layers on top of a base image."""

    source_dir: Path  # folder whose content becomes the new layer(s)
    target: str  # "registry/repo[:tag]" or "oci-layout:/dir[:tag]"
    mode: Mode = Mode.MODELCAR  # modelcar, serving or plain
    base: str | None = None  # base image reference; None or "scratch" for an empty base
    target_path: str | None = None  # where the folder lands in the image; default from mode
    tag: str | None = None  # tag to push (overrides a tag in ``target``); none: push by digest only
    labels: dict[str, str] = field(default_factory=dict)  # extra image labels (win over the defaults)
    env: dict[str, str] = field(default_factory=dict)  # environment variables to set or replace
    user: str | None = None  # image user; None keeps a non-root base user, else 65532:65532
    entrypoint: tuple[str, ...] | None = None  # replaces the base entrypoint when given
    cmd: tuple[str, ...] | None = None  # replaces the base cmd when given
    platform: str = "linux/amd64"  # picked from a multi-arch base; written for scratch
    insecure: bool = False  # plain HTTP to the registries (local registry without TLS)
    credentials: Credentials | None = None  # for the target registry (and the base, when the same host)
    base_credentials: Credentials | None = None  # for a base on another registry; default Docker config
    model_name: str | None = None  # -> io.llmops.model.name, org.opencontainers.image.title
    model_version: str | None = None  # -> io.llmops.model.version, org.opencontainers.image.version
    source_revision: str | None = None  # -> org.opencontainers.image.revision (e.g. a git SHA)
    source_date_epoch: int = 0  # every timestamp in layers and config (SOURCE_DATE_EPOCH)
    split_threshold: int = DEFAULT_SPLIT_THRESHOLD  # files this large get their own layer
    compress: bool = True  # gzip layers (False: plain tar layers)
    compression_level: int = 6  # gzip level 1..9
    chunk_size: int | None = None  # bytes per PATCH for chunked uploads; None: one streamed PUT

    @property
    def resolved_target_path(self) -> str:
        return self.target_path or self.mode.default_path

    @property
    def base_is_scratch(self) -> bool:
        return self.base in (None, "", "scratch")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that is wrong and how to fix it."""
        try:
            parse_target(self.target)
        except ValueError as exc:
            raise ValueError(f"target: {exc}") from exc
        if not self.base_is_scratch:
            try:
                parse_image_ref(self.base)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ValueError(f"base: {exc}") from exc
        if self.tag is not None and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", self.tag):
            raise ValueError(f"tag {self.tag!r} is not valid (letters, digits, '_', '.', '-', at most 128)")
        if not self.resolved_target_path.startswith("/"):
            raise ValueError(f"target_path {self.target_path!r} must be absolute, e.g. /models")
        if not _PLATFORM.match(self.platform):
            raise ValueError(f"platform {self.platform!r} must look like 'linux/amd64' or 'linux/arm64/v8'")
        if self.split_threshold < 1:
            raise ValueError("split_threshold must be at least 1 byte")
        if not 1 <= self.compression_level <= 9:
            raise ValueError(f"compression_level {self.compression_level} must be 1..9")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError("chunk_size must be positive (or None for one streamed PUT)")
        if self.source_date_epoch < 0:
            raise ValueError("source_date_epoch must be >= 0")
        for key in self.labels:
            if not key:
                raise ValueError("labels: a label name is empty")
        for key in self.env:
            if not key or "=" in key:
                raise ValueError(f"env: variable name {key!r} is empty or holds '='")
        if self.credentials is not None:
            self.credentials.validate()


@dataclass(frozen=True)
class LayerReport:
    """One layer of the built image."""

    digest: str  # blob digest
    size: int  # blob bytes
    media_type: str  # layer media type as written in the manifest
    from_base: bool  # inherited from the base image
    files: int  # files it holds (0 for base layers: not inspected)


@dataclass(frozen=True)
class BuildResult:
    """What a build produced and what it cost."""

    reference: str  # "registry/repo@sha256:..." or "oci-layout:/dir@sha256:..."
    digest: str  # manifest digest
    tag: str | None  # tag pushed (None: pushed by digest only)
    layers: tuple[LayerReport, ...]  # all layers, base first
    bytes_uploaded: int  # blob bytes sent (or written to a layout)
    blobs_uploaded: int  # blobs sent, config included
    blobs_skipped: int  # blobs the target already had (HEAD hit or cross-repository mount)
    wall_s: float  # seconds from start to manifest pushed
    model_digest: str | None = None  # tree digest of the packaged folder (io.llmops.model.digest)
    builder: str = "oci"  # which builder produced it

    @property
    def tagged_reference(self) -> str | None:
        """``repo:tag`` when a tag was pushed."""
        if not self.tag:
            return None
        return self.reference.split("@", 1)[0] + f":{self.tag}"


@dataclass(frozen=True)
class BuildEvent:
    """Progress of a build, as data (for logs, progress bars and tests)."""

    kind: str  # layer_built | blob_uploaded | blob_skipped | blob_mounted | manifest_pushed
    digest: str  # blob or manifest digest
    size: int  # bytes
    detail: str = ""  # words for a log line
