"""Pull the model files out of a modelcar image: the consumer side of :func:`build_image`.

On a cluster KServe mounts a modelcar's ``/models`` into the predictor; on one
machine the ``local`` serving backend calls :func:`pull_model` for an
``oci://`` storage URI (or an ``oci-layout:`` reference) instead. Layers are
streamed, their digests checked, and only regular files and folders under the
source path are extracted, with every path checked to stay inside the target.
The result is cached by manifest digest, so the same image is pulled once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from oci_images.errors import ImageBuildError, RegistryProtocolError
from oci_images.reference import LAYOUT_PREFIX, parse_image_ref
from oci_images.registry import RegistryClient

log = logging.getLogger(__name__)


class _HashingReader:
    """File-like wrapper that hashes what is read through it."""

    def __init__(self, chunks):
        self._it = iter(chunks)
        self._buf = b""
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                chunk = next(self._it)
            except StopIteration:
                break
            self.sha.update(chunk)
            self._buf += chunk
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _extract_layer(stream, dest: Path, source: PurePosixPath) -> int:
    """Extract entries under ``source`` from a (gzip or plain) tar stream; return file count."""
    files = 0
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            name = PurePosixPath("/" + member.name.lstrip("./").lstrip("/"))
            try:
                rel = name.relative_to(source)
            except ValueError:
                continue
            if any(part == ".." for part in rel.parts) or not rel.parts:
                continue
            target = dest.joinpath(*rel.parts)
            if not str(target.resolve()).startswith(str(dest.resolve()) + os.sep):
                raise ImageBuildError(f"layer entry {member.name!r} escapes the model folder; refusing the image")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                files += 1
            # links, devices and whiteouts are never part of a model folder: skipped
    return files


def _layer_sources(ref: str, insecure: bool):
    """Yield (manifest_digest, [(layer_digest, chunk_factory)]) for a registry or layout ref."""
    if ref.startswith(LAYOUT_PREFIX):
        body = ref[len(LAYOUT_PREFIX):]
        path, _, digest = body.partition("@")
        root = Path(path)
        if not digest:
            index = json.loads((root / "index.json").read_text())
            digest = index["manifests"][-1]["digest"]
        blob = lambda d: root / "blobs" / d.replace(":", "/")  # noqa: E731
        manifest = json.loads(blob(digest).read_bytes())

        def factory(d):
            def gen():
                with open(blob(d), "rb") as fh:
                    yield from iter(lambda: fh.read(1 << 20), b"")
            return gen

        return digest, [(layer["digest"], factory(layer["digest"])) for layer in manifest["layers"]], None
    image = parse_image_ref(ref.removeprefix("oci://"))
    client = RegistryClient(image.registry, insecure=insecure)
    fetched = client.get_manifest(image)
    manifest = json.loads(fetched.body)
    if "manifests" in manifest:
        raise RegistryProtocolError(f"{ref} is an index; pass the platform manifest digest")
    return (
        fetched.digest,
        [(layer["digest"], client.blob_stream(image.repository, layer["digest"])) for layer in manifest["layers"]],
        client,
    )


def pull_model(ref: str, cache_dir: str | Path, *, insecure: bool = False, source_path: str = "/models") -> Path:
    """Extract ``source_path`` of the image ``ref`` into a cached folder and return it.

    Args:
        ref: ``oci://host/repo@sha256:...``, ``host/repo@sha256:...`` or ``oci-layout:/dir@sha256:...``.
        cache_dir: cache root; the folder is ``cache_dir/<manifest digest hex>``.
        insecure: plain HTTP for a local registry.
        source_path: folder inside the image holding the model (``/models`` for a modelcar).

    Raises:
        ImageBuildError: unreachable registry, missing image, digest mismatch, unsafe entries.
    """
    if "@sha256:" in ref:  # pinned: a cached pull needs no registry
        cached = Path(cache_dir) / ref.rsplit("@sha256:", 1)[1]
        if (cached / ".complete").exists():
            return cached
    digest, layers, client = _layer_sources(ref, insecure)
    out = Path(cache_dir) / digest.split(":", 1)[1]
    if (out / ".complete").exists():
        return out
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=cache_dir))
    try:
        files = 0
        for layer_digest, chunks in layers:
            reader = _HashingReader(chunks())
            files += _extract_layer(reader, staging, PurePosixPath(source_path))
            reader.drain()
            if "sha256:" + reader.sha.hexdigest() != layer_digest:
                raise RegistryProtocolError(f"layer {layer_digest} of {ref} does not match its digest")
        if files == 0:
            raise ImageBuildError(f"image {ref} holds no files under {source_path}; is it a modelcar?")
        (staging / ".complete").write_text(digest)
        if (out / ".complete").exists():  # another process finished the same pull first: keep its folder
            return out
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)  # a partial folder without .complete
        try:
            os.replace(staging, out)
        except OSError:
            if (out / ".complete").exists():  # lost a race to another complete pull
                return out
            raise
        log.info("pulled %s: %d file(s) into %s", ref, files, out)
        return out
    finally:
        if client is not None:
            client.close()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
