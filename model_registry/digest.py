"""Content digest of a model folder.

Definition (shared with ``components.import_model.manifest``): list every
regular file under the folder except ``llmops_manifest.json``, sorted by its
POSIX relative path; hash the lines ``f"{relpath}\\t{file_sha256_hex}\\n"``
with SHA-256; the digest is ``"sha256:<hex>"``. Two folders with the same
files and bytes have the same digest wherever they live.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST_NAME = "llmops_manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of one file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_digest(model_dir: str | Path) -> str:
    """Digest of a model folder's content (see the module docstring).

    Args:
        model_dir: the folder.

    Returns:
        ``"sha256:<64 hex chars>"``.

    Raises:
        NotADirectoryError: ``model_dir`` is not a folder.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    entries = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST_NAME
    )
    h = hashlib.sha256()
    for rel, path in entries:
        h.update(f"{rel}\t{file_sha256(path)}\n".encode())
    return "sha256:" + h.hexdigest()
