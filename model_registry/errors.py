"""Errors raised by :mod:`model_registry`.

Every error names the problem and the fix; MLflow and HTTP exceptions are
translated at the boundary (``raise ... from exc``)::

    LlmopsError (llmops_core.errors)
    └── RegistryError
    ├── ModelNotFound          no registered model with that name
    ├── VersionNotFound        no such version or alias (or it failed to register)
    ├── InvalidModelFolder     the folder is not a safe Hugging Face model folder
    ├── RegistryUnavailable    the tracking server cannot be reached or answers 5xx
    └── PromotionConflict      another promotion won the race, or the champion moved
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError


class RegistryError(LlmopsError):
    """Base class of every model registry error."""


class ModelNotFound(RegistryError):
    """No registered model has the requested name."""


class VersionNotFound(RegistryError):
    """The registered model has no such version or alias."""


class InvalidModelFolder(RegistryError):
    """The model folder fails validation (missing config, no safetensors, pickle files)."""


class RegistryUnavailable(RegistryError):
    """The MLflow tracking server (or the SQLite store) cannot be reached."""


class PromotionConflict(RegistryError):
    """A concurrent promotion holds the lock, or the champion is not the expected one."""
