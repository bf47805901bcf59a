"""``s3://`` and ``gs://`` prefixes through fsspec (s3fs / gcsfs are optional extras)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from components.import_model.errors import SourceUnavailableError
from components.import_model.sources.base import Fetched, FetchOptions, ModelSource, Scheme, matches, wanted_patterns

_EXTRA = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}


class RemoteFsSource(ModelSource):
    """Copies every wanted file under a bucket prefix.

    Args:
        protocol: the fsspec protocol (``s3``, ``gs``; any fsspec protocol works, tests use ``memory``).
        scheme: the scheme this instance answers for.
        storage_options: passed to ``fsspec.filesystem``.
    """

    def __init__(self, protocol: str, scheme: Scheme, **storage_options) -> None:
        self.protocol = protocol
        self.scheme = scheme
        self.storage_options = storage_options

    def _filesystem(self):
        import fsspec

        try:
            return fsspec.filesystem(self.protocol, **self.storage_options)
        except ImportError as exc:
            extra = _EXTRA.get(self.protocol, self.protocol)
            raise SourceUnavailableError(
                f"reading {self.protocol}:// needs an optional package: pip install 'llmops[{extra}]' ({exc})"
            ) from exc

    def fetch(self, uri: str, workdir: Path, options: FetchOptions) -> Fetched:
        fs = self._filesystem()
        root = fs._strip_protocol(uri).rstrip("/")
        patterns = wanted_patterns(options.allow_pickle)
        try:
            listing = fs.find(root, detail=True)
        except Exception as exc:  # fsspec backends raise their own types
            raise SourceUnavailableError(f"{uri}: cannot list: {exc}") from exc
        if not listing:
            raise SourceUnavailableError(f"{uri}: no files under this prefix")
        dest = workdir / "download"
        tags = []
        for name, info in sorted(listing.items()):
            rel = name[len(root):].lstrip("/") if name.startswith(root) else Path(name).name
            if not matches(rel, patterns) or ".." in Path(rel).parts:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get_file(name, str(target))
            except Exception as exc:
                raise SourceUnavailableError(f"{uri}: cannot download {rel}: {exc}") from exc
            tags.append(f"{rel}:{info.get('ETag') or info.get('etag') or info.get('md5Hash') or info.get('size')}")
        if not tags:
            raise SourceUnavailableError(f"{uri}: no model files (safetensors, json, tokenizer) under this prefix")
        revision = "etags:" + hashlib.sha256("\n".join(tags).encode()).hexdigest()[:16]
        return Fetched(path=dest, resolved_revision=revision)
