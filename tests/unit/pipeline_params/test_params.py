"""Release parameters are refused before anything runs, with the parameter named."""

import inspect

import pytest

from pipelines.params import ParamError, ReleaseParams


def test_defaults_are_valid_and_match_the_pipeline():
    """The compiled pipeline's defaults are ReleaseParams' except the stated cluster overrides."""
    from pipelines.llm_release import llm_release
    from pipelines.params import CLUSTER_OVERRIDES, cluster_defaults

    ReleaseParams().validate()
    cluster_defaults().validate()
    pipeline_defaults = {
        name: p.default for name, p in inspect.signature(llm_release.pipeline_func).parameters.items()
    }
    for name, value in cluster_defaults().to_dict().items():
        assert pipeline_defaults[name] == value, f"{name}: pipeline default {pipeline_defaults[name]!r} != {value!r}"
    assert set(CLUSTER_OVERRIDES) <= set(ReleaseParams.names())
    # the compiled package says the same (it is what a platform engineer uploads)
    import yaml
    from pathlib import Path

    ir = next(yaml.safe_load_all((Path(__file__).resolve().parents[3] / "pipelines/llm_release.yaml").read_text()))
    compiled = {k: p.get("defaultValue") for k, p in ir["root"]["inputDefinitions"]["parameters"].items()}
    for name, value in cluster_defaults().to_dict().items():
        assert compiled[name] == value, f"{name}: llm_release.yaml default {compiled[name]!r} != {value!r} (run `llmops compile`)"


def test_llmops_run_flags_default_to_release_params():
    """``llmops run`` with no flags runs exactly ReleaseParams()."""
    from pipelines.cli import build_parser
    from pipelines.commands.run import params_from_args

    args = build_parser().parse_args(["run"])
    assert params_from_args(args) == ReleaseParams()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"base_model": "ftp://host/model"}, "base_model='ftp://host/model': unknown scheme 'ftp:'"),
        ({"base_model": ""}, "base_model='': use one of"),
        ({"dataset": "http://x/data"}, "dataset='http://x/data': unknown scheme 'http://'"),
        ({"model_name": "My_Model"}, "model_name='My_Model': lowercase letters"),
        ({"finetune_method": "qlora"}, "finetune_method='qlora': use full or lora"),
        ({"finetune_steps": -3}, "finetune_steps=-3: must be a positive integer"),
        ({"batch_size": 0}, "batch_size=0: must be a positive integer"),
        ({"learning_rate": 5.0}, "learning_rate=5.0: must be between 0 and 1"),
        ({"max_accuracy_drop_points": 150}, "max_accuracy_drop_points=150: must be 0..100"),
        ({"min_accuracy": -1}, "min_accuracy=-1: must be 0..100"),
        ({"max_error_rate": 2}, "max_error_rate=2: must be between 0 and 1"),
        ({"max_latency_ratio": 0.5}, "max_latency_ratio=0.5: must be >= 1"),
        ({"analysis_interval_s": 0}, "analysis_interval_s=0: must be positive"),
        ({"traffic_steps": "10,50"}, "traffic_steps='10,50': steps: the last step must be 100"),
        ({"traffic_steps": "50,25,100"}, "strictly increasing"),
        ({"traffic_steps": "ten"}, "not a comma-separated list of integers"),
    ],
)
def test_bad_parameters_are_named(change, message):
    with pytest.raises(ParamError) as err:
        ReleaseParams(**change).validate()
    assert message in str(err.value)


@pytest.mark.parametrize(
    "source", ["bootstrap://tiny", "hf://org/name@main", "s3://b/m", "gs://b/m", "models:/llm@champion", "/abs/path", "./rel"]
)
def test_known_model_sources_pass(source):
    ReleaseParams(base_model=source).validate()
