"""The Markdown report shown in the Kubeflow UI: candidate vs reference, verdict, reasons."""

from __future__ import annotations

from components.evaluate.gate import GateVerdict

ROWS = (
    ("exact_match", "exact match (%)", "{:.1f}", "points"),
    ("perplexity", "answer perplexity", "{:.3f}", "pct"),
    ("eval_loss", "answer loss (nats/token)", "{:.4f}", "abs"),
    ("ttft_ms", "time to first token (ms, batch 1)", "{:.1f}", "pct"),
    ("tokens_per_s", "generation speed (tokens/s, batch 1)", "{:.1f}", "pct"),
    ("examples", "eval examples", "{:.0f}", None),
)


def _fmt(fmt: str, v) -> str:
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return "—"


def _change(kind, cand, ref) -> str:
    try:
        c, r = float(cand), float(ref)
    except (TypeError, ValueError):
        return ""
    if kind == "points":
        return f"{c - r:+.1f} pts"
    if kind == "pct" and r:
        return f"{(c - r) / r * 100:+.1f}%"
    if kind == "abs":
        return f"{c - r:+.4f}"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "⏎")


def render_report(
    metrics: dict,
    reference_metrics: dict | None,
    verdict: GateVerdict,
    *,
    candidate_name: str,
    reference_name: str | None,
    eval_file: str,
    mistakes: list[tuple[str, str, str]] = (),
) -> str:
    """Markdown report text."""
    head = "✅ PASSED" if verdict.passed else "❌ FAILED"
    lines = [
        "# Evaluation report",
        "",
        f"**Gate verdict: {head}**",
        "",
        f"- Candidate: `{candidate_name}`",
        f"- Reference: `{reference_name}`" if reference_name else "- Reference: none (first release)",
        f"- Eval set: `{eval_file}` ({metrics.get('examples', '?')} examples)",
        "",
        "| metric | candidate | reference | change |",
        "|---|---:|---:|---:|",
    ]
    for key, label, fmt, kind in ROWS:
        ref = reference_metrics.get(key) if reference_metrics else None
        lines.append(f"| {label} | {_fmt(fmt, metrics.get(key))} | {_fmt(fmt, ref) if ref is not None else '—'} | "
                     f"{_change(kind, metrics.get(key), ref) if kind and ref is not None else ''} |")
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    for c in verdict.checks:
        lines.append(f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {_cell(c.detail)} |")
    lines += ["", "## Reasons", ""] + [f"- {r}" for r in verdict.reasons]
    if mistakes:
        lines += ["", "## Sample mistakes", "", "| prompt | expected | got |", "|---|---|---|"]
        lines += [f"| `{_cell(p)}` | `{_cell(e)}` | `{_cell(g)}` |" for p, e, g in mistakes]
    return "\n".join(lines) + "\n"
