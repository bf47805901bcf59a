"""KFP component of the register step: calls :func:`model_registry.register_model` and nothing else.

The evaluation step's ``Metrics`` artifact carries the numbers (``metrics.metadata``);
the gate's verdict decides whether the new version also gets alias ``challenger``.
"""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def register(
    model: Input[Model],
    metrics: Input[Metrics],
    name: str,
    gate_passed: bool = False,
    params_json: str = "{}",
    lineage_json: str = "{}",
    card_md: str = "",
    pipeline_name: str = "",
    pipeline_run_id: str = "",
    tracking_uri: str = "",
) -> str:
    """Register the model folder as a new MLflow model version; returns the version number.

    Wire ``pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER`` so a retried step
    returns the version it already registered instead of creating a duplicate.
    ``metrics.metadata`` numbers become the run's metrics; non-numbers are ignored.
    """
    import json

    from components.tracking import step_tracking_uri
    from model_registry import register_model, set_challenger

    tracking_uri = step_tracking_uri(tracking_uri) or ""

    numbers = {k: v for k, v in (metrics.metadata or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    lineage = {**json.loads(lineage_json or "{}"), "gate_verdict": "passed" if gate_passed else "failed"}
    if pipeline_name:
        lineage["pipeline_name"] = pipeline_name
    reg = register_model(
        model.path,
        name,
        params=json.loads(params_json or "{}"),
        metrics=numbers,
        lineage=lineage,
        card_md=card_md or None,
        pipeline_run_id=pipeline_run_id or None,
        tracking_uri=tracking_uri or None,
    )
    if gate_passed:
        set_challenger(name, reg.version, tracking_uri=tracking_uri or None)
    return reg.version
