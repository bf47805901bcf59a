"""``llmops import``: import a base model into a checked, safetensors-only folder with a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="import a base model (folder, archive, hf://, s3://, gs://, models:/, bootstrap://)",
        description=(
            "Copy a model into OUT as a Hugging Face folder with safetensors weights and "
            "llmops_manifest.json (file hashes, content digest, architecture, parameter count). "
            "Sources: a local folder or .tar/.tar.gz/.zip archive, hf://org/name[@revision] "
            "(honours HF_HUB_OFFLINE and the cache), s3://bucket/prefix (pip install 'llmops[s3]'), "
            "gs://bucket/prefix (pip install 'llmops[gcs]'), models:/name/version or models:/name@alias "
            "(MLflow registry), bootstrap://tiny or bootstrap://micro (generated offline). "
            "Pickle weights and custom model code are refused unless explicitly allowed."
        ),
    )
    p.add_argument("source", help="model URI or path")
    p.add_argument("--out", type=Path, required=True, help="destination folder (replaced if it exists)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load *.bin/*.pt/*.pth/*.pkl/*.ckpt weights with torch and convert them to safetensors")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="accept models that ship custom code (auto_map / *.py); review the code first")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ sources")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from components.import_model import ModelImportError, import_model
    from pipelines.cli import CliError

    try:
        m = import_model(args.source, args.out, allow_pickle=args.allow_pickle,
                         trust_remote_code=args.trust_remote_code, mlflow_tracking_uri=args.tracking_uri)
    except ModelImportError as exc:
        raise CliError(str(exc)) from exc
    print(f"model:       {args.out}")
    print(f"digest:      {m.content_digest}")
    print(f"arch:        {m.architecture} ({m.parameter_count:,} parameters, {m.total_size_bytes:,} bytes)")
    print(f"revision:    {m.resolved_revision or '-'}")
    return 0
