"""Local folders, ``file://`` URIs and local ``.tar``/``.tar.gz``/``.zip`` archives."""

from __future__ import annotations

from pathlib import Path

from components.import_model.errors import IncompleteModelError
from components.import_model.sources.base import Fetched, FetchOptions, ModelSource, Scheme


class LocalSource(ModelSource):
    scheme = Scheme.LOCAL

    def fetch(self, uri: str, workdir: Path, options: FetchOptions) -> Fetched:
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.exists():
            raise IncompleteModelError(f"model path {path} does not exist; pass a model folder or archive")
        if path.is_dir() and not any(path.iterdir()):
            raise IncompleteModelError(f"model folder {path} is empty; it needs config.json, weights and a tokenizer")
        return Fetched(path=path.resolve(), resolved_revision=None)
