"""``build_image()``: package a model folder as an OCI image and publish it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from oci_images.auth import Credentials
from components.build_image.builders.factory import make_builder
from oci_images.errors import ImageBuildError
from components.build_image.layers import DEFAULT_SPLIT_THRESHOLD
from components.build_image.spec import BuildEvent, BuildResult, BuildSpec, Mode


def _mode(mode: str | Mode) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        known = ", ".join(m.value for m in Mode)
        raise ImageBuildError(f"unknown image mode {mode!r}; known modes: {known}") from None


def _epoch(value: int | None) -> int:
    if value is not None:
        return value
    raw = os.environ.get("SOURCE_DATE_EPOCH", "0") or "0"
    try:
        return int(raw)
    except ValueError:
        raise ImageBuildError(f"SOURCE_DATE_EPOCH={raw!r} is not an integer number of seconds") from None


def build_image(
    model_dir: str | Path,
    target: str,
    *,
    mode: str | Mode = "modelcar",
    base: str | None,
    builder: str = "oci",
    labels: dict[str, str] | None = None,
    insecure: bool = False,
    credentials: Credentials | None = None,
    platform: str = "linux/amd64",
    tag: str | None = None,
    target_path: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    source_revision: str | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    source_date_epoch: int | None = None,
    split_threshold: int = DEFAULT_SPLIT_THRESHOLD,
    compress: bool = True,
    compression_level: int = 6,
    chunk_size: int | None = None,
    on_event: Callable[[BuildEvent], None] | None = None,
    builder_options: dict | None = None,
) -> BuildResult:
    """Package ``model_dir`` as an image on top of ``base`` and publish it to ``target``.

    Args:
        model_dir: folder with the model files.
        target: ``registry/repo[:tag]`` or ``oci-layout:/dir[:tag]``.
        mode: ``modelcar`` (files under ``/models``; base needs ``sh``, ``ln``, ``sleep``),
            ``serving`` (runtime image, model under ``/mnt/models``) or ``plain``.
        base: base image reference; ``None`` or ``"scratch"`` for an empty base.
        builder: ``oci`` (daemonless, default), ``docker`` or ``kaniko``.
        labels: extra labels; they win over the defaults (``org.opencontainers.image.*``,
            ``io.llmops.model.*``).
        insecure: plain HTTP to the registries (a local registry without TLS).
        credentials: for the target registry; default the Docker config file.
        platform: platform to pick from a multi-arch base (``os/arch[/variant]``).
        tag: tag to push; overrides a tag in ``target``; none pushes by digest only.
        target_path: where the folder goes in the image; default from ``mode``.
        model_name: recorded as ``io.llmops.model.name``.
        model_version: recorded as ``io.llmops.model.version``.
        source_revision: recorded as ``org.opencontainers.image.revision``.
        env: environment variables to set.
        user: image user; default keeps a non-root base user, else ``65532:65532``.
        entrypoint: replaces the base entrypoint when given.
        cmd: replaces the base cmd when given.
        source_date_epoch: timestamp of every file and of the config; default
            ``$SOURCE_DATE_EPOCH`` or 0.
        split_threshold: files at least this large get their own layer (64 MiB).
        compress: gzip layers.
        compression_level: gzip level 1..9.
        chunk_size: PATCH chunk size for chunked uploads; default one streamed PUT per blob.
        on_event: called with each progress :class:`BuildEvent`.
        builder_options: passed to the builder's constructor.

    Returns:
        :class:`BuildResult` with ``reference`` pinned as ``repo@sha256:...``.

    Raises:
        ModelFolderError: ``model_dir`` missing, empty or holding unpackable entries.
        BaseImageNotFound: ``base`` (or its ``platform``) is not in its registry.
        RegistryUnreachable: a registry did not answer.
        AuthError: a registry refused the credentials.
        BuilderUnavailable: the builder cannot run here.
        ImageBuildError: anything else, e.g. an invalid argument.
    """
    spec = BuildSpec(
        source_dir=Path(model_dir),
        target=target,
        mode=_mode(mode),
        base=base,
        target_path=target_path,
        tag=tag,
        labels=dict(labels or {}),
        env=dict(env or {}),
        user=user,
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        cmd=tuple(cmd) if cmd is not None else None,
        platform=platform,
        insecure=insecure,
        credentials=credentials,
        model_name=model_name,
        model_version=str(model_version) if model_version is not None else None,
        source_revision=source_revision,
        source_date_epoch=_epoch(source_date_epoch),
        split_threshold=split_threshold,
        compress=compress,
        compression_level=compression_level,
        chunk_size=chunk_size,
    )
    return make_builder(builder, **(builder_options or {})).build(spec, on_event=on_event)
