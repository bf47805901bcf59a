"""Each image holds every llmops package its entry point imports (a missing one fails only on the cluster).

Docker cannot build here (no base images), so the check is static: the packages a
Dockerfile COPYs against the packages its code reaches by import (an AST walk over
module-level and function-level imports, from the entry point through every llmops
module it reaches), and the components image against the package list pip installs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _packages() -> set[str]:
    text = (REPO / "pyproject.toml").read_text()
    include = re.search(r"^include = \[(.*)\]$", text, re.M).group(1)
    return {name.strip().strip('"').rstrip("*") for name in include.split(",")}


def _copied(dockerfile: Path) -> set[str]:
    out = set()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            out.update(Path(src).parts[0] for src in line.split()[1:-1] if not src.startswith("--"))
    return out


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _reached(entry: str, ours: set[str]) -> set[str]:
    """Top-level llmops packages reachable by imports from module ``entry``."""
    seen, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        parts = name.split(".")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:
                pkg = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                base = ".".join(pkg + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            todo += [t for t in targets if t.split(".")[0] in ours]
    return {name.split(".")[0] for name in seen if _module_file(name)}


def test_the_model_server_image_copies_every_package_the_server_imports():
    ours = _packages()
    needed = _reached("serving.__main__", ours) | _reached("serving.runtime.server", ours)
    missing = needed - _copied(REPO / "serving" / "Dockerfile")
    assert not missing, f"serving/Dockerfile must COPY {sorted(missing)}: `python -m serving` imports them"


def test_the_components_image_copies_every_package_pip_installs():
    copied = _copied(REPO / "components" / "Dockerfile")
    missing = _packages() - copied
    assert not missing, f"components/Dockerfile must COPY {sorted(missing)} (pyproject's packages; the steps import them)"
    assert {"pyproject.toml", "README.md"} <= copied
