"""The ``llmops`` command line.

Each subcommand lives in its own module under :mod:`pipelines.commands` and
exposes ``register(subparsers)``; this module discovers them, so adding a
command never touches this file.

This module is the one place that maps outcomes to exit codes and errors to
messages (:data:`llmops_core.errors.ExitCode`): 0 success (promoted), 1 a
negative verdict (gate failed, rollout rolled back), 2 an error. Any
:class:`~llmops_core.errors.LlmopsError` prints as one line
``llmops COMMAND: error: MESSAGE``; any other exception becomes one line that
names what was being done, exit 2, with the traceback only in the log at debug
level (``-v``). Everything printed or logged while a command runs passes
through :func:`llmops_core.redact.redact`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import pipelines.commands as _commands
from llmops_core.errors import ExitCode, LlmopsError
from llmops_core.redact import RedactingStream, install, redact

log = logging.getLogger("llmops")


class CliError(LlmopsError):
    """A user-facing error: printed without a traceback, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with redacted usage errors (a bad value may hold a credential)."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(ExitCode.ERROR, f"{self.prog}: error: {redact(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="llmops",
        description=(
            "Release pipeline for LLM versions: import a base model, fine-tune it, "
            "evaluate it against the serving champion, register it in MLflow, package "
            "it as an OCI image and roll it out on KServe behind an analysed canary. "
            "Runs with no cluster by default (embedded MLflow, local serving)."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (with tracebacks)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def one_line(text: object) -> str:
    """The message as one redacted line (a multi-line message is joined with `` | ``)."""
    lines = [ln.strip() for ln in redact(text).splitlines() if ln.strip()]
    return " | ".join(lines) if lines else ""


def command_path(args: argparse.Namespace) -> str:
    """``"import"``, ``"registry history"``: the subcommand the user ran."""
    parts = [args.command or ""]
    for attr in ("registry_command",):
        if getattr(args, attr, None):
            parts.append(getattr(args, attr))
    return " ".join(p for p in parts if p)


def error_message(command: str, exc: BaseException) -> str:
    """The one line printed for ``exc`` (see the module docstring)."""
    doing = getattr(exc, "llmops_doing", None) or f"running `llmops {command}`"
    if isinstance(exc, LlmopsError):
        return f"llmops {command}: error: {one_line(exc)}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"llmops {command}: error: {exc.strerror}{where} while {doing}; check the path and its permissions"
    detail = one_line(exc) or "no message"
    return (
        f"llmops {command}: error: unexpected {type(exc).__name__} while {doing}: {detail} "
        "(rerun with -v for the traceback; please report it)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one ``llmops`` command; returns its exit code (see the module docstring)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    else:
        # one INFO line per HTTP request (the load generator's, each metrics scrape) drowns what happened; -v shows them
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    install()
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.ERROR
    command = command_path(args)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        if not isinstance(exc, LlmopsError):
            log.debug("llmops %s failed", command, exc_info=True)
        else:
            log.debug("llmops %s: %s", command, exc, exc_info=exc.__cause__ is not None)
        print(error_message(command, exc), file=sys.stderr)
        return getattr(exc, "exit_code", ExitCode.ERROR)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
