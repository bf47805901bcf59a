"""Daemonless OCI builder: append layers to a base image and push with the distribution API.

No Docker daemon, no root, no container runtime: the base image's manifest and
config are read from its registry, the folder becomes reproducible layers, a
new config and manifest are written, and only blobs the target lacks are sent
(HEAD first, then a cross-repository mount when the base lives on the same
registry, else a streamed upload). The manifest goes last, so a push that dies
halfway leaves no tag, and the next run sends only what is still missing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from components.build_image.builders.base import EventSink, ImageBuilder
from oci_images.errors import ImageBuildError
from components.build_image.image import (
    LAYER_TYPES,
    BaseImage,
    compose_config,
    compose_manifest,
    resolve_base,
    scratch_base,
    to_bytes,
)
from components.build_image.layers import Layer, LayerSet, build_layers, scan_folder
from oci_images.layout import LayoutWriter
from oci_images.reference import ImageRef, LayoutRef, parse_image_ref, parse_target
from oci_images.registry import OCI_MANIFEST, RegistryClient, sha256_digest
from components.build_image.spec import BuildEvent, BuildResult, BuildSpec, LayerReport

log = logging.getLogger(__name__)

_TO_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}


def _file_chunks(path: Path, size: int = 1 << 20):
    def gen() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while chunk := fh.read(size):
                yield chunk

    return gen


def _bytes_chunks(data: bytes):
    def gen() -> Iterator[bytes]:
        yield data

    return gen


class _Tally:
    def __init__(self, on_event: EventSink | None) -> None:
        self.on_event = on_event
        self.bytes_uploaded = 0
        self.uploaded = 0
        self.skipped = 0

    def emit(self, kind: str, digest: str, size: int, detail: str = "") -> None:
        if kind == "blob_uploaded":
            self.uploaded += 1
            self.bytes_uploaded += size
        elif kind in ("blob_skipped", "blob_mounted"):
            self.skipped += 1
        log.info("%s %s (%.1f MB) %s", kind.replace("_", " "), digest[:19], size / 1e6, detail)
        if self.on_event:
            self.on_event(BuildEvent(kind=kind, digest=digest, size=size, detail=detail))


class OciBuilder(ImageBuilder):
    """Builds without a daemon and pushes to any OCI registry or an OCI layout folder.

    Args:
        transport: httpx transport for every registry request (default: the network).
        work_dir: parent folder for the temporary layer blobs (default: the system temp dir).
    """

    name = "oci"

    def __init__(self, *, transport: httpx.BaseTransport | None = None, work_dir: Path | None = None) -> None:
        self._transport = transport
        self._work_dir = work_dir

    def build(self, spec: BuildSpec, on_event: EventSink | None = None) -> BuildResult:
        try:
            spec.validate()
        except ValueError as exc:
            raise ImageBuildError(f"invalid build request: {exc}") from exc
        started = time.perf_counter()
        target = parse_target(spec.target)
        scan_folder(spec.source_dir)  # fail on a missing/empty folder before any network call
        clients: list[RegistryClient] = []
        try:
            target_client = None
            if isinstance(target, ImageRef):
                target_client = RegistryClient(target.registry, insecure=spec.insecure, credentials=spec.credentials,
                                               transport=self._transport)
                clients.append(target_client)
            base, base_client = self._resolve_base(spec, target, target_client, clients)
            fmt = OCI_MANIFEST if isinstance(target, LayoutRef) else base.media_type
            tally = _Tally(on_event)
            with tempfile.TemporaryDirectory(prefix="llmops-build-", dir=self._work_dir) as work:
                layerset = self._layers(spec, Path(work), tally)
                config = compose_config(spec, base, layerset.layers, layerset.tree_digest)
                config_blob = to_bytes(config)
                config_digest = sha256_digest(config_blob)
                base_descs = [self._convert(d, fmt) for d in base.layers]
                new_descs = [
                    {"mediaType": LAYER_TYPES[(fmt, layer.compressed)], "digest": layer.digest, "size": layer.size}
                    for layer in layerset.layers
                ]
                manifest = compose_manifest(fmt, config_blob, config_digest, base_descs + new_descs)
                manifest_blob = to_bytes(manifest)
                tag = spec.tag or target.tag
                if isinstance(target, LayoutRef):
                    digest = self._write_layout(target, tag, base, base_client, layerset.layers, config_blob,
                                                config_digest, manifest_blob, tally)
                    reference = f"oci-layout:{target.path}@{digest}"
                else:
                    assert target_client is not None
                    digest = self._push(target, tag, target_client, base, base_client, layerset.layers, config_blob,
                                        config_digest, manifest_blob, fmt, tally, spec.chunk_size)
                    reference = f"{target.registry}/{target.repository}@{digest}"
            reports = [LayerReport(d["digest"], d["size"], d["mediaType"], True, 0) for d in base_descs]
            reports += [
                LayerReport(layer.digest, layer.size, d["mediaType"], False, len(layer.files))
                for layer, d in zip(layerset.layers, new_descs)
            ]
            wall = time.perf_counter() - started
            log.info("built %s in %.1fs: %d blob(s) sent (%.1f MB), %d already there", reference, wall,
                     tally.uploaded, tally.bytes_uploaded / 1e6, tally.skipped)
            return BuildResult(
                reference=reference, digest=digest, tag=tag, layers=tuple(reports),
                bytes_uploaded=tally.bytes_uploaded, blobs_uploaded=tally.uploaded, blobs_skipped=tally.skipped,
                wall_s=wall, model_digest=layerset.tree_digest if spec.mode.value != "plain" else None,
                builder=self.name,
            )
        finally:
            for client in clients:
                client.close()

    # -- steps ------------------------------------------------------------------------------------
    def _resolve_base(self, spec, target, target_client, clients) -> tuple[BaseImage, RegistryClient | None]:
        if spec.base_is_scratch:
            return scratch_base(spec.platform), None
        ref = parse_image_ref(spec.base)
        if target_client is not None and ref.registry == target_client.registry:
            client = target_client
        else:
            client = RegistryClient(ref.registry, insecure=spec.insecure, credentials=spec.base_credentials,
                                    transport=self._transport)
            clients.append(client)
        return resolve_base(client, ref, spec.platform), client

    def _layers(self, spec: BuildSpec, work: Path, tally: _Tally) -> LayerSet:
        t0 = time.perf_counter()
        layerset = build_layers(
            spec.source_dir, spec.resolved_target_path, work / "blobs",
            split_threshold=spec.split_threshold, epoch=spec.source_date_epoch,
            compress=spec.compress, level=spec.compression_level,
        )
        dt = max(time.perf_counter() - t0, 1e-9)
        for layer in layerset.layers:
            tally.emit("layer_built", layer.digest, layer.size, f"{len(layer.files)} file(s)")
        log.info("packaged %.1f MB in %d layer(s) in %.1fs (%.0f MB/s)", layerset.total_bytes / 1e6,
                 len(layerset.layers), dt, layerset.total_bytes / 1e6 / dt)
        return layerset

    @staticmethod
    def _convert(desc: dict, fmt: str) -> dict:
        out = {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"]}
        if fmt == OCI_MANIFEST:
            out["mediaType"] = _TO_OCI.get(desc["mediaType"], desc["mediaType"])
        for key in ("urls", "annotations"):
            if key in desc and fmt == OCI_MANIFEST:
                out[key] = desc[key]
        return out

    def _push(self, target: ImageRef, tag, client: RegistryClient, base: BaseImage, base_client,
              layers: tuple[Layer, ...], config_blob: bytes, config_digest: str, manifest_blob: bytes,
              fmt: str, tally: _Tally, chunk_size: int | None) -> str:
        repo = target.repository
        for desc in base.layers:
            digest, size = desc["digest"], desc["size"]
            if desc.get("urls"):
                continue  # a foreign layer: pulled from its URL, never pushed
            if client.blob_exists(repo, digest):
                tally.emit("blob_skipped", digest, size, "base layer already in target")
            elif base_client is client and base.ref and client.mount_blob(repo, digest, base.ref.repository):
                tally.emit("blob_mounted", digest, size, f"mounted from {base.ref.repository}")
            else:
                client.upload_blob(repo, digest, size, base_client.blob_stream(base.ref.repository, digest),
                                   chunk_size=None)
                tally.emit("blob_uploaded", digest, size, f"copied from {base.ref}")
        for layer in layers:
            if client.blob_exists(repo, layer.digest):
                tally.emit("blob_skipped", layer.digest, layer.size, "layer already in target")
            else:
                client.upload_blob(repo, layer.digest, layer.size, _file_chunks(layer.path),
                                   chunk_size=chunk_size)
                tally.emit("blob_uploaded", layer.digest, layer.size, f"{len(layer.files)} file(s)")
        if client.blob_exists(repo, config_digest):
            tally.emit("blob_skipped", config_digest, len(config_blob), "config")
        else:
            client.upload_blob(repo, config_digest, len(config_blob), _bytes_chunks(config_blob))
            tally.emit("blob_uploaded", config_digest, len(config_blob), "config")
        manifest_digest = sha256_digest(manifest_blob)
        client.put_manifest(repo, tag or manifest_digest, manifest_blob, fmt)
        tally.emit("manifest_pushed", manifest_digest, len(manifest_blob), f"{target.name}:{tag or '(digest)'}")
        return manifest_digest

    def _write_layout(self, target: LayoutRef, tag, base: BaseImage, base_client, layers, config_blob,
                      config_digest, manifest_blob, tally: _Tally) -> str:
        out = LayoutWriter(Path(target.path))
        for desc in base.layers:
            digest, size = desc["digest"], desc["size"]
            if desc.get("urls"):
                continue
            if out.has_blob(digest, size):
                tally.emit("blob_skipped", digest, size, "base layer already in layout")
            else:
                out.write_stream(digest, base_client.blob_stream(base.ref.repository, digest)())
                tally.emit("blob_uploaded", digest, size, f"copied from {base.ref}")
        for layer in layers:
            if out.has_blob(layer.digest, layer.size):
                tally.emit("blob_skipped", layer.digest, layer.size, "layer already in layout")
            else:
                out.write_file(layer.digest, layer.path)
                tally.emit("blob_uploaded", layer.digest, layer.size, f"{len(layer.files)} file(s)")
        if out.has_blob(config_digest, len(config_blob)):
            tally.emit("blob_skipped", config_digest, len(config_blob), "config")
        else:
            out.write_bytes(config_digest, config_blob)
            tally.emit("blob_uploaded", config_digest, len(config_blob), "config")
        manifest_digest = sha256_digest(manifest_blob)
        out.write_bytes(manifest_digest, manifest_blob)
        out.tag({"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_blob)}, tag)
        tally.emit("manifest_pushed", manifest_digest, len(manifest_blob), f"{target.path}:{tag or '(untagged)'}")
        return manifest_digest
