"""docs/ARCHITECTURE.md says data flows one way and no module imports a module above it; this keeps it true.

The import graph is read from the source (every `import`, function-level ones included, since a lazy import is
still a dependency), so a cycle or an upward import fails here before it becomes a surprise at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "exporter"
PACKAGE = "region_latency"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (PACKAGE_DIR / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module an imported name lives in (`region_latency.probes.base.Target` -> `region_latency.probes.base`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{module}: relative import; the package uses absolute imports")
        for name in names:
            if name.split(".")[0] == PACKAGE:
                owner = _owner(name)
                if owner is not None and owner != module:
                    found.add(owner)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_there_is_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


# (module prefix, prefixes it must never import): the flow of docs/ARCHITECTURE.md read upwards.
UPWARD = [
    # the tracker owns its cache saver (cache/saver.py), so cache/ sits below it
    ("region_latency.tracker", ["region_latency.probes", "region_latency.regions",
                                "region_latency.config", "region_latency.state", "region_latency.export",
                                "region_latency.app", "region_latency.cli", "region_latency.measure"]),
    ("region_latency.cache", ["region_latency.tracker", "region_latency.regions", "region_latency.measure",
                              "region_latency.probes", "region_latency.config", "region_latency.state",
                              "region_latency.export", "region_latency.app", "region_latency.cli"]),
    ("region_latency.probes", ["region_latency.tracker", "region_latency.measure", "region_latency.config",
                               "region_latency.targets", "region_latency.state", "region_latency.export",
                               "region_latency.app", "region_latency.cli", "region_latency.scheduler"]),
    ("region_latency.ranking", ["region_latency.config", "region_latency.state", "region_latency.export",
                                "region_latency.app", "region_latency.cli"]),
    # regions.py is read for its names only (botocore loads lazily, in targets' resolution)
    ("region_latency.config", ["region_latency.targets", "region_latency.resolve",
                               "region_latency.state", "region_latency.export", "region_latency.app",
                               "region_latency.cli", "region_latency.scheduler"]),
    ("region_latency.state", ["region_latency.export", "region_latency.app", "region_latency.cli"]),
    ("region_latency.export", ["region_latency.app", "region_latency.cli"]),
    ("region_latency.scheduler", ["region_latency.state", "region_latency.export", "region_latency.app",
                                  "region_latency.cli"]),
]


@pytest.mark.parametrize(("lower", "forbidden"), UPWARD, ids=[lower for lower, _ in UPWARD])
def test_no_module_imports_a_module_above_it(lower: str, forbidden: list[str]) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items() if _under(module, lower)
        for target in targets if any(_under(target, prefix) for prefix in forbidden)
    )
    assert not wrong, wrong


def test_only_the_entry_points_import_the_cli_and_the_app() -> None:
    for module, targets in GRAPH.items():
        if "region_latency.cli" in targets:
            assert module == "region_latency.__main__", module
        if "region_latency.app" in targets:
            assert module in ("region_latency.cli", "region_latency.__main__"), module


def test_the_graph_was_read() -> None:
    """Guards the guard: the walk sees the package and real edges (a broken walk would pass everything)."""
    assert len(GRAPH) > 30
    assert "region_latency.probes.base" in GRAPH["region_latency.probes.tcp"]
    assert "region_latency.tracker" in GRAPH["region_latency.state"]
