"""``llmops status``: what serves locally (version, traffic split) and the registry's view."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show what serves: version, traffic split, last rollout result",
        description=(
            "Show each local InferenceService: its endpoint, revisions with their model version, "
            "the traffic split and readiness, and from MLflow the champion and the last "
            "promotion or rollback."
        ),
    )
    p.add_argument("--state-dir", type=Path, default=Path(".llmops"), help="llmops state folder (default ./.llmops)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the embedded store)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def latest_report(state_dir: Path) -> Path | None:
    """The release report of the newest local run that wrote one (``kfp/<run>/report.html``)."""
    reports = sorted((state_dir / "kfp").glob("*/report.html"), key=lambda p: p.stat().st_mtime)
    return reports[-1] if reports else None


def collect(state_dir: Path, tracking_uri: str | None) -> list[dict]:
    """Status of every local service, joined with its MLflow champion and last event."""
    from model_registry import get_champion, history
    from model_registry.client import default_tracking_uri
    from model_registry.errors import RegistryError
    from serving.backends.base import PredictorStatus
    from serving.backends.local import LocalBackend

    serving = state_dir / "serving"
    if not (serving / "state.json").exists():
        return []
    backend = LocalBackend(serving)
    uri = tracking_uri or default_tracking_uri(state_dir / "mlflow")
    out = []
    for namespace, name in backend.services():
        obj = backend.get(name, namespace)
        st = PredictorStatus.from_isvc(obj)
        entry = {
            "name": name,
            "namespace": namespace,
            "url": backend.endpoints(name, namespace).url + "/openai/v1",
            "ready": st.ready,
            "reason": st.reason,
            "latest_rolledout": st.latest_rolledout,
            "previous_rolledout": st.previous_rolledout,
            "traffic": [{"revision": t.revision, "percent": t.percent, "tag": t.tag} for t in st.traffic],
        }
        try:
            champ = get_champion(name, tracking_uri=uri)
            events = history(name, tracking_uri=uri)
        except RegistryError:
            champ, events = None, []
        entry["champion"] = champ.version if champ else None
        if events:
            e = events[-1]
            entry["last_event"] = {"kind": e.kind, "time": e.time, "from": e.from_version, "to": e.to_version,
                                   "reason": e.reason}
        out.append(entry)
    report = latest_report(state_dir)
    for entry in out:
        entry["report"] = str(report) if report else None
    return out


def run(args: argparse.Namespace) -> int:
    rows = collect(args.state_dir.resolve(), args.tracking_uri)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"nothing serves from {args.state_dir}: run `llmops run` (or `llmops serve -f isvc.yaml`)")
        report = latest_report(args.state_dir.resolve())
        if report:
            print(f"last release report: {report}")
        return 0
    for r in rows:
        state = "ready" if r["ready"] else f"not ready ({r['reason']})"
        print(f"{r['namespace']}/{r['name']}: {state}")
        print(f"  endpoint:  {r['url']}")
        print(f"  champion:  version {r['champion']}" if r["champion"] else "  champion:  none")
        split = ", ".join(f"{t['revision']} {t['percent']}%" + (f" [{t['tag']}]" if t["tag"] else "") for t in r["traffic"])
        print(f"  traffic:   {split or 'none'}")
        if r.get("last_event"):
            e = r["last_event"]
            print(f"  last:      {e['kind']} {e['from']} -> {e['to']} at {e['time']}" + (f" ({e['reason']})" if e["reason"] else ""))
        if r.get("report"):
            print(f"  report:    {r['report']}")
    return 0
