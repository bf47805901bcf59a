"""Errors raised by evaluation.

Exception tree::

    EvaluateError                any failure of an evaluation
    ├── GatePolicyError          a GatePolicy field is out of range (names the field)
    └── ReferenceError_          the reference is neither a model folder nor a metrics JSON

Dataset problems raise :class:`components.finetune.errors.DatasetError` (file and line).
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError


class EvaluateError(LlmopsError):
    """Base class for evaluation failures."""


class GatePolicyError(EvaluateError, ValueError):
    """A gate policy value is invalid."""


class ReferenceError_(EvaluateError):  # noqa: N801 - avoids shadowing the builtin ReferenceError
    """The reference to compare against cannot be used."""
