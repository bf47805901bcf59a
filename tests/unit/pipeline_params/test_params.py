"""Release parameters are refused before anything runs, with the parameter named."""

import inspect

import pytest

from pipelines.params import ParamError, ReleaseParams


def test_defaults_are_valid_and_match_the_pipeline():
    from pipelines.llm_release import llm_release

    ReleaseParams().validate()
    pipeline_defaults = {
        name: p.default for name, p in inspect.signature(llm_release.pipeline_func).parameters.items()
    }
    # canary timing differs on purpose: a laptop judges 5 s windows, a cluster 60 s ones
    local_only = {"analysis_interval_s", "min_requests"}
    for name, value in ReleaseParams().to_dict().items():
        if name in local_only:
            continue
        assert pipeline_defaults[name] == value, f"{name}: pipeline default {pipeline_defaults[name]!r} != {value!r}"


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
