"""The package's shape: one import name, and the boundaries the README draws.

- An installed prompttap adds exactly one top-level import package, ``prompttap``.
- ``schemas`` imports neither side; ``collector`` and ``inspector`` import ``schemas`` and
  themselves only; only the composition root (``prompttap/``: the CLI and ``serve``) joins
  them. Every module's imports are read, lazy ones inside functions included.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = {"collector": "collector", "inspector": "inspector", "schemas": "schemas", "prompttap": "prompttap"}
ALLOWED = {
    "schemas": {"schemas"},
    "collector": {"collector", "schemas"},
    "inspector": {"inspector", "schemas"},
    "prompttap": {"prompttap", "collector", "inspector", "schemas"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.append((node.lineno, "<relative>"))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
        ):
            first = node.args[0]
            text = first.value if isinstance(first, ast.Constant) else ast.unparse(first)
            out.append((node.lineno, str(text).strip("f'\"")))
    return out


def _part_of(module: str) -> str | None:
    """The part a module name belongs to, or None when it is not prompttap's."""
    head = module.split(".")
    if head[0] in ("collector", "inspector", "schemas"):
        return "bare:" + head[0]  # imported without the namespace: a second copy of the module
    if head[0] != "prompttap":
        return None
    return head[1] if len(head) > 1 and head[1] in ("collector", "inspector", "schemas") else "prompttap"


def test_every_module_imports_only_across_allowed_boundaries() -> None:
    crossings = []
    for part, folder in PARTS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, module in _imports(path):
                if module == "<relative>":
                    crossings.append(f"{path.relative_to(ROOT)}:{line} relative import (import through prompttap.)")
                    continue
                target = _part_of(module)
                if target is None:
                    continue
                if target.startswith("bare:") or target not in ALLOWED[part]:
                    crossings.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert crossings == []


def test_the_boundary_check_sees_a_crossing(tmp_path: Path) -> None:
    """The check above must be able to fail: a lazy import inside a function counts."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from prompttap.collector.proxy import Proxy\n    import schemas.capture\n")
    found = [m for _, m in _imports(bad)]
    assert [_part_of(m) for m in found] == ["collector", "bare:schemas"]
    assert "collector" not in ALLOWED["inspector"]


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: setuptools writes build/ into the tree it builds
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in PARTS.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("prompttap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"prompttap"}
    for must in (
        "prompttap/__init__.py",
        "prompttap/cli.py",
        "prompttap/collector/proxy.py",
        "prompttap/collector/apis/openai.py",
        "prompttap/collector/sinks/otlp.py",
        "prompttap/inspector/app.py",
        "prompttap/inspector/export/cli.py",
        "prompttap/inspector/templates/capture.html",
        "prompttap/inspector/static/app.js",
        "prompttap/schemas/capture.py",
        "prompttap/schemas/migrations/0001_captures.sql",
    ):
        assert must in names, must
    assert not [n for n in names if n.startswith(("tests/", "bench/", "prompttap/tests/"))]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "prompttap = prompttap.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
