"""Import a model from any source into a checked, hashed, safetensors-only folder.

Flow: pick the source for the URI -> fetch into a private scratch folder ->
extract archives safely -> refuse unsafe or incomplete models -> convert pickle
weights (only when allowed) -> write ``llmops_manifest.json`` -> move the result
into ``out_dir`` in one rename. Nothing half-written is left behind on failure.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from components.import_model.archive import is_archive, model_root, safe_extract
from components.import_model.errors import IncompleteModelError, UnsafeModelError
from components.import_model.manifest import (
    MANIFEST_NAME,
    Manifest,
    build_manifest,
    file_sha256,
    write_manifest,
)
from components.import_model.sources.base import PICKLE_PATTERNS, FetchOptions, matches
from components.import_model.sources.factory import source_for

log = logging.getLogger(__name__)

_SKIP_DIRS = {".git", ".cache", ".huggingface", "__pycache__"}


def _files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not (_SKIP_DIRS & set(p.relative_to(folder).parts))
    )


def _config(path: Path, source: str) -> dict:
    from model_registry.errors import InvalidModelFolder
    from model_registry.validation import check_config_json

    try:
        return check_config_json(path)
    except InvalidModelFolder as exc:
        raise IncompleteModelError(f"{source}: {exc}") from None


def _check_weights(folder: Path, source: str) -> None:
    """Corrupt or truncated safetensors are refused before anything reads them."""
    from model_registry.errors import InvalidModelFolder
    from model_registry.validation import check_weights

    try:
        check_weights(folder)
    except InvalidModelFolder as exc:
        raise IncompleteModelError(f"{source}: {exc}") from None


def _check(folder: Path, names: list[str], source: str, allow_pickle: bool, trust_remote_code: bool) -> list[str]:
    """Refuse incomplete or unsafe models; return the pickle files present."""
    if not names:
        raise IncompleteModelError(f"{source}: no files found; expected a Hugging Face model folder")
    if "config.json" not in names:
        raise IncompleteModelError(
            f"{source}: no config.json at the top of the model folder; this is not a Hugging Face model "
            f"folder (found: {', '.join(names[:8])})"
        )
    pickles = [n for n in names if matches(n, list(PICKLE_PATTERNS))]
    if pickles and not allow_pickle:
        raise UnsafeModelError(
            f"{source}: pickle weight files {', '.join(pickles)} can run arbitrary code when loaded; "
            "convert them to safetensors, or pass allow_pickle=True (llmops import --allow-pickle) "
            "to load them with torch and convert them"
        )
    code = [n for n in names if n.endswith(".py")]
    config = _config(folder / "config.json", source)
    if (code or config.get("auto_map")) and not trust_remote_code:
        what = ([f"auto_map in config.json ({', '.join(sorted(config['auto_map']))})"] if config.get("auto_map") else [])
        what += code
        raise UnsafeModelError(
            f"{source}: the model ships custom code ({'; '.join(what)}) that transformers would run; "
            "review it, then pass trust_remote_code=True (llmops import --trust-remote-code)"
        )
    if not any(n in names for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise IncompleteModelError(
            f"{source}: no tokenizer (tokenizer.json, tokenizer.model or vocab.json); "
            "the model cannot be evaluated or served without one: add the tokenizer files to the folder"
        )
    if not any(n.endswith(".safetensors") for n in names) and not pickles:
        raise IncompleteModelError(f"{source}: no weights (*.safetensors) in the model folder")
    return pickles


def _safetensors_name(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model") :]
    return stem + ".safetensors"


def _convert_pickles(folder: Path, pickles: list[str]) -> list[str]:
    """Replace pickle weights by safetensors (or drop them when safetensors exist); return what changed."""
    import torch
    from safetensors.torch import save_file

    has_safetensors = any(folder.rglob("*.safetensors"))
    mapping: dict[str, str] = {}
    for name in pickles:
        path = folder / name
        if not has_safetensors:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise UnsafeModelError(f"{name}: cannot load as a tensor state dict: {exc}") from exc
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise UnsafeModelError(f"{name}: does not hold a state dict of tensors; cannot convert to safetensors")
            target = _safetensors_name(name)
            # Clone so tied/shared tensors become separate buffers (safetensors refuses shared storage).
            save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(folder / target),
                      metadata={"format": "pt"})
            mapping[Path(name).name] = Path(target).name
            log.info("converted %s -> %s", name, target)
        else:
            log.info("dropped %s (safetensors weights already present)", name)
        path.unlink()
    for index in folder.glob("*.bin.index.json"):
        data = json.loads(index.read_text())
        data["weight_map"] = {k: mapping.get(v, v) for k, v in data.get("weight_map", {}).items()}
        (folder / "model.safetensors.index.json").write_text(json.dumps(data, indent=2))
        index.unlink()
    return pickles


def import_model(
    source: str,
    out_dir: str | Path,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    mlflow_tracking_uri: str | None = None,
    artifact_path: str = "model",
) -> Manifest:
    """Import the model ``source`` names into ``out_dir``.

    Args:
        source: a local folder or archive, ``hf://org/name[@rev]``, ``s3://...``, ``gs://...``,
            ``models:/name/version``, ``models:/name@alias`` or ``bootstrap://tiny``.
        out_dir: destination folder; replaced if it exists.
        allow_pickle: load pickle weights with torch and convert them to safetensors instead of refusing.
        trust_remote_code: accept models that ship custom modelling code.
        mlflow_tracking_uri: registry to read ``models:/`` URIs from (default: MLflow's own resolution).
        artifact_path: for ``models:/`` URIs, the artifact folder of the version that holds the model.

    Returns:
        The manifest, also written to ``out_dir/llmops_manifest.json``.

    Raises:
        UnknownSourceError: unknown URI scheme (the message lists the known ones).
        SourceUnavailableError: the source cannot be read (offline, not found, optional extra missing).
        UnsafeModelError: pickle weights or custom code without the matching allow flag.
        UnsafeArchiveError: an archive entry would escape the extraction folder.
        IncompleteModelError: empty/missing folder, no config.json, no tokenizer, no weights.
    """
    out_dir = Path(out_dir)
    src = source_for(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".llmops-import-", dir=out_dir.parent))
    try:
        log.info("fetching %s (%s source)", source, src.scheme.value)
        fetched = src.fetch(
            source,
            work,
            FetchOptions(allow_pickle=allow_pickle, mlflow_tracking_uri=mlflow_tracking_uri, artifact_path=artifact_path),
        )
        folder, revision = fetched.path, fetched.resolved_revision
        if folder.is_file():
            if not is_archive(folder):
                raise IncompleteModelError(
                    f"{source}: is a file, not a model folder or a .tar/.tar.gz/.tgz/.zip archive"
                )
            revision = revision or "sha256:" + file_sha256(folder)
            folder = model_root(safe_extract(folder, work / "extracted"))
        names = [
            n for n in _files(folder)
            if n != MANIFEST_NAME and not (fetched.only and not matches(n, list(fetched.only)))
        ]
        pickles = _check(folder, names, source, allow_pickle, trust_remote_code)
        _check_weights(folder, source)

        staging = work / "model"
        staging.mkdir()
        for name in names:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, staging / name)  # follows symlinks (HF cache blobs)
        converted = _convert_pickles(staging, pickles) if pickles else []
        manifest = build_manifest(
            staging,
            source=source,
            resolved_revision=revision,
            trust_remote_code=trust_remote_code and bool(
                json.loads((staging / "config.json").read_text()).get("auto_map") or any(staging.rglob("*.py"))
            ),
            converted_from_pickle=converted,
        )
        write_manifest(staging, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
        log.info(
            "imported %s: %s, %d parameters, %d files, %s",
            source, manifest.architecture, manifest.parameter_count, len(manifest.files), manifest.content_digest,
        )
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
