"""The house's rules (docs/architecture.md), read from the code: the core is pure, no layer reaches
up, every module imports alone (no cycles), and no class or function outgrows a reader."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "omdisc"
# I/O, clocks and processes: what the core is handed, never takes itself
IMPURE = frozenset({"os", "socket", "time", "asyncio", "subprocess", "select", "selectors", "signal", "ctypes",
                    "shutil", "tempfile", "netifaces", "systemd"})
FACES = frozenset({"omdisc.daemon", "omdisc.showmap", "omdisc.cli", "omdisc.front"})
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every module the file imports, absolute, at any depth of the file (a function's own import too)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from omdisc.shell import keyfile`
    return found


def layer_of(module: str) -> str:
    if module.startswith("omdisc.core"):
        return "core"
    if module.startswith("omdisc.shell"):
        return "shell"
    return "face"


def violations(root: Path) -> list[str]:
    """What breaks the rules: a core module that does I/O or imports the shell or a face; a shell
    module that imports a face."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        layer = layer_of(name)
        for imported in sorted(imports(path, root)):
            top = imported.split(".")[0]
            if layer == "core" and top in IMPURE:
                bad.append(f"{name} imports {imported}: the core is handed I/O and clocks, it takes none")
            elif layer == "core" and imported.startswith("omdisc.") and layer_of(imported) != "core":
                bad.append(f"{name} imports {imported}: the core reaches up")
            elif layer == "shell" and imported in FACES:
                bad.append(f"{name} imports {imported}: the shell reaches up to a face")
    return bad


def test_the_core_is_pure_and_no_layer_reaches_up() -> None:
    assert violations(PACKAGE) == []


def test_the_rule_catches_a_core_module_doing_io_or_reaching_up(tmp_path: Path) -> None:
    """The check above is only worth something if it fails on a broken house."""
    fake = tmp_path / "omdisc"
    (fake / "core").mkdir(parents=True)
    (fake / "shell").mkdir()
    for init in (fake, fake / "core", fake / "shell"):
        (init / "__init__.py").write_text("")
    (fake / "core" / "engine.py").write_text("import time\nfrom ..shell import sinks\n")
    (fake / "core" / "table.py").write_text("def f() -> None:\n    import os\n")
    (fake / "shell" / "sinks.py").write_text("from omdisc.daemon import main\n")
    assert [v.split(":")[0] for v in violations(fake)] == [
        "omdisc.core.engine imports omdisc.shell", "omdisc.core.engine imports omdisc.shell.sinks",
        "omdisc.core.engine imports time", "omdisc.core.table imports os",
        "omdisc.shell.sinks imports omdisc.daemon"]


IMPORT_ALONE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "omdisc" or m.startswith("omdisc.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
"""


def test_every_module_imports_alone() -> None:
    """A cycle shows only when the module at its far end is imported first."""
    names = [module_name(p, PACKAGE) for p in sorted(PACKAGE.rglob("*.py"))]
    r = subprocess.run([sys.executable, "-c", IMPORT_ALONE, *names], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def too_long(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if lines > limit:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {lines} lines")
    return out


def test_no_class_or_function_outgrows_a_reader() -> None:
    assert too_long(PACKAGE) == []


@pytest.mark.parametrize("package", sorted(p.parent.relative_to(ROOT).as_posix()
                                           for p in PACKAGE.rglob("__init__.py")))
def test_the_wheel_and_the_deb_hold_every_package(package: str) -> None:
    """pyproject's package list is what setuptools (and so pybuild, the .deb) installs."""
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"{package.replace("/", ".")}"' in text
