"""Model card: Markdown attached to each version (artifact ``model_card.md``) and used as its description."""

from __future__ import annotations

import math
from collections.abc import Mapping

DEFAULT_INTENDED_USE = (
    "Answering the short task questions this model was fine-tuned and evaluated on. "
    "Not evaluated for any other use."
)
DEFAULT_LIMITATIONS = (
    "Evaluated only on the listed metrics and data; behaviour outside them is unknown.",
    "May produce wrong or made-up answers; keep a human or a check in the loop.",
)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _cell(value: object) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def build_model_card(
    name: str,
    *,
    version: str | None = None,
    source: str | None = None,
    source_revision: str | None = None,
    dataset: str | None = None,
    dataset_sha256: str | None = None,
    params: Mapping[str, object] | None = None,
    metrics: Mapping[str, float] | None = None,
    champion_metrics: Mapping[str, float] | None = None,
    champion_version: str | None = None,
    gate_verdict: str | None = None,
    digest: str | None = None,
    intended_use: str | None = None,
    limitations: str | list[str] | tuple[str, ...] | None = None,
) -> str:
    """Render a model card.

    Args:
        name: registered model name.
        version: version number, if known.
        source: base model URI (``hf://...``, ``bootstrap://tiny``, ...).
        source_revision: revision of the base model.
        dataset: dataset name or URI used for fine-tuning.
        dataset_sha256: digest of the dataset file.
        params: fine-tuning parameters.
        metrics: this version's evaluation metrics.
        champion_metrics: the serving champion's metrics on the same evaluation.
        champion_version: the champion's version number.
        gate_verdict: "passed" / "failed" / free text.
        digest: content digest of the model folder.
        intended_use: what the model is for (a default sentence otherwise).
        limitations: known limits, one string or a list.

    Returns:
        Markdown text.
    """
    title = f"# {name}" + (f" v{version}" if version else "")
    lines = [title, ""]
    lines += ["## Source", ""]
    lines.append(f"- Base model: `{source or 'unknown'}`" + (f" (revision `{source_revision}`)" if source_revision else ""))
    if digest:
        lines.append(f"- Content digest: `{digest}`")
    lines += ["", "## Data", ""]
    if dataset or dataset_sha256:
        lines.append(f"- Dataset: `{dataset or 'unnamed'}`" + (f" (sha256 `{dataset_sha256}`)" if dataset_sha256 else ""))
    else:
        lines.append("- No fine-tuning data recorded (base model registered as is).")
    if params:
        lines += ["", "## Fine-tuning parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in sorted(params.items())]
    lines += ["", "## Evaluation", ""]
    if metrics:
        champ = dict(champion_metrics or {})
        label = f"champion v{champion_version}" if champion_version else "champion"
        lines += [f"| metric | this version | {label} | delta |", "|---|---|---|---|"]
        for key in sorted(set(metrics) | set(champ)):
            mine, theirs = metrics.get(key), champ.get(key)
            delta = (
                f"{mine - theirs:+.4g}"
                if isinstance(mine, (int, float)) and isinstance(theirs, (int, float))
                else "n/a"
            )
            lines.append(f"| {_cell(key)} | {_cell(mine)} | {_cell(theirs)} | {delta} |")
        if not champ:
            lines += ["", "No champion to compare with (first release)."]
    else:
        lines.append("No evaluation metrics recorded.")
    if gate_verdict:
        lines += ["", f"Gate verdict: **{gate_verdict}**"]
    lines += ["", "## Intended use", "", intended_use or DEFAULT_INTENDED_USE, "", "## Limitations", ""]
    limits = [limitations] if isinstance(limitations, str) else list(limitations or DEFAULT_LIMITATIONS)
    lines += [f"- {item}" for item in limits]
    return "\n".join(lines) + "\n"
