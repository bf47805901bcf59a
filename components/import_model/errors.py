"""Errors raised while importing a model.

Exception tree::

    ModelImportError                 any refusal or failure of an import
    ├── UnknownSourceError           the URI scheme is not one we know
    ├── SourceUnavailableError       the source cannot be reached / optional extra missing
    ├── UnsafeModelError             pickle weights or remote code without the allow flag
    ├── UnsafeArchiveError           an archive entry would escape the target folder
    └── IncompleteModelError         config.json or the tokenizer is missing, folder empty
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError


class ModelImportError(LlmopsError):
    """Base class: the model could not be imported."""


class UnknownSourceError(ModelImportError):
    """The source URI uses a scheme no source handles."""


class SourceUnavailableError(ModelImportError):
    """The source exists in principle but cannot be read (missing extra, offline, not found)."""


class UnsafeModelError(ModelImportError):
    """The model needs pickle loading or remote code and the caller did not allow it."""


class UnsafeArchiveError(ModelImportError):
    """An archive entry points outside the extraction folder."""


class IncompleteModelError(ModelImportError):
    """Required files (config.json, tokenizer) are missing."""
