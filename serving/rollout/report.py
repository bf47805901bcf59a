"""Rollout reports: JSON for machines, Markdown for people, a PNG chart of canary vs stable.

:func:`build_report` turns the recorded :class:`~serving.rollout.state.RolloutState`
into plain data; :func:`write_report` writes ``rollout.json``, ``rollout.md``
and ``rollout.png`` (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

from llmops_core.redact import redact  # reports never hold a credential

import json
import logging
from pathlib import Path
from typing import Any

from serving.rollout.state import RolloutPhase, RolloutState
from serving.rollout.strategy import RolloutStrategy

log = logging.getLogger(__name__)


def build_report(name: str, namespace: str, state: RolloutState | None, strategy: RolloutStrategy) -> dict[str, Any]:
    """The rollout as data: outcome, plan, and one row per analysis interval."""
    if state is None:
        return {"service": name, "namespace": namespace, "phase": "NotStarted", "strategy": strategy.to_dict(), "intervals": []}
    outcome = {
        RolloutPhase.PROMOTED: "promoted",
        RolloutPhase.ROLLED_BACK: "rolled_back",
    }.get(state.phase, "in_progress")
    return {
        "service": name,
        "namespace": namespace,
        "rollout_id": state.rollout_id,
        "target_version": state.target_version,
        "previous_version": state.previous_version,
        "mode": state.mode,
        "phase": state.phase.value,
        "outcome": outcome,
        "reason": state.reason,
        "started": state.started,
        "finished": state.finished,
        "duration_s": (state.finished - state.started) if state.finished else None,
        "final_weight": state.weight,
        "steps": list(state.steps),
        "step_reached": state.steps[state.step_index] if state.steps else None,
        "strategy": strategy.to_dict(),
        "new_spec_hash": state.new_spec_hash,
        "prev_spec_hash": state.prev_spec_hash,
        "canary_revision": state.canary_revision,
        "stable_revision": state.stable_revision,
        "intervals": list(state.intervals),
        "intervals_dropped": state.intervals_dropped,
    }


def _fmt(v: Any, pct: bool = False, ms: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{v:.2%}"
    if ms:
        return f"{v * 1000:.0f} ms"
    return str(v)


def render_markdown(report: dict[str, Any], chart_name: str | None = None) -> str:
    """A page a person reads: verdict first, then the table per interval."""
    lines = [
        f"# Rollout of {report['service']} v{report.get('target_version', '?')}",
        "",
        f"**Outcome:** {report.get('outcome', report.get('phase'))} — {report.get('reason') or ''}",
        "",
        f"- namespace: `{report['namespace']}`, mode: {report.get('mode', '?')}",
        f"- previous version: v{report.get('previous_version') or '?'}; steps: "
        + ", ".join(f"{s}%" for s in report.get("steps", [])),
        f"- reached: {report.get('step_reached')}%, traffic now on the canary: {report.get('final_weight')}%",
    ]
    if report.get("duration_s") is not None:
        lines.append(f"- duration: {report['duration_s']:.1f}s")
    if report.get("intervals_dropped"):
        lines.append(f"- the {report['intervals_dropped']} oldest interval records are not shown: the state annotation "
                     "keeps the newest that fit its size budget (the judge's evidence covers every interval)")
    lines += [
        "",
        "| # | weight | verdict | canary req | stable req | canary err | stable err | canary p95 | stable p95 | quality c/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(report.get("intervals", []), 1):
        c, s, q = row.get("canary") or {}, row.get("stable") or {}, row.get("quality") or {}
        quality = f"{q.get('canary_score', '–')}/{q.get('stable_score', '–')}" if q else "–"
        weight = f"{row['weight']}%" + (" (bake)" if row.get("bake") else "")
        stable_p95 = _fmt(s.get("latency_p95_s"), ms=True) + (" (baseline)" if row.get("stable_from_baseline") else "")
        lines.append(
            f"| {i} | {weight} | {row['phase']} | {_fmt(c.get('requests'))} | {_fmt(s.get('requests'))} | "
            f"{_fmt(c.get('error_rate'), pct=True)} | {_fmt(s.get('error_rate'), pct=True)} | "
            f"{_fmt(c.get('latency_p95_s'), ms=True)} | {stable_p95} | {quality} |"
        )
    if report.get("outcome") == "error" or any(
        c.get("name") in ("metrics", "quality") and c.get("phase") == "Error" and "could not see" in c.get("reason", "")
        for r in report.get("intervals", []) for c in r.get("checks") or ()
    ):
        lines += ["", "**The judge could not see**: metrics or the quality probe were unavailable, so this says nothing "
                  "about the canary's health (see the metrics and quality checks below)."]
    lines += _evidence_lines(report)
    failing = [r for r in report.get("intervals", []) if r.get("phase") != "Successful"]
    if failing:
        lines += ["", "## Reasons", ""]
        for row in failing:
            for reason in row.get("reasons", []):
                lines.append(f"- at {row['weight']}%: {reason}")
    if chart_name:
        lines += ["", f"![canary vs stable]({chart_name})"]
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _evidence_lines(report: dict[str, Any]) -> list[str]:
    """Per interval, every check: verdict, measured value vs threshold, E-value vs its bound, sample sizes."""
    rows = [r for r in report.get("intervals", []) if r.get("checks")]
    if not rows:
        return []
    lines = ["", "## Evidence", "",
             "Sequential judge (always-valid tests; see serving/rollout/sequential.py): a check fails when its "
             "E-value reaches 1/alpha for that check and the effect exceeds its limit.", ""]
    for i, row in enumerate(report.get("intervals", []), 1):
        if not row.get("checks"):
            continue
        weight = f"{row['weight']}%" + (" (bake)" if row.get("bake") else "")
        lines += [f"### Interval {i} at {weight}: {row['phase']}" + ("" if row.get("decided", True) else " (collecting)"), "",
                  "| check | verdict | value | limit | E | reject at | always-valid p | samples |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in row["checks"]:
            d = c.get("details") or {}
            samples = d.get("pooled") or d.get("interval") or ""
            if isinstance(samples, dict):
                samples = ", ".join(f"{k} {v}" for k, v in samples.items() if not isinstance(v, dict)) or \
                    ", ".join(f"{k} {v.get('canary_above', '')}/{v.get('stable_above', '')}" for k, v in samples.items() if isinstance(v, dict))
            if "canary" in d and isinstance(d["canary"], int):
                samples = f"canary {d['canary']}, stable {d.get('stable')}"
            lines.append(
                f"| {c['name']} | {c['phase']} | {_num(c.get('value'))} | {_num(c.get('threshold'))} | "
                f"{_num(d.get('e_value'))} | {_num(d.get('e_threshold'))} | {_num(c.get('p_value'))} | {samples} |"
            )
        tails = [c for c in row["checks"] if c["name"].endswith("_tail")]
        for c in tails:
            d = c.get("details") or {}
            ca, st = d.get("canary") or {}, d.get("stable") or {}
            lines.append(
                f"- {c['name']}: canary p95 {_num(ca.get('p95'))}s (95% CI {_num((ca.get('p95_ci') or [None])[0])}–"
                f"{_num((ca.get('p95_ci') or [None, None])[1])}), p99 {_num(ca.get('p99'))}s (CI "
                f"{_num((ca.get('p99_ci') or [None])[0])}–{_num((ca.get('p99_ci') or [None, None])[1])}); stable p95 "
                f"{_num(st.get('p95'))}s, p99 {_num(st.get('p99'))}s"
            )
        lines.append("")
    return lines


def render_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Canary vs stable p95 latency and error rate per interval (PNG)."""
    rows = report.get("intervals", [])
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(1, len(rows) + 1))
    labels = [f"{r['weight']}%" + ("b" if r.get("bake") else "") for r in rows]

    def series(role: str, key: str, scale: float = 1.0) -> list[float]:
        out = []
        for r in rows:
            v = (r.get(role) or {}).get(key)
            out.append(float("nan") if v is None else v * scale)
        return out

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(xs, series("canary", "latency_p95_s", 1000), "o-", label="canary")
    ax1.plot(xs, series("stable", "latency_p95_s", 1000), "s--", label="stable")
    ax1.set_ylabel("p95 latency (ms)")
    ax1.legend()
    ax2.plot(xs, series("canary", "error_rate", 100), "o-", label="canary")
    ax2.plot(xs, series("stable", "error_rate", 100), "s--", label="stable")
    ax2.set_ylabel("error rate (%)")
    ax2.set_xticks(xs, labels)
    ax2.set_xlabel("analysis interval (canary weight)")
    for ax in (ax1, ax2):
        for x, r in zip(xs, rows):
            if r.get("phase") not in ("Successful",):
                ax.axvspan(x - 0.4, x + 0.4, color="red" if r.get("phase") == "Failed" else "orange", alpha=0.15)
    fig.suptitle(f"{report['service']} v{report.get('target_version', '?')}: {report.get('outcome', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``rollout.json``, ``rollout.md`` and (with intervals) ``rollout.png``.

    Returns:
        ``{"json": path, "markdown": path, "chart": path?}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    chart = render_chart(report, out / "rollout.png")
    if chart:
        paths["chart"] = chart
    paths["json"] = out / "rollout.json"
    paths["json"].write_text(redact(json.dumps(report, indent=2, sort_keys=True, default=str)), encoding="utf-8")
    paths["markdown"] = out / "rollout.md"
    paths["markdown"].write_text(redact(render_markdown(report, chart.name if chart else None)), encoding="utf-8")
    log.info("rollout report written to %s", out)
    return paths


def report_writer(out_dir: str | Path):
    """A ``report_writer`` for the controller: writes the files, returns the Markdown's file URI."""

    def write(report: dict[str, Any]) -> str:
        return write_report(report, out_dir)["markdown"].resolve().as_uri()

    return write


def mlflow_report_writer(out_dir: str | Path, tracking_uri: str | None = None, experiment: str = "llmops-rollouts"):
    """A ``report_writer`` that also stores the report in MLflow; returns a ``runs:/`` URI.

    On a cluster the report folder lives in the step's pod and is gone with it, so
    the URL recorded in the promotion history must point at MLflow. One MLflow run
    per rollout (tag ``llmops.rollout_id``) holds ``rollout/rollout.{md,json,png}``;
    a rewrite of the same rollout's report replaces the files in that run.
    """
    runs: dict[str, str] = {}

    def write(report: dict[str, Any]) -> str:
        import mlflow

        files = write_report(report, out_dir)
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        rollout_id = str(report.get("rollout_id") or "unknown")
        run_id = runs.get(rollout_id)
        if run_id is None:
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
            found = client.search_runs([exp_id], filter_string=f"tags.`llmops.rollout_id` = '{rollout_id}'", max_results=1)
            if found:
                run_id = found[0].info.run_id
            else:
                run = client.create_run(exp_id, run_name=f"{report.get('service')}-v{report.get('target_version')}",
                                        tags={"llmops.rollout_id": rollout_id, "llmops.service": str(report.get("service"))})
                run_id = run.info.run_id
                client.set_terminated(run_id)
            runs[rollout_id] = run_id
        for path in files.values():
            client.log_artifact(run_id, str(path), artifact_path="rollout")
        return f"runs:/{run_id}/rollout/{files['markdown'].name}"

    return write
