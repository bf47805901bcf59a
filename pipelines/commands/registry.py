"""``llmops registry``: read the MLflow model registry (champion, lineage, history) and open its UI."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "registry",
        help="show the champion, lineage and promotion history of a registered model",
        description=(
            "Read llmops' MLflow model registry: the serving champion, everything recorded about a "
            "version, and the promotion/rollback history. The store is --tracking-uri, else "
            "MLFLOW_TRACKING_URI, else the embedded SQLite store in ./.llmops/mlflow."
        ),
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./.llmops/mlflow)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    cmds = p.add_subparsers(dest="registry_command", metavar="SUBCOMMAND")

    c = cmds.add_parser("champion", help="the version behind alias 'champion'", description="Show the serving champion of NAME.")
    c.add_argument("name", help="registered model name")
    c.set_defaults(func=_champion)

    lin = cmds.add_parser("lineage", help="everything recorded about a version", description="Show the llmops.* lineage of a version.")
    lin.add_argument("name", help="registered model name")
    lin.add_argument("version", help="version number, 'latest', or an alias such as champion/challenger")
    lin.set_defaults(func=_lineage)

    h = cmds.add_parser("history", help="promotions and rollbacks, oldest first", description="List the promotion and rollback events of NAME.")
    h.add_argument("name", help="registered model name")
    h.set_defaults(func=_history)

    ui = cmds.add_parser(
        "ui-help",
        help="how to open the MLflow UI on this registry",
        description="Print the command that opens the MLflow UI on the embedded store (or the server's URL).",
    )
    ui.add_argument("--port", type=int, default=5000, help="port for `mlflow ui` (default 5000)")
    ui.set_defaults(func=_ui_help)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _call(fn, *args, **kwargs):
    from model_registry import RegistryError
    from pipelines.cli import CliError

    try:
        return fn(*args, **kwargs)
    except (RegistryError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _champion(args: argparse.Namespace) -> int:
    from model_registry import get_champion

    champ = _call(get_champion, args.name, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps(asdict(champ) if champ else None, indent=2))
    elif champ is None:
        print(f"{args.name}: no champion yet (promote a version first)")
    else:
        print(f"{args.name}: champion is version {champ.version} ({champ.model_uri})")
        print(f"  digest:  {champ.digest or 'n/a'}")
        print(f"  image:   {champ.image or 'n/a'}")
        for key, value in sorted(champ.metrics.items()):
            print(f"  {key}: {value:g}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from model_registry import get_lineage

    data = _call(get_lineage, args.name, args.version, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        width = max(map(len, data))
        for key in sorted(data):
            value = data[key]
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            print(f"{key:<{width}}  {text}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from model_registry import history

    events = _call(history, args.name, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps([asdict(e) for e in events], indent=2, default=str))
    elif not events:
        print(f"{args.name}: no promotions or rollbacks yet")
    else:
        for e in events:
            line = f"{e.time}  {e.kind:<9}  v{e.from_version or '-'} -> v{e.to_version or '-'}  [{e.trigger}]"
            print(line + (f"  {e.reason}" if e.reason else "") + (f"  ({e.report_url})" if e.report_url else ""))
    return 0


def ui_command(tracking_uri: str, port: int = 5000) -> list[str] | None:
    """The ``mlflow ui`` argv for an embedded store, or None for a remote server (open its URL)."""
    from model_registry.client import embedded_artifact_root, is_http

    if is_http(tracking_uri):
        return None
    cmd = ["mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port)]
    artifacts = embedded_artifact_root(tracking_uri)
    if artifacts is not None:
        cmd += ["--default-artifact-root", artifacts.as_uri()]
    return cmd


def _ui_help(args: argparse.Namespace) -> int:
    from model_registry import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    cmd = ui_command(uri, args.port)
    if cmd is None:
        print(f"The registry is a tracking server: open {uri} in a browser.")
    else:
        print("Open the MLflow UI on the embedded registry with:\n")
        print("  " + shlex.join(cmd))
        print(f"\nthen browse http://127.0.0.1:{args.port} (Models tab: aliases, tags, model card).")
    return 0
