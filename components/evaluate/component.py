"""KFP component of the evaluate step: calls :func:`components.evaluate.evaluate` and nothing else."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def evaluate(
    model: Input[Model],
    eval_data: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    reference_model_dir: str = "",
    reference_metrics_json: str = "",
    policy_json: str = "{}",
    max_examples: int = 0,
) -> bool:
    """Evaluate ``model`` on ``eval_data`` and gate it; returns whether the gate passed.

    The reference is a model folder path (``reference_model_dir``) or the champion's
    recorded metrics as JSON text (``reference_metrics_json``); neither = first release.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from components.evaluate import GatePolicy
    from components.evaluate import evaluate as run_evaluate

    work = Path(tempfile.mkdtemp(prefix="llmops-evaluate-"))
    reference = None
    if reference_model_dir:
        reference = reference_model_dir
    elif reference_metrics_json:
        reference = work / "reference_metrics.json"
        reference.write_text(reference_metrics_json)
    result = run_evaluate(
        model.path,
        eval_data.path,
        work / "out",
        reference=reference,
        policy=GatePolicy(**json.loads(policy_json or "{}")),
        max_examples=max_examples or None,
    )
    for key, value in result.metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    metrics.log_metric("gate_passed", 1.0 if result.verdict.passed else 0.0)
    # Metrics live in the artifact's metadata; a file at its path lets kfp.local's cache reuse this step
    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    shutil.copyfile(result.report_md, report.path)
    return bool(result.verdict.passed)
