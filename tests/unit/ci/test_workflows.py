"""The CI workflow files users copy call llmops commands and flags that exist."""

import re
from pathlib import Path

import pytest
import yaml

from pipelines.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS = [ROOT / "ci" / "github" / "llmops.yaml", ROOT / "ci" / "gitlab" / ".gitlab-ci.yml"]


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _invocations(text: str):
    """(subcommand, flags) for every `llmops SUB ...` call; bash arrays `args+=(...)` count for promote."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    joined = re.sub(r"\n\s+(?=--)", " ", text)  # YAML folded/continued lines
    for line in joined.splitlines():
        for m in re.finditer(r"\bllmops ([a-z-]+)([^\n;&|]*)", line):
            yield m.group(1), re.findall(r"(--[a-z][a-z-]*)", m.group(2))
        if re.search(r"\bargs\+?=\(", line):
            yield "promote", re.findall(r"(--[a-z][a-z-]*)", line)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_yaml_and_calls_real_commands(path):
    text = path.read_text()
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict) and doc
    subs = _subparsers()
    calls = list(_invocations(text))
    assert {"compile", "submit", "promote"} <= {c for c, _ in calls}
    for sub, flags in calls:
        assert sub in subs, f"{path.name}: `llmops {sub}` is not a command"
        known = {opt for a in subs[sub]._actions for opt in a.option_strings}
        for flag in flags:
            assert flag in known, f"{path.name}: `llmops {sub} {flag}` is not an option of {sub}"


def test_github_workflow_builds_both_images_from_existing_dockerfiles():
    doc = yaml.safe_load(WORKFLOWS[0].read_text())
    matrix = doc["jobs"]["images"]["strategy"]["matrix"]["include"]
    for entry in matrix:
        assert (ROOT / entry["dockerfile"]).is_file(), entry
    assert {e["name"] for e in matrix} == {"llmops-runtime", "llmops-components"}
    # 'on' parses as True in YAML 1.1
    triggers = doc.get("on", doc.get(True))
    assert "workflow_dispatch" in triggers and triggers["push"]["tags"] == ["release-*"]
