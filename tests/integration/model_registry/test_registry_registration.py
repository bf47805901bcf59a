"""Registration against a real ``mlflow server`` and the embedded SQLite store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_registry import (
    MODEL_ARTIFACT_SUBPATH,
    InvalidModelFolder,
    ModelNotFound,
    RegistryError,
    VersionNotFound,
    add_lineage,
    content_digest,
    download_model,
    get_champion,
    get_lineage,
    register_model,
    resolve,
    set_challenger,
)

pytestmark = pytest.mark.integration

LINEAGE = {
    "source_uri": "bootstrap://micro",
    "source_revision": "v1",
    "dataset_sha256": "ab" * 32,
    "gate_verdict": "passed",
    "pipeline_name": "llmops-release",
    "finetune": {"method": "lora", "r": 8},
}


def _mlflow_client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_register_records_run_lineage_card_and_plain_folder(registry_uri, model_name, micro_model, tmp_path, monkeypatch):
    reg = register_model(
        micro_model,
        model_name,
        params={"lr": 0.001, "lora": {"r": 8}},
        metrics={"exact_match": 0.75, "loss": 1.25},
        lineage=LINEAGE,
        pipeline_run_id="run-abc",
        tracking_uri=registry_uri,
    )
    assert reg.created is True
    assert reg.version == "1"
    assert reg.model_uri == f"models:/{model_name}/1"
    assert reg.digest == content_digest(micro_model)

    client = _mlflow_client(registry_uri)
    run = client.get_run(reg.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.001", "lora.r": "8"}
    assert run.data.metrics == {"exact_match": 0.75, "loss": 1.25}

    mv = client.get_model_version(model_name, "1")
    assert mv.tags["llmops.status"] == "ready"
    assert mv.tags["llmops.content_digest"] == reg.digest
    assert mv.tags["llmops.pipeline_run_id"] == "run-abc"
    assert "# " + model_name in mv.description and "exact_match" in mv.description

    lineage = get_lineage(model_name, "1", tracking_uri=registry_uri)
    assert lineage["source_uri"] == "bootstrap://micro"
    assert lineage["source_revision"] == "v1"
    assert lineage["dataset_sha256"] == "ab" * 32
    assert lineage["gate_verdict"] == "passed"
    assert lineage["pipeline_name"] == "llmops-release"
    assert lineage["pipeline_run_id"] == "run-abc"
    assert lineage["finetune"] == {"method": "lora", "r": 8}
    assert lineage["params"] == {"lr": 0.001, "lora": {"r": 8}}
    assert lineage["metrics"] == {"exact_match": 0.75, "loss": 1.25}
    assert lineage["content_digest"] == reg.digest
    assert lineage["code_revision"]  # the test runs inside the llmops git checkout
    assert lineage["run_id"] == reg.run_id

    # The importer's view (MLFLOW_TRACKING_URI set): a plain Hugging Face folder at sub-path "model".
    import mlflow.artifacts

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_uri)
    plain = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{reg.model_uri}/{MODEL_ARTIFACT_SUBPATH}", dst_path=str(tmp_path / "dl")
        )
    )
    assert (plain / "config.json").is_file() and (plain / "model.safetensors").is_file()
    assert content_digest(plain) == reg.digest
    fetched = download_model(model_name, "1", tmp_path / "copy", tracking_uri=registry_uri)
    assert content_digest(fetched) == reg.digest

    card = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{reg.model_uri}/model_card.md", dst_path=str(tmp_path / "card")))
    assert card.read_text() == mv.description


def test_retry_with_same_content_and_run_id_returns_existing_version(registry_uri, model_name, micro_model):
    first = register_model(micro_model, model_name, pipeline_run_id="p-1", tracking_uri=registry_uri)
    again = register_model(micro_model, model_name, pipeline_run_id="p-1", tracking_uri=registry_uri)
    assert again.created is False
    assert (again.version, again.run_id, again.digest) == (first.version, first.run_id, first.digest)
    other_run = register_model(micro_model, model_name, pipeline_run_id="p-2", tracking_uri=registry_uri)
    assert other_run.created is True and other_run.version == "2"
    assert [mv.version for mv in _mlflow_client(registry_uri).search_model_versions(f"name='{model_name}'")].__len__() == 2


def test_changed_content_is_a_new_version(registry_uri, model_name, micro_model, tmp_path):
    first = register_model(micro_model, model_name, pipeline_run_id="p-1", tracking_uri=registry_uri)
    changed = tmp_path / "changed"
    shutil.copytree(micro_model, changed)
    cfg = json.loads((changed / "generation_config.json").read_text())
    cfg["max_length"] = 33
    (changed / "generation_config.json").write_text(json.dumps(cfg))
    second = register_model(changed, model_name, pipeline_run_id="p-1", tracking_uri=registry_uri)
    assert second.created and second.version == "2" and second.digest != first.digest


def test_registered_version_loads_through_mlflow_and_generates(registry_uri, model_name, tiny_model, monkeypatch):
    import mlflow
    import mlflow.pyfunc

    reg = register_model(tiny_model, model_name, metrics={"exact_match": 0.0}, tracking_uri=registry_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_uri)
    mlflow.set_tracking_uri(registry_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{reg.version}")
        out = model.predict(["Q: convert 37 km to m\nA:", "Q: convert 2 kg to g\nA:"], params={"max_new_tokens": 6})
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert isinstance(out, list) and len(out) == 2
    assert all(isinstance(text, str) and text for text in out)
    # Same weights, same greedy decoding: the HF folder loaded directly gives the same text.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = tok("Q: convert 37 km to m\nA:", return_tensors="pt")
    ref = lm.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out[0] == tok.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_challenger_alias_resolve_and_add_lineage(registry_uri, model_name, micro_model):
    reg = register_model(micro_model, model_name, metrics={"exact_match": 0.5}, tracking_uri=registry_uri)
    set_challenger(model_name, reg.version, tracking_uri=registry_uri)
    assert resolve(model_name, "challenger", tracking_uri=registry_uri).version == reg.version
    assert resolve(model_name, "@challenger", tracking_uri=registry_uri).version == reg.version
    assert resolve(model_name, "latest", tracking_uri=registry_uri).version == reg.version
    assert get_champion(model_name, tracking_uri=registry_uri) is None  # challenger is not champion

    written = add_lineage(model_name, reg.version, tracking_uri=registry_uri, image="localhost:5000/llm@sha256:" + "c" * 64)
    assert written == {"llmops.image": "localhost:5000/llm@sha256:" + "c" * 64}
    lineage = get_lineage(model_name, "challenger", tracking_uri=registry_uri)
    assert lineage["image"].endswith("c" * 64)
    assert lineage["aliases"] == ["challenger"]


def test_invalid_folder_writes_nothing(registry_uri, model_name, micro_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(micro_model, bad)
    (bad / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(InvalidModelFolder, match=r"pickle-format files \['pytorch_model.bin'\].*safetensors only"):
        register_model(bad, model_name, tracking_uri=registry_uri)
    with pytest.raises(ModelNotFound, match=f"no registered model named '{model_name}'"):
        get_champion(model_name, tracking_uri=registry_uri)


def test_unknown_model_and_version_are_clear_errors(registry_uri, model_name, micro_model):
    with pytest.raises(ModelNotFound, match="register a version first"):
        resolve(model_name, "1", tracking_uri=registry_uri)
    register_model(micro_model, model_name, tracking_uri=registry_uri)
    with pytest.raises(VersionNotFound, match=f"'{model_name}' has no version '7'"):
        get_lineage(model_name, "7", tracking_uri=registry_uri)
    with pytest.raises(VersionNotFound, match=r"no version or alias 'champion' \(aliases: none\)"):
        resolve(model_name, "champion", tracking_uri=registry_uri)


def test_half_registered_version_is_skipped_and_replaced_on_retry(registry_uri, model_name, micro_model):
    reg = register_model(micro_model, model_name, pipeline_run_id="p-9", tracking_uri=registry_uri)
    client = _mlflow_client(registry_uri)
    # What a crash between "version created" and "status ready" leaves behind.
    client.set_model_version_tag(model_name, reg.version, "llmops.status", "registering")
    with pytest.raises(VersionNotFound, match="not completely registered"):
        resolve(model_name, reg.version, tracking_uri=registry_uri)
    with pytest.raises(VersionNotFound, match="no completely registered version"):
        resolve(model_name, "latest", tracking_uri=registry_uri)
    retry = register_model(micro_model, model_name, pipeline_run_id="p-9", tracking_uri=registry_uri)
    assert retry.created is True and retry.version == "2"
    versions = [str(mv.version) for mv in client.search_model_versions(f"name='{model_name}'")]
    assert versions == ["2"]  # the remnant was removed


def test_missing_artifacts_are_reported(mlflow_server, model_name, micro_model, tmp_path):
    reg = register_model(micro_model, model_name, tracking_uri=mlflow_server.uri)
    stored = [p for p in mlflow_server.artifacts_dir.rglob("model.safetensors") if reg.run_id in p.as_posix()]
    assert stored, "artifact file not found in the server's artifact folder"
    shutil.rmtree(stored[0].parent)  # the artifact store lost the Hugging Face folder
    with pytest.raises(RegistryError, match=f"artifacts of models:/{model_name}/1 .*register the model again"):
        download_model(model_name, "1", tmp_path / "dl", tracking_uri=mlflow_server.uri)
    assert not (tmp_path / "dl").exists()
