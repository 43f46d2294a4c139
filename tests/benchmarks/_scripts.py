"""Load a script of benchmarks/ (or tools/) as a module, for tests of its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TOOLS = BENCHMARKS.parent / "tools"


def load_script(name: str, folder: Path = BENCHMARKS):
    """FOLDER/NAME.py as module NAME (registered, so its dataclasses and pickling resolve), with FOLDER on the
    import path as when the script runs (its shared helpers, such as benchmarks/_live.py, import by name)."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
