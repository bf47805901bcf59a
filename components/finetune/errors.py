"""Errors raised by fine-tuning.

Exception tree::

    FinetuneError                 any failure of a fine-tune run
    ├── FinetuneConfigError       a FinetuneConfig field is out of range
    ├── DatasetError              the training file is unusable (names file and line)
    └── CheckpointError           checkpoints in out_dir do not match this run
"""

from __future__ import annotations

from llmops_core.errors import LlmopsError

from pathlib import Path


class FinetuneError(LlmopsError):
    """Base class for fine-tuning failures."""


class FinetuneConfigError(FinetuneError, ValueError):
    """A configuration value is invalid; the message names the field."""


class DatasetError(FinetuneError, ValueError):
    """The dataset cannot be used.

    Attributes:
        path: the dataset file.
        line: 1-based line number of the offending record, or None for whole-file problems.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class CheckpointError(FinetuneError):
    """Existing checkpoints were written by a run with another model, dataset or method."""
