"""``llmops compile``: compile the release pipeline to the KFP IR YAML that ``llmops submit`` uploads."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_PACKAGE = Path(__file__).resolve().parents[1] / "llm_release.yaml"


def compile_pipeline(out: str | Path = DEFAULT_PACKAGE) -> Path:
    """Compile :func:`pipelines.llm_release.llm_release` to ``out`` (KFP v2 IR YAML).

    Args:
        out: where to write the package (parent folders are created).

    Returns:
        The path written.
    """
    from kfp import compiler

    from pipelines.llm_release import llm_release

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    compiler.Compiler().compile(pipeline_func=llm_release, package_path=str(tmp))
    tmp.replace(out)  # nothing half written
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="compile the release pipeline to KFP YAML (pipelines/llm_release.yaml)",
        description=(
            "Compile the `llm-release` Kubeflow pipeline to its IR YAML package, the file "
            "`llmops submit` uploads and the KFP UI accepts. The committed package must match "
            "the code: rerun this after changing the pipeline or a component."
        ),
    )
    p.add_argument("--out", type=Path, default=DEFAULT_PACKAGE, help="output file (default: pipelines/llm_release.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError

    if args.out.suffix not in (".yaml", ".yml", ".json"):
        raise CliError(f"--out {args.out}: a KFP package ends in .yaml (or .json); e.g. --out pipelines/llm_release.yaml")
    try:
        path = compile_pipeline(args.out)
    except OSError as exc:
        raise CliError(f"--out {args.out}: cannot write ({exc})") from exc
    print(f"compiled llm-release to {path}")
    return 0
