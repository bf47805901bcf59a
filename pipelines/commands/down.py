"""``llmops down [NAME]``: stop locally served InferenceServices (model servers and routers)."""

from __future__ import annotations

import argparse

from pipelines.commands.serve import add_state_dir, default_state_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "down",
        help="stop local serving (one InferenceService, or all)",
        description=(
            "Delete InferenceServices from the local serving backend: their model-server "
            "processes and router are stopped (SIGTERM, then SIGKILL after a grace period). "
            "Without NAME every service in the state folder is stopped."
        ),
    )
    p.add_argument("name", nargs="?", help="InferenceService to stop (default: all)")
    p.add_argument("-n", "--namespace", default="default", help="namespace of NAME (default: default)")
    add_state_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError
    from serving.backends.local import LocalBackend

    state_dir = args.state_dir or default_state_dir()
    if not (state_dir / "state.json").exists() and not any((state_dir / "procs").glob("*.json")):
        # nothing recorded and no process journal: do not create an empty state folder
        if args.name:
            raise CliError(f"no local InferenceService {args.namespace}/{args.name}: nothing is served from {state_dir}")
        print("nothing is being served")
        return 0
    backend = LocalBackend(state_dir)
    services = backend.services()  # taking the state lock also stops orphans of a crashed controller
    if args.name:
        if (args.namespace, args.name) not in services:
            known = ", ".join(f"{ns}/{n}" for ns, n in services) or "none"
            raise CliError(f"no local InferenceService {args.namespace}/{args.name} (running: {known})")
        services = [(args.namespace, args.name)]
    if not services:
        print("nothing is being served")
        return 0
    for namespace, name in services:
        pids = backend.pids(name, namespace)
        backend.delete(name, namespace)
        print(f"stopped {namespace}/{name} ({len(pids)} process(es))")
    return 0
