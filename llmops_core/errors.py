"""The one base class of every llmops error, and the CLI's exit codes.

Each package keeps a small tree under :class:`LlmopsError`, drawn in its own
``errors`` module docstring::

    LlmopsError
    ├── RegistryError            model_registry.errors
    ├── BackendError             serving.backends.base
    ├── ServingError             serving.errors (HTTP status table of the model server)
    ├── RolloutError             serving.rollout.controller
    ├── MetricsError, AnalysisError, QualityError, StrategyError, IsvcError, ...
    ├── ModelImportError         components.import_model.errors
    ├── FinetuneError            components.finetune.errors
    ├── EvaluateError            components.evaluate.errors
    ├── ImageBuildError          oci_images.errors
    ├── ParamError, PromoteError pipelines
    └── CliError                 pipelines.cli (a message for the user, nothing more)

``pipelines.cli.main`` maps any :class:`LlmopsError` to exit code
:attr:`ExitCode.ERROR` with its one-line message; anything else is an
unexpected failure, reported in one line too (the traceback goes to the debug
log only).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator


class ExitCode(enum.IntEnum):
    """Exit codes of every ``llmops`` command."""

    OK = 0  # success; for rollout/promote/run: promoted
    NEGATIVE = 1  # a negative verdict: gate failed, rollout rolled back
    ERROR = 2  # an error: bad input, a missing or failing service, an unexpected failure
    INTERRUPTED = 130  # Ctrl-C


class LlmopsError(Exception):
    """Base class of every error llmops raises on purpose.

    The message names the problem and, where there is one, the fix; the CLI
    prints it as is (after redaction) and exits with :attr:`exit_code`.
    """

    exit_code: ExitCode = ExitCode.ERROR


@contextlib.contextmanager
def doing(what: str) -> Iterator[None]:
    """Name the work in progress on any exception that leaves the block.

    The innermost name wins; ``pipelines.cli`` prints it in the one-line
    message of an unexpected failure ("... while importing hf://org/model").

    Args:
        what: a gerund phrase, e.g. ``"registering llm version 3"``.
    """
    try:
        yield
    except BaseException as exc:
        if getattr(exc, "llmops_doing", None) is None:
            with contextlib.suppress(AttributeError, TypeError):
                exc.llmops_doing = what  # type: ignore[attr-defined]
        raise
