"""Write an image into an OCI image-layout folder (``index.json``, ``oci-layout``, ``blobs/sha256/``).

For machines with no registry; ``skopeo copy oci:/dir:tag docker://...`` pushes
it later. Blobs already in the folder are not written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from oci_images.errors import ImageBuildError
from oci_images.registry import OCI_INDEX

REF_NAME = "org.opencontainers.image.ref.name"


class LayoutWriter:
    """An OCI image layout folder being written."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ImageBuildError(f"oci-layout target {self.root} is a file; pass a folder path")
        marker = self.root / "oci-layout"
        if self.root.is_dir() and any(self.root.iterdir()) and not marker.is_file():
            raise ImageBuildError(
                f"oci-layout target {self.root} is a non-empty folder that is not an OCI layout; "
                "pass an empty or new folder"
            )
        self.blobs = self.root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        if not marker.is_file():
            marker.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.split(":", 1)[1]

    def has_blob(self, digest: str, size: int) -> bool:
        path = self.blob_path(digest)
        return path.is_file() and path.stat().st_size == size

    def write_file(self, digest: str, source: Path) -> None:
        """Copy a blob file in (atomically: copy to a temp name, then rename)."""
        tmp = self.blob_path(digest).with_suffix(".partial")
        shutil.copyfile(source, tmp)
        os.replace(tmp, self.blob_path(digest))

    def write_bytes(self, digest: str, data: bytes) -> None:
        tmp = self.blob_path(digest).with_suffix(".partial")
        tmp.write_bytes(data)
        os.replace(tmp, self.blob_path(digest))

    def write_stream(self, digest: str, chunks: Iterator[bytes]) -> int:
        """Write a streamed blob, checking its digest; returns bytes written."""
        tmp = self.blob_path(digest).with_suffix(".partial")
        sha = hashlib.sha256()
        n = 0
        with open(tmp, "wb") as out:
            for chunk in chunks:
                sha.update(chunk)
                n += len(chunk)
                out.write(chunk)
        if "sha256:" + sha.hexdigest() != digest:
            tmp.unlink(missing_ok=True)
            raise ImageBuildError(f"blob {digest} arrived with another digest; re-run the build")
        os.replace(tmp, self.blob_path(digest))
        return n

    def tag(self, descriptor: dict, tag: str | None) -> None:
        """Add the manifest to ``index.json`` (replacing an older entry with the same tag)."""
        index_path = self.root / "index.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else {
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        entry = dict(descriptor)
        if tag:
            entry["annotations"] = {REF_NAME: tag}
        kept = []
        for m in index.get("manifests", []):
            same_tag = tag and (m.get("annotations") or {}).get(REF_NAME) == tag
            same_untagged = not tag and m.get("digest") == descriptor["digest"] and not m.get("annotations")
            if not (same_tag or same_untagged):
                kept.append(m)
        index["manifests"] = kept + [entry]
        tmp = index_path.with_suffix(".partial")
        tmp.write_text(json.dumps(index, indent=2))
        os.replace(tmp, index_path)
