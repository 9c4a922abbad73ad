"""jobs/ is split by where its code runs (docs/architecture.md, "The jobs/ floor plan"): the in-job
side never imports the submit or report side, the shared top modules import none of the three, and
no module of jobs/ imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[2] / "jobs"
SIDES = ("submit", "injob", "report")
FORBIDDEN = {  # the package a module lives in -> the jobs packages it must not import
    "top": {f"jobs.{side}" for side in SIDES},
    "injob": {"jobs.submit", "jobs.report"},
    "submit": {"jobs.report"},
    "report": {"jobs.submit"},
}
SHIMS = ("requeue.py", "ports.py", "probe.py")  # entry points under their old names: they import injob/


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _modules():
    for path in sorted(JOBS.rglob("*.py")):
        relative = path.relative_to(JOBS)
        side = relative.parts[0] if len(relative.parts) > 1 else "top"
        if side == "top" and path.name in (*SHIMS, "cli.py", "__init__.py"):
            continue  # the command line dispatches to every side; the shims name injob/
        yield str(relative), side, _imports(path)


@pytest.mark.parametrize("module,side,imports", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_go_one_way(module, side, imports):
    wrong = sorted(name for name in imports for banned in FORBIDDEN[side]
                   if name == banned or name.startswith(banned + "."))
    assert wrong == [], f"jobs/{module} ({side}) imports {wrong}"
    assert not {name for name in imports if name == "torch" or name.startswith("torch.")}
