"""``hf://org/name[@revision]`` through ``huggingface_hub.snapshot_download`` and its cache.

Honours ``HF_HUB_OFFLINE`` (read at call time) and ``HF_HUB_CACHE``; only
safetensors, configuration and tokenizer files are fetched unless pickle
weights are allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.import_model.errors import SourceUnavailableError
from components.import_model.sources.base import Fetched, FetchOptions, ModelSource, Scheme, wanted_patterns

_TRUE = {"1", "true", "yes", "on"}


def parse_hf_uri(uri: str) -> tuple[str, str | None]:
    """Split ``hf://org/name@rev`` into ``("org/name", "rev")``."""
    rest = uri.removeprefix("hf://").strip("/")
    repo, _, revision = rest.partition("@")
    if not repo or repo.count("/") > 1:
        raise SourceUnavailableError(f"bad Hugging Face URI {uri!r}; expected hf://org/name[@revision]")
    return repo, revision or None


class HuggingFaceSource(ModelSource):
    scheme = Scheme.HF

    def fetch(self, uri: str, workdir: Path, options: FetchOptions) -> Fetched:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        repo, revision = parse_hf_uri(uri)
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
        try:
            folder = snapshot_download(
                repo,
                revision=revision,
                cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                allow_patterns=wanted_patterns(options.allow_pickle),
                local_files_only=offline,
            )
        except LocalEntryNotFoundError as exc:
            hint = " (HF_HUB_OFFLINE is set: download it once with network access)" if offline else ""
            raise SourceUnavailableError(f"{uri}: not in the local Hugging Face cache{hint}: {exc}") from exc
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise SourceUnavailableError(f"{uri}: download failed: {exc}") from exc
        folder = Path(folder)
        # Snapshot folders are named after the commit hash they hold.
        return Fetched(
            path=folder, resolved_revision=folder.name, only=tuple(wanted_patterns(options.allow_pickle))
        )
