"""``llmops compile``: the committed pipeline package matches the code and loads back in KFP."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml
from kfp.components import load_component_from_file

from pipelines.cli import main
from pipelines.commands.compile import DEFAULT_PACKAGE, compile_pipeline
from pipelines.llm_release import PIPELINE_NAME, llm_release


def stale_diff(committed: str, fresh: str) -> str:
    """Empty when the committed package is current; else a short diff."""
    if committed == fresh:
        return ""
    diff = difflib.unified_diff(committed.splitlines(), fresh.splitlines(), "committed", "fresh compile", lineterm="", n=1)
    return "\n".join(list(diff)[:40])


def assert_fresh(committed: str, fresh: str) -> None:
    diff = stale_diff(committed, fresh)
    assert not diff, f"pipelines/llm_release.yaml is stale: run `llmops compile` and commit the result\n{diff}"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("compile") / "llm_release.yaml")


def test_committed_package_is_current(fresh):
    assert DEFAULT_PACKAGE.exists(), "pipelines/llm_release.yaml is missing: run `llmops compile` and commit the result"
    assert_fresh(DEFAULT_PACKAGE.read_text(encoding="utf-8"), fresh.read_text(encoding="utf-8"))


def test_stale_check_fails_when_the_pipeline_changes(fresh):
    text = fresh.read_text(encoding="utf-8")
    changed = text.replace("Optimizer steps of the fine-tune.", "Optimizer steps (edited).", 1)  # a description edited
    assert changed != text
    with pytest.raises(AssertionError, match=r"stale: run `llmops compile`(?s:.*)-\s+description: Optimizer steps of the fine-tune"):
        assert_fresh(text, changed)


def test_package_loads_back_with_parameters_and_descriptions(fresh):
    component = load_component_from_file(str(fresh))
    assert component.name == PIPELINE_NAME
    import inspect

    signature = inspect.signature(llm_release.pipeline_func)
    assert set(component.component_spec.inputs) == set(signature.parameters)
    from pipelines.params import ReleaseParams

    assert component.component_spec.inputs["finetune_steps"].default == ReleaseParams().finetune_steps
    ir = next(yaml.safe_load_all(fresh.read_text(encoding="utf-8")))
    params = ir["root"]["inputDefinitions"]["parameters"]
    missing = sorted(name for name, p in params.items() if not p.get("description"))
    assert not missing, f"pipeline parameters without a description (add them to llm_release's Args:): {missing}"
    assert params["finetune_steps"]["description"] == "Optimizer steps of the fine-tune."


def test_cli_compiles_to_out(tmp_path, capsys):
    out = tmp_path / "sub" / "p.yaml"
    assert main(["compile", "--out", str(out)]) == 0
    assert f"compiled llm-release to {out}" in capsys.readouterr().out
    assert load_component_from_file(str(out)).name == PIPELINE_NAME
    assert [p.name for p in out.parent.iterdir()] == ["p.yaml"]  # no temporary left behind


def test_cli_refuses_a_non_yaml_out(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path / "p.txt")]) == 2
    assert "a KFP package ends in .yaml" in capsys.readouterr().err
    assert not (tmp_path / "p.txt").exists()
