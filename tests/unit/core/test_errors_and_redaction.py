"""The error base, the CLI's one-line mapping and the redaction function."""

from __future__ import annotations

import importlib
import logging
import re

import pytest

from llmops_core.errors import ExitCode, LlmopsError, doing
from llmops_core.redact import RedactingFilter, redact, register_secret
from pipelines import cli

# every package's error tree hangs under LlmopsError (one base, one CLI mapping)
ERROR_BASES = [
    "model_registry.errors:RegistryError", "serving.errors:ServingError", "serving.backends.base:BackendError",
    "serving.rollout.controller:RolloutError", "serving.rollout.state:RolloutStateError", "serving.rollout.strategy:StrategyError",
    "serving.rollout.quality:QualityError", "serving.rollout.analysis:AnalysisError", "serving.metrics.base:MetricsError",
    "serving.isvc:IsvcError", "serving.runtime.model:ModelLoadError", "serving.runtime.config:ConfigError",
    "serving.cluster.render:KitError", "serving.cluster.rbac:RbacError", "serving.cluster.validate:ManifestError",
    "components.import_model.errors:ModelImportError", "components.finetune.errors:FinetuneError",
    "components.evaluate.errors:EvaluateError", "oci_images.errors:ImageBuildError",
    "components.dataset.prepare:DatasetSourceError", "pipelines.params:ParamError", "pipelines.promote:PromoteError",
    "pipelines.cli:CliError",
]


@pytest.mark.parametrize("ref", ERROR_BASES)
def test_every_package_error_derives_from_the_one_base(ref):
    module, name = ref.split(":")
    assert issubclass(getattr(importlib.import_module(module), name), LlmopsError)


def test_no_error_class_outside_the_tree():
    """A new ``class XError(Exception)`` in the project would escape the CLI mapping."""
    from pathlib import Path

    root = Path(cli.__file__).resolve().parents[1]
    offenders = []
    packages = ("llmops_core", "model_registry", "serving", "components", "pipelines", "ci")
    for path in (p for pkg in packages for p in (root / pkg).rglob("*.py")):
        for m in re.finditer(r"^class (\w+Error)\((Exception|ValueError|RuntimeError)\):", path.read_text(), re.M):
            if m.group(1) != "LlmopsError":
                offenders.append(f"{path.relative_to(root)}:{m.group(1)}")
    assert offenders == []


@pytest.mark.parametrize("text,secret", [
    ("http://ops:hunter2-pw@mlflow:5000/api", "hunter2-pw"),
    ("https://ghp_abcdef1234@github.com/org/repo", "ghp_abcdef1234"),
    ("Authorization: Bearer eyJhbGciOi.JIUzI1", "eyJhbGciOi.JIUzI1"),
    ("s3://b/k?X-Amz-Signature=deadbeef99&x=1", "deadbeef99"),
    ('{"password": "pa55-word"}', "pa55-word"),
    ("--set aws_secret_access_key=AKIAzz", "AKIAzz"),
    ("token: tkn-123456", "tkn-123456"),
])
def test_redact_masks_credentials(text, secret):
    out = redact(text)
    assert secret not in out and "***" in out


@pytest.mark.parametrize("text", [
    "oci://127.0.0.1:5000/llm@sha256:" + "a" * 64, "max_tokens=16 tokenizer=fast", "git@github.com:org/repo",
    "models:/llm@champion", "pipeline_run_id=abc",
])
def test_redact_keeps_ordinary_text(text):
    assert redact(text) == text


def test_env_and_registered_secrets_are_masked_anywhere(monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", "kfp-token-value-77")
    register_secret("stdin-password-88")
    assert redact("sent kfp-token-value-77 and stdin-password-88") == "sent *** and ***"


def test_the_logging_filter_masks_message_args_and_traceback(caplog):
    logger = logging.getLogger("llmops.test.redact")
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise RuntimeError("cannot reach http://u:tb-secret-1@host")
    except RuntimeError:
        logger.error("calling %s", "http://u:arg-secret-2@host", exc_info=True)
    text = caplog.text
    assert "arg-secret-2" not in text and "tb-secret-1" not in text and "u:***@host" in text


def test_an_unexpected_exception_is_one_line_naming_the_work_exit_2(monkeypatch, capsys, caplog):
    from pipelines.commands import compile as compile_cmd

    def boom(out):
        with doing("compiling the pipeline to http://x:leak-pw-3@host/p.yaml"):
            raise KeyError("some internal key")

    monkeypatch.setattr(compile_cmd, "compile_pipeline", boom)
    caplog.set_level(logging.DEBUG)
    rc = cli.main(["compile", "--out", "/tmp/never.yaml"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == ExitCode.ERROR == 2
    assert err[-1].startswith("llmops compile: error: unexpected KeyError while compiling the pipeline")
    assert "leak-pw-3" not in err[-1] and "Traceback" not in "\n".join(err)
    assert "Traceback" in caplog.text  # the traceback is in the debug log only


def test_a_domain_error_keeps_its_message_on_one_line(monkeypatch, capsys):
    from pipelines.commands import compile as compile_cmd

    def boom(out):
        raise cli.CliError("first line\nsecond line")

    monkeypatch.setattr(compile_cmd, "compile_pipeline", boom)
    assert cli.main(["compile", "--out", "/tmp/never.yaml"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "llmops compile: error: first line | second line"


def test_boolean_settings_named_like_secrets_are_not_masked():
    # `llmops manifests` prints Kubernetes YAML: masking a boolean breaks the YAML a user pipes to kubectl.
    assert redact("automountServiceAccountToken: false") == "automountServiceAccountToken: false"
    assert redact('"password": "falsehood"') != '"password": "falsehood"'
