"""The thin KFP register component, run through ``kfp.local`` against the embedded store."""


import pytest
from kfp import dsl
from kfp.dsl import Metrics, Model, Output

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dsl.component(base_image="python:3.11")
def _produce(src: str, model: Output[Model], metrics: Output[Metrics]):
    import shutil

    shutil.copytree(src, model.path)
    metrics.log_metric("exact_match", 0.625)
    metrics.log_metric("loss", 1.5)


def test_register_component_registers_and_sets_challenger(tmp_path, micro_model, model_name):
    from kfp import local

    from components.register.component import register
    from model_registry import get_lineage, resolve

    uri = f"sqlite:///{(tmp_path / 'store').as_posix()}/mlflow.db"

    @dsl.pipeline(name="register-only")
    def pipeline(src: str, name: str, tracking_uri: str):
        produced = _produce(src=src)
        register(
            model=produced.outputs["model"],
            metrics=produced.outputs["metrics"],
            name=name,
            gate_passed=True,
            lineage_json='{"source_uri": "bootstrap://micro"}',
            pipeline_name="register-only",
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            tracking_uri=tracking_uri,
        )

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    pipeline(src=str(micro_model), name=model_name, tracking_uri=uri)

    challenger = resolve(model_name, "challenger", tracking_uri=uri)
    assert challenger.version == "1"
    lineage = get_lineage(model_name, "1", tracking_uri=uri)
    assert lineage["gate_verdict"] == "passed"
    assert lineage["pipeline_name"] == "register-only"
    assert lineage["source_uri"] == "bootstrap://micro"
    assert lineage["metrics"] == {"exact_match": 0.625, "loss": 1.5}
    assert lineage["pipeline_run_id"]  # KFP's run id, the idempotency key
