import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from components.import_model import (
    MANIFEST_NAME,
    IncompleteModelError,
    SourceUnavailableError,
    UnknownSourceError,
    UnsafeArchiveError,
    UnsafeModelError,
    content_digest,
    import_model,
    read_manifest,
)


def test_local_folder_import_writes_manifest(tiny_model, tmp_path):
    m = import_model(str(tiny_model), tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "model.safetensors").exists() and (out / MANIFEST_NAME).exists()
    assert m.architecture == "GPT2LMHeadModel" and m.model_type == "gpt2"
    from transformers import AutoModelForCausalLM

    assert m.parameter_count == AutoModelForCausalLM.from_pretrained(out).num_parameters()
    assert m.tokenizer_present and m.source == str(tiny_model)
    assert set(m.files) == {p.name for p in tiny_model.iterdir()}
    assert m.total_size_bytes == sum(p.stat().st_size for p in tiny_model.iterdir())
    assert read_manifest(out) == m
    assert m.content_digest == content_digest(out) == content_digest(tiny_model)


def test_content_digest_changes_with_any_byte(model_copy):
    before = content_digest(model_copy)
    cfg = model_copy / "config.json"
    cfg.write_text(cfg.read_text() + " ")
    assert content_digest(model_copy) != before
    assert content_digest(model_copy).startswith("sha256:") and len(content_digest(model_copy)) == 71


def test_reimport_replaces_the_output(tiny_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    import_model(str(tiny_model), out)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".llmops-import-")]


