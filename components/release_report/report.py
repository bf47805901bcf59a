"""The release report: one HTML page that ties a run's steps together.

It embeds every step's own report — data and lineage, the fine-tune loss
curve, the evaluation against the champion with the gate's verdict, the image
digest and size, the canary timeline (traffic share and each analysis verdict
over time, as inline SVG) and the outcome — so one file, opened in a browser
or shown by the Kubeflow UI as an HTML artifact, answers "what did this
release do and why". Self-contained: no scripts, no external resources.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

VERDICT_COLOURS = {"Successful": "#2e7d32", "Inconclusive": "#ef6c00", "Failed": "#c62828", "Error": "#6d4c41"}
OUTCOME_COLOURS = {"promoted": "#2e7d32", "rolled_back": "#c62828", "gate_failed": "#ef6c00", "error": "#6d4c41"}


@dataclass(frozen=True)
class StageLine:
    """One row of the stage table."""

    label: str  # dataset, import, fine-tune...
    state: str  # done, cached, skipped, failed...
    seconds: float | None  # elapsed, None when it never ran
    figure: str  # its key figure


@dataclass(frozen=True)
class CanaryInterval:
    """One analysis interval of the canary."""

    start_s: float  # seconds since the rollout started
    end_s: float
    weight: int  # canary traffic percent during the interval
    verdict: str  # Successful | Inconclusive | Failed | Error
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleaseFacts:
    """What one release did, gathered from its steps' outputs and the registry."""

    model_name: str  # registered model / InferenceService name
    run_name: str  # the pipeline run
    outcome: str  # promoted | rolled_back | gate_failed | error
    message: str  # why, in one line
    wall_s: float | None  # the whole run; None when the step cannot know it (a Kubeflow run: the UI shows it)
    stages: tuple[StageLine, ...] = ()
    version: str | None = None  # the registered version, None when the gate stopped it
    champion_before: str | None = None  # the champion it was compared with
    champion_after: str | None = None  # the champion once the run ended
    lineage: Mapping[str, str] = field(default_factory=dict)  # base model, dataset, digests (label -> value)
    dataset_counts: Mapping[str, int] = field(default_factory=dict)  # split -> examples
    finetune: Mapping[str, Any] = field(default_factory=dict)  # steps, final_loss, wall_s, tokens_per_s
    loss_curve_html: str = ""  # the fine-tune step's loss-curve HTML (an <img> with a data: URI)
    eval_metrics: Mapping[str, float] = field(default_factory=dict)
    champion_metrics: Mapping[str, float] = field(default_factory=dict)
    gate_passed: bool | None = None
    eval_report_md: str = ""  # the evaluate step's Markdown report
    image_ref: str = ""
    image_size_bytes: int | None = None
    canary_steps: tuple[int, ...] = ()
    canary: tuple[CanaryInterval, ...] = ()
    canary_duration_s: float | None = None
    rollout_report_md: str = ""  # the rollout step's Markdown report
    log_path: str = ""  # the run's full log

    def validate(self) -> "ReleaseFacts":
        if not self.model_name:
            raise ValueError("model_name is empty")
        if self.outcome not in OUTCOME_COLOURS:
            raise ValueError(f"outcome {self.outcome!r}: use one of {', '.join(OUTCOME_COLOURS)}")
        return self


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def markdown_to_html(text: str) -> str:
    """A step's Markdown report as HTML (CommonMark with tables; raw HTML in it is escaped)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _without_images(md: str) -> str:
    """A step report's Markdown without its image links (the images stay in the step's own folder)."""
    return re.sub(r"!\[[^\]]*\]\([^)]*\)", "", md)


def _pct(value: object) -> str:
    return f"{value:.1f}%" if isinstance(value, (int, float)) else "–"


def _num(value: object, fmt: str = "{:.1f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "–"


def canary_svg(intervals: Sequence[CanaryInterval], duration_s: float | None = None, final_weight: int | None = None,
               width: int = 640, height: int = 220) -> str:
    """Inline SVG: canary traffic share over time (a step line) and one dot per analysis verdict.

    Args:
        intervals: the analysis intervals, in order.
        duration_s: seconds from the rollout's start to its end (the x axis).
        final_weight: the canary's share once the rollout ended (100 promoted, 0 rolled back).
    """
    left, right, top, bottom = 48, 16, 30, 34
    end = max([duration_s or 0.0] + [iv.end_s for iv in intervals]) or 1.0
    w, h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + w * min(max(t, 0.0), end) / end

    def y(pct: float) -> float:
        return top + h * (1 - pct / 100)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="canary-chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="canary traffic share and verdicts over time">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>']
    for pct in (0, 25, 50, 75, 100):
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(pct):.1f}" y2="{y(pct):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(pct) + 4:.1f}" font-size="11" text-anchor="end">{pct}%</text>')
    for i in range(5):
        t = end * i / 4
        parts.append(f'<text x="{x(t):.1f}" y="{top + h + 16}" font-size="11" text-anchor="middle">{t:.0f}s</text>')
    parts.append(f'<text x="{left + w / 2}" y="{height - 2}" font-size="11" text-anchor="middle">'
                 'seconds since the canary started</text>')
    # the traffic share as a step line: a step's weight holds from the previous interval's end to its own end,
    # then the final weight (100 promoted, 0 rolled back) until the rollout finished
    points: list[tuple[float, float]] = []
    t_prev = 0.0
    for iv in intervals:
        points += [(x(t_prev), y(iv.weight)), (x(iv.end_s), y(iv.weight))]
        t_prev = iv.end_s
    if intervals and final_weight is not None:
        points += [(x(t_prev), y(final_weight)), (x(end), y(final_weight))]
    if points:
        path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
        parts.append(f'<path class="traffic" d="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>')
    for iv in intervals:
        colour = VERDICT_COLOURS.get(iv.verdict, "#555")
        title = f"{iv.weight}% at {iv.end_s:.0f}s: {iv.verdict}" + (f" ({'; '.join(iv.reasons)})" if iv.reasons else "")
        parts.append(f'<circle class="verdict" cx="{x(iv.end_s):.1f}" cy="{y(iv.weight):.1f}" r="5" fill="{colour}">'
                     f"<title>{_e(title)}</title></circle>")
    legend_x = left + 8
    for i, (name, colour) in enumerate(VERDICT_COLOURS.items()):
        parts.append(f'<circle cx="{legend_x + i * 110}" cy="10" r="4" fill="{colour}"/>'
                     f'<text x="{legend_x + i * 110 + 8}" y="14" font-size="11">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222;line-height:1.4}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.outcome{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;font-weight:600}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} code{background:#f3f3f3;padding:1px 4px;border-radius:3px;word-break:break-all}
.step-report{border-left:3px solid #ddd;padding-left:12px;margin:8px 0}
.muted{color:#777} details summary{cursor:pointer;color:#1565c0}
.kpi{display:inline-block;margin:4px 18px 4px 0} .kpi b{font-size:1.4em;display:block}
"""


