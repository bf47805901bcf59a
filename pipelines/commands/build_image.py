"""``llmops build-image``: package a model folder as an OCI image and push it (no Docker daemon needed)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-image",
        help="package a model folder as an OCI image (modelcar or serving) and push it",
        description=(
            "Append the model folder as reproducible layers to a base image and push the result to any OCI "
            "registry, or write it as an OCI layout folder (oci-layout:/dir[:tag]). The default 'oci' builder "
            "needs no Docker daemon; building twice gives the same digest, and only layers the registry lacks "
            "are sent. Prints the pinned reference repo@sha256:... on the last line."
        ),
    )
    p.add_argument("model_dir", type=Path, help="folder with the model files")
    p.add_argument("target", help="registry/repo[:tag] or oci-layout:/path/to/dir[:tag]")
    p.add_argument("--base", default=None,
                   help="base image (default: none, an empty 'scratch' base); modelcar needs sh, ln and sleep")
    p.add_argument("--mode", choices=["modelcar", "serving", "plain"], default="modelcar",
                   help="modelcar: files under /models (default); serving: runtime base, model under /mnt/models")
    p.add_argument("--builder", default="oci", help="oci (daemonless, default), docker or kaniko")
    p.add_argument("--tag", default=None, help="tag to push (overrides a tag in TARGET)")
    p.add_argument("--target-path", default=None, help="where the folder goes in the image (default from --mode)")
    p.add_argument("--platform", default="linux/amd64", help="platform picked from a multi-arch base")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="extra image label (repeatable)")
    p.add_argument("--model-name", default=None, help="recorded as label io.llmops.model.name")
    p.add_argument("--model-version", default=None, help="recorded as label io.llmops.model.version")
    p.add_argument("--revision", default=None, help="source revision (org.opencontainers.image.revision)")
    p.add_argument("--insecure", action="store_true", help="plain HTTP registry (a local registry without TLS)")
    p.add_argument("--username", default=None,
                   help="registry user; password from $LLMOPS_REGISTRY_PASSWORD or --password-stdin "
                        "(default: credentials from the Docker config)")
    p.add_argument("--password-stdin", action="store_true", help="read the registry password from standard input")
    p.add_argument("--json", action="store_true", help="print the build result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from components.build_image import Credentials, ImageBuildError, build_image
    from pipelines.cli import CliError

    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--label {item!r} must be KEY=VALUE")
        labels[key] = value
    credentials = None
    if args.username:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else os.environ.get(
            "LLMOPS_REGISTRY_PASSWORD")
        if password is None:
            raise CliError("--username needs a password: set LLMOPS_REGISTRY_PASSWORD or pass --password-stdin")
        credentials = Credentials(username=args.username, password=password)
    from pipelines.progress import status_line

    try:
        with status_line("build-image"):
            result = build_image(
                args.model_dir, args.target, mode=args.mode, base=args.base, builder=args.builder, labels=labels,
                insecure=args.insecure, credentials=credentials, platform=args.platform, tag=args.tag,
                target_path=args.target_path, model_name=args.model_name, model_version=args.model_version,
                source_revision=args.revision,
            )
    except ImageBuildError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), indent=2))
    else:
        print(f"layers: {len(result.layers)}  sent: {result.blobs_uploaded} blob(s), "
              f"{result.bytes_uploaded / 1e6:.1f} MB  already there: {result.blobs_skipped}  "
              f"time: {result.wall_s:.1f}s")
        print(result.reference)
    return 0
