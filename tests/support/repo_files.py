"""Files of the repository that live outside any package (prometheus/generate.py, grafana/generate.py,
scripts/demo_prometheus.py), loaded as modules so tests use exactly what users run."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load(relative: str) -> ModuleType:
    """The module in `relative` (e.g. "prometheus/generate.py"), loaded once."""
    path = REPO / relative
    name = "_repo_" + re.sub(r"\W", "_", relative.removesuffix(".py"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
