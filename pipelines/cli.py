"""The ``llmops`` command line.

Each subcommand lives in its own module under :mod:`pipelines.commands` and
exposes ``register(subparsers)``; this module discovers them, so adding a
command never touches this file. Exit codes: 0 success, 1 a negative verdict
(gate failed, rollout rolled back), 2 an error (bad input, missing service).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import pipelines.commands as _commands


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmops",
        description=(
            "Release pipeline for LLM versions: import a base model, fine-tune it, "
            "evaluate it against the serving champion, register it in MLflow, package "
            "it as an OCI image and roll it out on KServe behind an analysed canary. "
            "Runs with no cluster by default (embedded MLflow, local serving)."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except CliError as exc:
        print(f"llmops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
