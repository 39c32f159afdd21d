"""Package attributes imported on first use (PEP 562): a package lists which submodule defines each
public name, and importing the package imports none of them."""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """(__getattr__, __dir__) for ``package`` whose ``exports`` map a name to its submodule; a name is
    imported on first access and then cached in the package's ``namespace``."""

    def __getattr__(name):
        if name in exports:
            value = getattr(import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