def render_html(facts: ReleaseFacts) -> str:
    """The release report as one self-contained HTML page."""
    facts.validate()
    f = facts
    colour = OUTCOME_COLOURS[f.outcome]
    out: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Release of {_e(f.model_name)}: {_e(f.outcome)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Release of <code>{_e(f.model_name)}</code>" + (f" v{_e(f.version)}" if f.version else "") + "</h1>",
        f'<p class="muted">pipeline run <code>{_e(f.run_name)}</code>' + (f" · {f.wall_s:.0f}s" if f.wall_s is not None else "")
        + (f" · full log <code>{_e(f.log_path)}</code>" if f.log_path else "") + "</p>",
        f'<p id="outcome"><span class="outcome" style="background:{colour}">{_e(f.outcome.replace("_", " "))}</span> '
        f"{_e(f.message)}</p>",
        "<p>"
        + f'<span class="kpi">champion before<b>{_e("v" + f.champion_before if f.champion_before else "none")}</b></span>'
        + f'<span class="kpi">champion after<b>{_e("v" + f.champion_after if f.champion_after else "none")}</b></span>'
        + f'<span class="kpi">exact match<b id="kpi-exact-match">{_pct(f.eval_metrics.get("exact_match"))}</b></span>'
        + f'<span class="kpi">champion exact match<b>{_pct(f.champion_metrics.get("exact_match"))}</b></span>'
        + "</p>",
    ]
    if f.stages:
        out += ["<h2>Stages</h2>", "<table><tr><th>stage</th><th>state</th><th>time</th><th>key figure</th></tr>"]
        for s in f.stages:
            secs = "" if s.seconds is None else f"{s.seconds:.1f}s"
            out.append(f"<tr><td>{_e(s.label)}</td><td>{_e(s.state)}</td><td>{secs}</td><td>{_e(s.figure)}</td></tr>")
        out.append("</table>")

    out += ['<h2 id="lineage">Data and lineage</h2>', "<table>"]
    for label, value in f.lineage.items():
        out.append(f"<tr><th>{_e(label)}</th><td><code>{_e(value)}</code></td></tr>")
    if f.dataset_counts:
        counts = ", ".join(f"{n} {split}" for split, n in f.dataset_counts.items())
        out.append(f"<tr><th>examples</th><td>{_e(counts)}</td></tr>")
    out.append("</table>")

    out.append('<h2 id="finetune">Fine-tune</h2>')
    if f.finetune.get("steps"):
        ft = f.finetune
        out.append(f"<p>{_num(ft.get('steps'), '{:.0f}')} steps, final loss <b>{_num(ft.get('final_loss'), '{:.3f}')}</b>, "
                   f"{_num(ft.get('tokens_per_s'), '{:.0f}')} tokens/s, {_num(ft.get('wall_s'), '{:.0f}')}s</p>")
        m = re.search(r"<img\b[^>]*>", f.loss_curve_html)
        if m and 'src="data:image/png;base64,' in m.group(0):
            out.append(m.group(0).replace("<img", '<img id="loss-curve" style="max-width:100%"', 1))
    else:
        out.append("<p>Skipped: the base model is the candidate.</p>")

    out.append('<h2 id="evaluation">Evaluation vs champion</h2>')
    if f.gate_passed is not None:
        out.append(f'<p>Gate: <b id="gate-verdict">{"passed" if f.gate_passed else "FAILED"}</b></p>')
    if f.eval_report_md:
        out.append(f'<div class="step-report">{markdown_to_html(f.eval_report_md)}</div>')

    out.append('<h2 id="image">Image</h2>')
    if f.image_ref:
        digest = f.image_ref.split("@", 1)[-1] if "@" in f.image_ref else ""
        out.append(f"<p>Reference <code>{_e(f.image_ref)}</code></p>")
        out.append(f'<p>Digest <code id="image-digest">{_e(digest)}</code>'
                   + (f", {f.image_size_bytes / 1e6:.1f} MB" if f.image_size_bytes else "") + "</p>")
    else:
        out.append("<p>Not built (the release stopped before).</p>")

    out.append('<h2 id="canary">Canary</h2>')
    if f.canary:
        steps = ", ".join(f"{s}%" for s in f.canary_steps)
        out.append(f"<p>Steps {steps}; {len(f.canary)} analysis interval(s)"
                   + (f" over {f.canary_duration_s:.0f}s" if f.canary_duration_s else "") + ".</p>")
        final = {"promoted": 100, "rolled_back": 0}.get(f.outcome)
        out.append(canary_svg(f.canary, f.canary_duration_s, final))
        out.append("<table><tr><th>#</th><th>time</th><th>traffic</th><th>verdict</th><th>reasons</th></tr>")
        for i, iv in enumerate(f.canary, 1):
            out.append(f"<tr><td>{i}</td><td>{iv.start_s:.0f}–{iv.end_s:.0f}s</td><td>{iv.weight}%</td>"
                       f'<td style="color:{VERDICT_COLOURS.get(iv.verdict, "#555")}">{_e(iv.verdict)}</td>'
                       f"<td>{_e('; '.join(iv.reasons))}</td></tr>")
        out.append("</table>")
    elif f.rollout_report_md:
        out.append("<p>No analysis intervals: a first deployment takes all traffic at once.</p>")
    else:
        out.append("<p>No canary (the release stopped before).</p>")
    if f.rollout_report_md:
        out.append(f'<details><summary>rollout report</summary><div class="step-report">'
                   f"{markdown_to_html(_without_images(f.rollout_report_md))}</div></details>")

    out.append("</body></html>")
    return "\n".join(out) + "\n"


def canary_from_report(report: Mapping[str, Any]) -> tuple[tuple[CanaryInterval, ...], tuple[int, ...], float | None]:
    """The canary timeline from a rollout report (``serving.rollout.report.build_report``'s data).

    Returns the intervals (seconds since the rollout started), the traffic steps and the rollout's
    duration (None while it has not finished).
    """
    t0 = report.get("started")
    if t0 is None:
        return (), tuple(int(s) for s in report.get("steps") or ()), None
    t0 = float(t0)
    rows = tuple(
        CanaryInterval(start_s=float(iv.get("start", t0)) - t0, end_s=float(iv.get("end", t0)) - t0,
                       weight=int(iv.get("weight", 0)), verdict=str(iv.get("phase", "")),
                       reasons=tuple(str(r) for r in iv.get("reasons") or ()))
        for iv in report.get("intervals") or ()
    )
    finished = report.get("finished")
    return rows, tuple(int(s) for s in report.get("steps") or ()), (float(finished) - t0) if finished else None
