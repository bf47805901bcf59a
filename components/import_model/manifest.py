"""The import manifest (``llmops_manifest.json``) and the model content digest.

The content digest is SHA-256 over the lines ``f"{relpath}\t{file_sha256}\n"`` of
every file except the manifest itself, sorted by POSIX relative path (the same
definition as :mod:`model_registry.digest`): two folders with the same files
have the same digest wherever they live, and any byte change alters it.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "llmops_manifest.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _model_files(model_dir: Path) -> list[Path]:
    return sorted(
        p for p in model_dir.rglob("*") if p.is_file() and p.relative_to(model_dir).as_posix() != MANIFEST_NAME
    )


def file_hashes(model_dir: str | Path) -> dict[str, str]:
    """``{relative posix path: sha256 hex}`` for every file but the manifest."""
    model_dir = Path(model_dir)
    return {p.relative_to(model_dir).as_posix(): file_sha256(p) for p in _model_files(model_dir)}


def digest_of(hashes: dict[str, str]) -> str:
    """Content digest from a ``{path: sha256}`` mapping."""
    h = hashlib.sha256()
    for path, sha in sorted(hashes.items()):
        h.update(f"{path}\t{sha}\n".encode())
    return "sha256:" + h.hexdigest()


def content_digest(model_dir: str | Path) -> str:
    """Content digest of a model folder: ``"sha256:<hex>"``.

    Args:
        model_dir: the model folder; ``llmops_manifest.json`` is ignored.

    Returns:
        The digest string, equal for folders with identical files.
    """
    return digest_of(file_hashes(model_dir))


def safetensors_parameter_count(model_dir: Path) -> int:
    """Number of parameters stored in the folder's safetensors files, read from headers only."""
    total = 0
    for path in sorted(model_dir.rglob("*.safetensors")):
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                total += math.prod(info["shape"])
    return total


def has_tokenizer(model_dir: Path) -> bool:
    """Whether the folder ships a tokenizer a ``AutoTokenizer`` can load."""
    return any((model_dir / n).exists() for n in ("tokenizer.json", "tokenizer.model", "vocab.json"))


@dataclass(frozen=True)
class Manifest:
    """What an import produced; written as ``llmops_manifest.json`` next to the model."""

    source: str  # the URI the model was imported from
    resolved_revision: str | None  # commit hash / registry version / archive sha, when known
    content_digest: str  # sha256 over sorted (path, sha256) pairs
    files: dict[str, str]  # relative path -> sha256 hex
    total_size_bytes: int  # sum of file sizes (manifest excluded)
    architecture: str | None  # config "architectures"[0]
    model_type: str | None  # config "model_type"
    parameter_count: int  # from safetensors headers
    tokenizer_present: bool  # a tokenizer file is in the folder
    trust_remote_code: bool = False  # the model ships custom code and the import allowed it
    converted_from_pickle: list[str] = field(default_factory=list)  # pickle files converted to safetensors

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def build_manifest(
    model_dir: Path,
    *,
    source: str,
    resolved_revision: str | None,
    trust_remote_code: bool = False,
    converted_from_pickle: list[str] | None = None,
) -> Manifest:
    """Hash and inspect ``model_dir`` and return its manifest (not written)."""
    hashes = file_hashes(model_dir)
    cfg_path = model_dir / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}  # adapter folders have none
    archs = config.get("architectures") or []
    return Manifest(
        source=source,
        resolved_revision=resolved_revision,
        content_digest=digest_of(hashes),
        files=hashes,
        total_size_bytes=sum((model_dir / p).stat().st_size for p in hashes),
        architecture=archs[0] if archs else None,
        model_type=config.get("model_type"),
        parameter_count=safetensors_parameter_count(model_dir),
        tokenizer_present=has_tokenizer(model_dir),
        trust_remote_code=trust_remote_code,
        converted_from_pickle=list(converted_from_pickle or []),
    )


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    path = Path(model_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(model_dir: str | Path) -> Manifest:
    """Read the manifest an import wrote into ``model_dir``.

    Raises:
        FileNotFoundError: the folder has no ``llmops_manifest.json`` (it was not imported).
    """
    path = Path(model_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: import the model first (llmops import)")
    return Manifest.from_dict(json.loads(path.read_text()))
