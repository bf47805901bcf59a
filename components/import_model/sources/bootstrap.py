"""``bootstrap://tiny`` and ``bootstrap://micro``: the generated offline models."""

from __future__ import annotations

import json
from pathlib import Path

from components.import_model.errors import UnknownSourceError
from components.import_model.sources.base import Fetched, FetchOptions, ModelSource, Scheme


class BootstrapSource(ModelSource):
    scheme = Scheme.BOOTSTRAP

    def fetch(self, uri: str, workdir: Path, options: FetchOptions) -> Fetched:
        from components.bootstrap.tiny import PRESETS, ensure_tiny_model

        preset = uri.removeprefix("bootstrap://").strip("/") or "tiny"
        if preset not in PRESETS:
            raise UnknownSourceError(
                f"unknown bootstrap model {uri!r}; known: "
                + ", ".join(f"bootstrap://{p}" for p in sorted(PRESETS))
            )
        folder = ensure_tiny_model(preset)
        key = json.loads((folder / "bootstrap.json").read_text()).get("key")
        return Fetched(path=folder, resolved_revision=key)
