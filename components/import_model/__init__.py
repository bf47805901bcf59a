"""Import a base model from a folder, archive, Hugging Face, S3/GCS, the MLflow registry or bootstrap.

Public API: :func:`import_model`, :func:`read_manifest`, :func:`content_digest`,
:class:`Manifest` and the :class:`ModelImportError` tree (see :mod:`.errors`).
"""

from components.import_model.errors import (
    IncompleteModelError,
    ModelImportError,
    SourceUnavailableError,
    UnknownSourceError,
    UnsafeArchiveError,
    UnsafeModelError,
)
from components.import_model.importer import import_model
from components.import_model.manifest import MANIFEST_NAME, Manifest, content_digest, read_manifest

__all__ = [
    "MANIFEST_NAME",
    "IncompleteModelError",
    "Manifest",
    "ModelImportError",
    "SourceUnavailableError",
    "UnknownSourceError",
    "UnsafeArchiveError",
    "UnsafeModelError",
    "content_digest",
    "import_model",
    "read_manifest",
]
