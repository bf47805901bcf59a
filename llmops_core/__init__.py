"""The bottom layer every llmops package may import: the error base and redaction.

Nothing here imports another llmops package (or any third-party library), so
``model_registry``, ``serving``, ``components`` and ``pipelines`` can all
depend on it::

    llmops_core.errors   LlmopsError (the one base class), ExitCode
    llmops_core.redact   redact(), RedactingFilter, register_secret()
"""

from llmops_core.errors import ExitCode, LlmopsError, doing
from llmops_core.redact import RedactingFilter, RedactingStream, redact, register_secret

__all__ = ["ExitCode", "LlmopsError", "RedactingFilter", "RedactingStream", "doing", "redact", "register_secret"]
