"""The product boundary: the runtime package never needs the devkit, and its library API is what `__all__` names."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import region_latency
import region_latency.cache

RUNTIME = Path(region_latency.__file__).resolve().parent


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("module", [region_latency, region_latency.cache], ids=lambda m: m.__name__)
def test_every_public_name_exists(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(module, name) is not None, name


def test_library_api_is_the_tracker_the_caches_and_passive_instrumentation() -> None:
    assert {"RegionLatencyTracker", "FileCache", "MemoryCache", "RedisCache", "instrument"} <= set(
        region_latency.__all__)


def test_the_package_imports_without_botocore_and_instrument_loads_on_use() -> None:
    """The serve process leaves botocore to its config-resolving child: `import region_latency` must not load it."""
    code = ("import sys, region_latency\n"
            "before = 'botocore' in sys.modules\n"
            "from region_latency import instrument\n"
            "print(before, instrument.__module__)")
    result = _run(code)
    assert result.stdout.split() == ["False", "region_latency.passive"], result.stderr


def _devkit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, enclosing function) of every import of region_latency_devkit in one runtime module."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Import | ast.ImportFrom):
                modules = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or ""]
                if any(m.split(".")[0] == "region_latency_devkit" for m in modules):
                    found.append((child.lineno, function))
            visit(child, inner)

    visit(ast.parse(path.read_text()), "<module>")
    return found


def test_runtime_modules_import_the_devkit_only_in_the_demo_command() -> None:
    offenders = {}
    for path in sorted(RUNTIME.rglob("*.py")):
        imports = _devkit_imports(path)
        allowed = path.name == "cli.py" and all(function == "demo" for _, function in imports)
        if imports and not allowed:
            offenders[str(path.relative_to(RUNTIME))] = imports
    assert not offenders


def test_importing_every_runtime_module_loads_no_devkit_and_no_test_dependency() -> None:
    code = (
        "import importlib, pkgutil, sys, region_latency\n"
        "for info in pkgutil.walk_packages(region_latency.__path__, 'region_latency.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('region_latency_devkit', 'httpx', 'trustme', 'pytest', 'hypothesis')))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(list(pkgutil.walk_packages(region_latency.__path__))) > 10  # the walk saw the package


@pytest.mark.parametrize("missing", ["region_latency_devkit", "trustme"])
def test_demo_without_the_demo_extra_says_what_to_install(missing: str) -> None:
    """No traceback: one line naming the extra (before, a missing trustme surfaced as a RuntimeError traceback)."""
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "for name in [m for m in sys.modules if m.startswith('region_latency_devkit.')]:\n"
        "    del sys.modules[name]\n"
        "from region_latency.cli import main\n"
        "sys.argv = ['region-latency-exporter', 'demo', '--listen', '127.0.0.1:0']\n"
        "main()\n"
    )
    result = _run(code)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "pip install 'region-latency-exporter[demo]'" in lines[0]
