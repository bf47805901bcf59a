"""Imports point down only (ARCHITECTURE.md "Layers"): llmops_core < model_registry, oci_images < serving < components < pipelines.

An AST walk over every module, so an upward import anywhere (module level or inside a function) fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAYERS = {"llmops_core": 0, "model_registry": 1, "oci_images": 1, "serving": 2, "components": 3, "pipelines": 4}
# Known upward imports still to move down (none left: the OCI client moved to oci_images, below serving).
KNOWN: set[tuple[str, str]] = set()


def upward_imports() -> list[tuple[str, str]]:
    found = []
    for package, level in LAYERS.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in LAYERS and LAYERS[top] > level:
                        found.append((rel, name))
    return found


def test_nothing_imports_upward():
    unexpected = [f"{rel} imports {name}" for rel, name in upward_imports() if (rel, name) not in KNOWN]
    assert unexpected == [], "move the shared code down a layer or pass it in as data:\n" + "\n".join(unexpected)


def test_the_known_exceptions_still_exist():
    # when one is fixed, drop it from KNOWN so it cannot come back
    stale = KNOWN - set(upward_imports())
    assert not stale, f"no longer imported upward, remove from KNOWN: {sorted(stale)}"


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_layer_is_a_package(package):
    assert (ROOT / package / "__init__.py").is_file()
