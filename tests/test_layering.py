"""The core's imports point down: format, quantize, ops, kernels, runtime and errors never
import the tools around them (benchmarks, yardsticks, plots, tuner), demos, models, the CLI,
the browser export or the torch extension."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import q4gsw

PACKAGE = Path(q4gsw.__file__).parent
CORE = ("arith", "checks", "errors", "format", "quantize", "ops", "kernels", "runtime")
AROUND = ("tools", "demos", "models", "llm", "cli", "web", "torch_ext", "io")
#: No module above this many lines, unless its first docstring says why it is one thing.
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the q4gsw modules that path imports (at any depth of the file)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "q4gsw" or n.startswith("q4gsw.")}


def core_files() -> list[Path]:
    files = []
    for name in CORE:
        target = PACKAGE / name
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return files


@pytest.mark.parametrize("path", core_files(), ids=lambda p: module_name(p))
def test_core_imports_nothing_around_it(path):
    """A core module imports no tool, demo, model, CLI, web or torch module of q4gsw."""
    bad = {m for m in imported_modules(path) if any(m.startswith(f"q4gsw.{a}") for a in AROUND)}
    assert not bad, f"{module_name(path)} imports {sorted(bad)}"


def test_modules_are_small():
    """Every module is at most MAX_LINES lines, or says at its top why it is one thing."""
    big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and "one thing" not in (ast.get_docstring(ast.parse(path.read_text())) or ""):
            big.append(f"{module_name(path)} ({len(lines)} lines)")
    assert not big, "modules over the limit: " + ", ".join(big)