def test_bootstrap_source(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_CACHE", str(tmp_path / "cache"))
    m = import_model("bootstrap://micro", tmp_path / "out")
    assert m.resolved_revision.startswith("v1-") and m.model_type == "gpt2"
    with pytest.raises(UnknownSourceError, match="bootstrap://micro, bootstrap://tiny"):
        import_model("bootstrap://huge", tmp_path / "out2")


def test_hf_source_reads_the_offline_cache(tiny_model, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny"
    snap = repo / "snapshots" / commit
    shutil.copytree(tiny_model, snap)
    (snap / "pytorch_model.bin").write_bytes(b"not fetched unless pickle is allowed")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = import_model("hf://acme/tiny", tmp_path / "out")
    assert m.resolved_revision == commit
    assert "pytorch_model.bin" not in m.files and "model.safetensors" in m.files
    assert import_model(f"hf://acme/tiny@{commit}", tmp_path / "out2").content_digest == m.content_digest


def test_hf_source_missing_from_offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceUnavailableError, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE"):
        import_model("hf://acme/absent", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_remote_fs_source_copies_model_files(tiny_model, tmp_path):
    import fsspec

    from components.import_model.sources.base import FetchOptions, Scheme
    from components.import_model.sources.remote_fs import RemoteFsSource

    fs = fsspec.filesystem("memory")
    for p in tiny_model.iterdir():
        fs.pipe(f"/bucket/models/tiny/{p.name}", p.read_bytes())
    fs.pipe("/bucket/models/tiny/optimizer.pt", b"skipped")
    fetched = RemoteFsSource("memory", Scheme.S3).fetch("memory://bucket/models/tiny", tmp_path, FetchOptions())
    assert sorted(p.name for p in fetched.path.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    assert content_digest(fetched.path) == content_digest(tiny_model)
    assert fetched.resolved_revision.startswith("etags:")


def test_s3_without_extra_names_the_pip_command(tmp_path):
    import importlib.util

    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed here")
    with pytest.raises(SourceUnavailableError, match=r"pip install 'llmops\[s3\]'"):
        import_model("s3://bucket/model", tmp_path / "out")


def test_gs_without_extra_names_the_pip_command(tmp_path):
    import importlib.util

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(SourceUnavailableError, match=r"pip install 'llmops\[gcs\]'"):
        import_model("gs://bucket/model", tmp_path / "out")


def test_mlflow_registry_source(tiny_model, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("imports", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_artifacts(str(tiny_model), artifact_path="model")
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_registered_model("tiny")
        mv = client.create_model_version("tiny", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("tiny", "champion", mv.version)
    finally:
        mlflow.set_tracking_uri(None)
    by_version = import_model("models:/tiny/1", tmp_path / "a", mlflow_tracking_uri=uri)
    by_alias = import_model("models:/tiny@champion", tmp_path / "b", mlflow_tracking_uri=uri)
    assert by_version.content_digest == by_alias.content_digest == content_digest(tiny_model)
    assert by_alias.resolved_revision == "tiny/1"
    with pytest.raises(SourceUnavailableError, match="not found in the MLflow registry"):
        import_model("models:/tiny@missing", tmp_path / "c", mlflow_tracking_uri=uri)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".zip"])
def test_archives_are_extracted(tiny_model, tmp_path, suffix):
    arc = tmp_path / f"model{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(arc, "w") as zf:
            for p in tiny_model.iterdir():
                zf.write(p, f"tiny/{p.name}")
    else:
        with tarfile.open(arc, "w:gz" if suffix.endswith("gz") else "w") as tf:
            tf.add(tiny_model, arcname="tiny")
    m = import_model(str(arc), tmp_path / "out")
    assert m.content_digest == content_digest(tiny_model)
    assert m.resolved_revision.startswith("sha256:")


def _tar_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    arc = tmp_path / "evil.tar"
    with tarfile.open(arc, "w") as tf:
        info = tarfile.TarInfo("config.json")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
        member.size = len(data) if member.isfile() else 0
        tf.addfile(member, io.BytesIO(data) if data else None)
    return arc


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tarfile.TarInfo("../escape.txt"), "escapes the target folder"),
        (lambda: tarfile.TarInfo("/etc/evil"), "absolute path"),
        (lambda: _link("link", tarfile.SYMTYPE, "../../etc/passwd"), "symlink 'link' points outside"),
        (lambda: _link("abs", tarfile.SYMTYPE, "/etc/passwd"), "points to absolute path"),
        (lambda: _link("hard", tarfile.LNKTYPE, "../outside"), "hard link 'hard' points outside"),
    ],
)
def test_unsafe_tar_entries_are_refused(tmp_path, make, message):
    arc = _tar_with(tmp_path, make(), b"x")
    with pytest.raises(UnsafeArchiveError, match=message):
        import_model(str(arc), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()


def _link(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_unsafe_zip_entry_is_refused(tmp_path):
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(UnsafeArchiveError, match="escapes the target folder"):
        import_model(str(arc), tmp_path / "out")


def test_pickle_weights_are_refused(model_copy, tmp_path):
    (model_copy / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnsafeModelError, match=r"pickle weight files pytorch_model.bin.*allow_pickle=True"):
        import_model(str(model_copy), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_allowed_pickle_is_converted_to_safetensors(model_copy, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    state = load_file(model_copy / "model.safetensors")
    torch.save(state, model_copy / "pytorch_model.bin")
    (model_copy / "model.safetensors").unlink()
    m = import_model(str(model_copy), tmp_path / "out", allow_pickle=True)
    out = tmp_path / "out"
    assert m.converted_from_pickle == ["pytorch_model.bin"]
    assert not list(out.glob("*.bin")) and (out / "model.safetensors").exists()
    a = AutoModelForCausalLM.from_pretrained(out)
    b = AutoModelForCausalLM.from_pretrained(model_copy)  # loads the .bin
    ids = torch.tensor([[1, 5, 9, 20]])
    assert torch.equal(a(ids).logits, b(ids).logits)


def test_remote_code_is_refused(model_copy, tmp_path):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (model_copy / "config.json").write_text(json.dumps(cfg))
    (model_copy / "modeling_evil.py").write_text("import os\n")
    with pytest.raises(UnsafeModelError, match=r"custom code \(auto_map.*modeling_evil.py.*trust_remote_code=True"):
        import_model(str(model_copy), tmp_path / "out")
    m = import_model(str(model_copy), tmp_path / "out", trust_remote_code=True)
    assert m.trust_remote_code and "modeling_evil.py" in m.files


def test_missing_config_is_refused(model_copy, tmp_path):
    (model_copy / "config.json").unlink()
    with pytest.raises(IncompleteModelError, match="no config.json"):
        import_model(str(model_copy), tmp_path / "out")


def test_missing_tokenizer_is_refused(model_copy, tmp_path):
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(IncompleteModelError, match="no tokenizer"):
        import_model(str(model_copy), tmp_path / "out")


def test_unknown_scheme_lists_known_ones(tmp_path):
    with pytest.raises(UnknownSourceError, match=r"unknown model source scheme 'ftp://'.*hf://org/name.*models:/"):
        import_model("ftp://example.com/model", tmp_path / "out")


def test_empty_and_missing_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IncompleteModelError, match="is empty"):
        import_model(str(tmp_path / "empty"), tmp_path / "out")
    with pytest.raises(IncompleteModelError, match="does not exist"):
        import_model(str(tmp_path / "nope"), tmp_path / "out")


def test_read_manifest_of_unimported_folder(tiny_model):
    with pytest.raises(FileNotFoundError, match="import the model first"):
        read_manifest(tiny_model)


def test_models_uri_of_a_version_registered_by_the_registry_module(tiny_model, tmp_path):
    registration = pytest.importorskip("model_registry.registration")
    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    reg = registration.register_model(tiny_model, "tiny-reg", tracking_uri=uri)
    m = import_model(f"models:/tiny-reg/{reg.version}", tmp_path / "out", mlflow_tracking_uri=uri)
    assert m.content_digest == content_digest(tiny_model)
    assert "MLmodel" not in m.files
