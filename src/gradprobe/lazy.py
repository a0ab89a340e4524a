"""Public names of a package imported on first use (PEP 562), so start-up loads no torch, pandas or DuckDB."""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any


class _Package(types.ModuleType):
    """A lazily exporting package: a submodule import must not replace the public name it shares.

    Importing ``gradprobe.diagnose`` sets it as an attribute of ``gradprobe``, where the name means the
    function; the same holds for ``gradprobe.store.query``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_LAZY", ()) and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def export_lazily(package: str, public: dict[str, str]) -> None:
    """Make each ``public`` name (``name -> module``) of ``package`` import from its module when first asked for."""
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:  # noqa: N807  (PEP 562)
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(public[name]), name)
        module.__dict__[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807  (PEP 562)
        return sorted(module.__dict__["__all__"])

    module.__dict__.update(_LAZY=public, __getattr__=__getattr__, __dir__=__dir__)
    module.__class__ = _Package


__all__ = ["export_lazily"]
