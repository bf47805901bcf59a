"""Subcommands of ``llmops``: one module each, exposing ``register(subparsers)``.

A module sets ``func`` on its parser (``parser.set_defaults(func=...)``); the
function takes the parsed namespace and returns an exit code. Raise
:class:`pipelines.cli.CliError` for bad input: it prints without a traceback.
"""
