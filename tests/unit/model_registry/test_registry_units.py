"""Pure parts of the model registry: digest, folder validation, model card, names, URIs, error translation."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from model_registry import (
    InvalidModelFolder,
    ModelNotFound,
    PromotionConflict,
    RegistryError,
    RegistryUnavailable,
    VersionNotFound,
    build_model_card,
    content_digest,
    default_tracking_uri,
    validate_model_folder,
)
from model_registry.registration import _check_metrics, lineage_tags, validate_name


def _write(root, files):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_digest_follows_the_shared_definition(tmp_path):
    files = {"config.json": b"{}", "sub/b.txt": b"bee", "a.safetensors": b"\x00\x01"}
    _write(tmp_path, files)
    lines = "".join(f"{rel}\t{hashlib.sha256(files[rel]).hexdigest()}\n" for rel in sorted(files))
    assert content_digest(tmp_path) == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def test_digest_ignores_the_manifest_and_location_but_not_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, {"config.json": b"{}", "w.safetensors": b"xyz"})
    shutil.copytree(a, b)
    (b / "llmops_manifest.json").write_text('{"anything": 1}')
    assert content_digest(a) == content_digest(b)
    (b / "w.safetensors").write_bytes(b"xyZ")
    assert content_digest(a) != content_digest(b)
    (b / "w.safetensors").write_bytes(b"xyz")
    (b / "w.safetensors").rename(b / "renamed.safetensors")
    assert content_digest(a) != content_digest(b)


def test_digest_matches_the_import_stage(micro_model):
    manifest = pytest.importorskip("components.import_model.manifest")
    assert content_digest(micro_model) == manifest.content_digest(micro_model)


def test_digest_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        content_digest(tmp_path / "f")


def test_valid_folder_passes(micro_model):
    assert validate_model_folder(micro_model) == micro_model.resolve()


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_config", r"has no config.json; save the model with save_pretrained\(\)"),
        ("bad_config", r"config.json is not valid JSON .*re-save"),
        ("no_weights", r"has no \*.safetensors weights; save with save_pretrained\(safe_serialization=True\)"),
        ("pickle", r"holds pickle-format files \['pytorch_model.bin'\]; .*remove the pickle files"),
        ("missing", r"does not exist or is not a folder"),
    ],
)
def test_invalid_folders_are_refused_with_the_fix(micro_model, tmp_path, breakage, message):
    folder = tmp_path / "m"
    shutil.copytree(micro_model, folder)
    if breakage == "no_config":
        (folder / "config.json").unlink()
    elif breakage == "bad_config":
        (folder / "config.json").write_text("{not json")
    elif breakage == "no_weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "pickle":
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    elif breakage == "missing":
        shutil.rmtree(folder)
    with pytest.raises(InvalidModelFolder, match=message):
        validate_model_folder(folder)


def test_error_tree():
    for cls in (ModelNotFound, VersionNotFound, InvalidModelFolder, RegistryUnavailable, PromotionConflict):
        assert issubclass(cls, RegistryError)


def test_default_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve().as_posix()}/.llmops/mlflow/mlflow.db"
    assert default_tracking_uri(tmp_path / "x") == f"sqlite:///{(tmp_path / 'x').resolve().as_posix()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri() == "http://mlflow.example:5000"


def test_names_and_lineage_keys_are_checked():
    assert validate_name("llm-tiny.v2") == "llm-tiny.v2"
    with pytest.raises(ValueError, match="invalid registered model name 'a/b'"):
        validate_name("a/b")
    with pytest.raises(ValueError, match="reserved for promotion locks"):
        validate_name("llmops-lock-x")
    assert lineage_tags({"source_uri": "hf://a/b", "llmops.image": "r@sha256:1", "params": {"r": 8}, "skip": None}) == {
        "llmops.source_uri": "hf://a/b",
        "llmops.image": "r@sha256:1",
        "llmops.params": '{"r": 8}',
    }
    with pytest.raises(ValueError, match="invalid lineage key 'bad key!'"):
        lineage_tags({"bad key!": "x"})
    assert _check_metrics({"acc": 1, "nested": {"f1": 0.5}}) == {"acc": 1.0, "nested.f1": 0.5}
    with pytest.raises(ValueError, match="metric 'verdict' must be a number.*put non-numeric results in lineage"):
        _check_metrics({"verdict": "pass"})


def test_model_card_compares_with_the_champion():
    card = build_model_card(
        "llm",
        version="3",
        source="bootstrap://tiny",
        source_revision="v1",
        dataset="task.jsonl",
        dataset_sha256="ab12",
        params={"lr": 0.001, "method": "lora"},
        metrics={"exact_match": 0.8, "loss": 1.0},
        champion_metrics={"exact_match": 0.6},
        champion_version="2",
        gate_verdict="passed",
        digest="sha256:ff",
        limitations=["Only unit conversions."],
    )
    assert card.startswith("# llm v3\n")
    assert "- Base model: `bootstrap://tiny` (revision `v1`)" in card
    assert "- Dataset: `task.jsonl` (sha256 `ab12`)" in card
    assert "| metric | this version | champion v2 | delta |" in card
    assert "| exact_match | 0.8 | 0.6 | +0.2 |" in card
    assert "| loss | 1 | n/a | n/a |" in card
    assert "Gate verdict: **passed**" in card
    assert "## Intended use" in card and "- Only unit conversions." in card


def test_model_card_for_a_first_release_says_so():
    card = build_model_card("llm", metrics={"exact_match": 0.5})
    assert "No champion to compare with (first release)." in card
    assert "No fine-tuning data recorded" in card
    assert "## Limitations" in card


def test_unavailable_messages_name_the_uri_and_the_fix():
    from model_registry.client import unavailable_message

    http = unavailable_message("http://127.0.0.1:9", ConnectionError("refused"))
    assert "MLflow tracking server at http://127.0.0.1:9 is unreachable or failing: refused" in http
    assert "start the server" in http and "unset it to use the embedded store" in http
    local = unavailable_message("sqlite:////nope/mlflow.db", OSError("unable to open database file"))
    assert "sqlite:////nope/mlflow.db cannot be used: unable to open database file" in local
    assert "writable" in local


def test_event_json_round_trip():
    from model_registry.queries import _event_from_tag
    from model_registry.types import PromotionEvent

    event = PromotionEvent("promotion", "2026-01-01T00:00:00.000+00:00", "ci", "1", "2", "better", None, None)
    back = _event_from_tag("llmops.event.0000000000001-abcd", event.to_json())
    assert isinstance(back, PromotionEvent)
    assert back == PromotionEvent(**{**event.__dict__, "event_id": "0000000000001-abcd"})
    assert json.loads(event.to_json())["kind"] == "promotion"
