"""``llmops submit`` with the official kfp.Client against a fake KFP v2beta1 API over real HTTP."""

from __future__ import annotations


import pytest

from pipelines.cli import main

pytestmark = pytest.mark.integration


def _submit(server, package, *extra):
    return main(["submit", "--host", server.url, "--package", str(package), *extra])


def test_first_submit_uploads_the_pipeline_and_starts_a_run(kfp_server, compiled_package, monkeypatch, capsys):
    monkeypatch.setenv("KFP_TOKEN", "s3cret")
    rc = _submit(kfp_server, compiled_package, "--experiment", "nightly", "--run-name", "r1",
                 "--param", "finetune_steps=200", "--param", "learning_rate=0.001", "--param", "finetune=false",
                 "--param", "model_name=chat")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert [p["display_name"] for p in kfp_server.pipelines] == ["llm-release"]
    assert kfp_server.versions[0]["package"] == compiled_package.read_bytes()
    assert [e["display_name"] for e in kfp_server.experiments] == ["nightly"]
    (run,) = kfp_server.runs
    assert run["display_name"] == "r1"
    assert run["experiment_id"] == kfp_server.experiments[0]["experiment_id"]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": kfp_server.pipelines[0]["pipeline_id"],
        "pipeline_version_id": kfp_server.versions[0]["pipeline_version_id"],
    }
    assert run["runtime_config"]["parameters"] == {"finetune_steps": 200, "learning_rate": 0.001, "finetune": False,
                                                   "model_name": "chat"}
    assert set(kfp_server.auth) == {"Bearer s3cret"}
    assert f"run 'r1' started: {run['run_id']} in experiment nightly" in out
    assert "s3cret" not in out


def test_second_submit_uploads_a_new_version_and_reuses_the_experiment(kfp_server, compiled_package, tmp_path, capsys):
    assert _submit(kfp_server, compiled_package, "--experiment", "nightly") == 0
    changed = tmp_path / "changed.yaml"
    text = compiled_package.read_text()
    changed.write_text(text.replace("Release an LLM version", "Release an LLM version (v2)", 1))
    assert _submit(kfp_server, changed, "--experiment", "nightly", "--param", "seed=7") == 0
    assert len(kfp_server.pipelines) == 1 and len(kfp_server.experiments) == 1
    assert len(kfp_server.versions) == 2
    new = kfp_server.versions[1]
    assert new["package"] == changed.read_bytes() and new["display_name"].startswith("llm-release-")
    assert kfp_server.runs[1]["pipeline_version_reference"]["pipeline_version_id"] == new["pipeline_version_id"]
    assert kfp_server.runs[1]["runtime_config"]["parameters"] == {"seed": 7}
    # the same package again: the version is reused, not uploaded twice
    assert _submit(kfp_server, changed, "--upload-only") == 0
    assert len(kfp_server.versions) == 2 and len(kfp_server.runs) == 2
    assert "version exists" in capsys.readouterr().out


def test_upload_only_with_a_version_name_starts_no_run(kfp_server, compiled_package):
    assert _submit(kfp_server, compiled_package, "--upload-only") == 0
    assert _submit(kfp_server, compiled_package, "--upload-only", "--version-name", "release-7") == 0
    assert [v["display_name"] for v in kfp_server.versions] == ["llm-release", "release-7"]
    assert kfp_server.runs == [] and kfp_server.experiments == []
    assert ("POST", "/apis/v2beta1/pipelines/upload_version") in kfp_server.requests


def test_unknown_parameter_is_refused_before_any_request(kfp_server, compiled_package, capsys):
    rc = _submit(kfp_server, compiled_package, "--experiment", "x", "--param", "finetune_step=3")
    err = capsys.readouterr().err
    assert rc == 2
    assert "the pipeline has no parameter 'finetune_step'; valid: analysis_interval_s, base_model" in err
    assert "finetune_steps" in err
    assert kfp_server.requests == []


@pytest.mark.parametrize(("param", "message"), [
    ("finetune_steps=lots", "--param finetune_steps=lots: finetune_steps takes an integer"),
    ("finetune=maybe", "finetune takes true or false"),
    ("seed", "write KEY=VALUE"),
])
def test_bad_parameter_values_are_refused(kfp_server, compiled_package, capsys, param, message):
    assert _submit(kfp_server, compiled_package, "--experiment", "x", "--param", param) == 2
    assert message in capsys.readouterr().err
    assert kfp_server.requests == []


def test_unreachable_host_says_the_fix(compiled_package, capsys):
    rc = main(["submit", "--host", "http://127.0.0.1:9", "--package", str(compiled_package), "--experiment", "x"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cannot reach Kubeflow Pipelines at http://127.0.0.1:9" in err and "kubectl port-forward" in err


def test_missing_host_and_experiment_and_package(compiled_package, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert main(["submit", "--package", str(compiled_package), "--experiment", "x"]) == 2
    assert "--host is required (or set $KFP_HOST)" in capsys.readouterr().err
    assert main(["submit", "--host", "http://127.0.0.1:9", "--package", str(compiled_package)]) == 2
    assert "--experiment NAME is required to start a run (or pass --upload-only)" in capsys.readouterr().err
    assert main(["submit", "--host", "http://127.0.0.1:9", "--package", str(tmp_path / "nope.yaml"), "--upload-only"]) == 2
    assert "no such file; run `llmops compile` first" in capsys.readouterr().err


def test_run_uses_the_pipeline_service_account(kfp_server, compiled_package):
    """The run's pods need the kit's pipeline Role (the rollout step drives the InferenceService)."""
    assert _submit(kfp_server, compiled_package, "--experiment", "nightly") == 0
    assert _submit(kfp_server, compiled_package, "--experiment", "nightly", "--service-account", "team-a-runner") == 0
    assert [r.get("service_account") for r in kfp_server.runs] == ["llmops-pipeline", "team-a-runner"]
