"""compress: make trained models cheaper to run, and prove it.

The Python API (``compress.api``): ``compress.run(recipe)`` runs a recipe (a path, a dict or a
``Recipe``) and returns typed ``Results``; ``compress.load_recipe`` and ``compress.load_results``
read them. Everything is imported on first use, so ``import compress`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_recipe": "compress.api",
    "load_results": "compress.api",
    "Recipe": "compress.recipe",
    "Results": "compress.results.models",
}

__all__ = ["Recipe", "Results", "__version__", "load_recipe", "load_results", "run"]


def __getattr__(name: str):
    if name == "run":  # the package compress.run, callable: compress.run(recipe) is compress.api.run
        return importlib.import_module("compress.run")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
