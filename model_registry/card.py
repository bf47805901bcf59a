"""Model card: Markdown attached to each version (artifact ``model_card.md``) and used as its description."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

# Lineage keys (``llmops.<key>`` tags) that name the base model, oldest spelling last: the pipeline
# writes ``source_model``, the library API ``source_uri``. The card, the tags and the release report
# read the base model through :func:`source_of`, so they cannot disagree.
SOURCE_KEYS = ("source_uri", "source_model")
TAG_PREFIX = "llmops."

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


def source_of(lineage: Mapping[str, object]) -> str | None:
    """The base model a version came from, under any of :data:`SOURCE_KEYS` (with or without ``llmops.``)."""
    for key in SOURCE_KEYS:
        for k in (key, TAG_PREFIX + key):
            value = lineage.get(k)
            if value not in (None, ""):
                return str(value)
    return None


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
    image_ref: str | None = None,
    image_digest: str | None = None,
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
        image_ref: the OCI image the version is served from (``repo@sha256:...``), once built.
        image_digest: that image's manifest digest.
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
    if image_ref or image_digest:
        lines.append(f"- Image: `{image_ref or 'n/a'}`" + (f" (digest `{image_digest}`)" if image_digest else ""))
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


def _decode(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def model_card_from_tags(name: str, version: str | None, tags: Mapping[str, str]) -> str:
    """The card of a registered version, rendered from its ``llmops.*`` tags alone.

    Used after a step adds lineage (the image digest) so the card says what the tags say.
    """
    t = {k[len(TAG_PREFIX):]: _decode(v) for k, v in tags.items() if k.startswith(TAG_PREFIX)}
    params = t.get("params") if isinstance(t.get("params"), Mapping) else None
    metrics = t.get("metrics") if isinstance(t.get("metrics"), Mapping) else None
    champ = t.get("champion_metrics") if isinstance(t.get("champion_metrics"), Mapping) else None

    def text(key: str) -> str | None:
        value = t.get(key)
        return None if value in (None, "") else str(value)

    return build_model_card(
        name,
        version=version,
        source=source_of(t),
        source_revision=text("source_revision"),
        dataset=text("dataset_uri") or text("dataset"),
        dataset_sha256=text("dataset_sha256"),
        params=params,
        metrics=metrics,
        champion_metrics=champ,
        champion_version=text("champion_version"),
        gate_verdict=text("gate_verdict"),
        digest=text("content_digest"),
        image_ref=text("image_ref"),
        image_digest=text("image_digest"),
    )
