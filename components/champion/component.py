"""KFP components around the gate: the champion's recorded metrics, and a visible stop."""

from kfp import dsl
from kfp.dsl import Input, Markdown

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def champion_metrics(model_name: str, tracking_uri: str = "") -> str:
    """The current champion's recorded metrics as JSON text, or "" before the first release."""
    import json

    from components.tracking import step_tracking_uri
    from model_registry import get_champion
    from model_registry.errors import ModelNotFound

    tracking_uri = step_tracking_uri(tracking_uri) or ""
    try:
        champion = get_champion(model_name, tracking_uri=tracking_uri or None)
    except ModelNotFound:
        champion = None
    if champion is None or not champion.metrics:
        print(f"no champion for {model_name!r}: this is a first release")
        return ""
    print(f"champion of {model_name!r}: version {champion.version}")
    return json.dumps({**champion.metrics, "version": champion.version})


@dsl.component(**COMPONENT_OPTIONS)
def gate_failed(report: Input[Markdown]) -> None:
    """Stop the release: the candidate did not pass the gate (reasons from the evaluation report)."""
    from pathlib import Path

    text = Path(report.path).read_text()
    print(text)
    section = text.split("## Reasons", 1)[-1].split("\n## ", 1)[0]
    reasons = [line.strip() for line in section.splitlines() if line.strip().startswith("- ")]
    raise SystemExit("gate failed: the candidate does not replace the champion\n" + "\n".join(reasons or [text[-2000:]]))
