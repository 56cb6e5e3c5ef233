"""Modules loaded when first used rather than when imported, for the omdiscd program only: what
the daemon imports for a rare path, or what a library imports and then never calls on the
daemon's way. Used, such a module loads then and behaves as it always does.

Not importlib's LazyLoader: Python 3.11's import statement reads the module's __spec__ to see
whether it is still being imported, and any attribute read loads a LazyLoader module, so the next
`import inspect` would load it at once. Here the module object is made as the import system makes
it (module_from_spec: __spec__, __file__, __name__ set), and only a name it does not have yet, the
first read of what its code defines, runs its code. The spec is found by the finders on
sys.meta_path, as the import statement asks them, and the module made by the import system's core
that comes with the interpreter (_frozen_importlib, which importlib.util re-exports): importing
importlib.util would bring importlib, warnings and importlib._abc into the daemon.
"""

from __future__ import annotations

import sys
from _frozen_importlib import module_from_spec
from types import ModuleType

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec


def defer(*names: str) -> None:
    """Each of `names` loaded at the first read of a name it defines (one loaded already stays)."""
    for name in names:
        if name in sys.modules:
            continue
        spec = _find_spec(name)
        if spec is None or spec.loader is None:
            continue
        module = module_from_spec(spec)
        module.__dict__["__getattr__"] = _loader_of(module)
        sys.modules[name] = module


def _find_spec(name: str) -> ModuleSpec | None:
    """The spec of top-level module `name` from the first finder that knows it."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec: ModuleSpec | None = find(name, None) if find is not None else None
        if spec is not None:
            return spec
    return None


def _loader_of(module: ModuleType) -> object:
    def load(attr: str) -> object:
        del module.__dict__["__getattr__"]
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(module)
        return getattr(module, attr)

    return load
