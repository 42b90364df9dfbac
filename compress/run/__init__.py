"""One run of a recipe, in stages: build (through the cache), evaluate, profile, gate, write.

The package is callable: ``compress.run(recipe, ...)`` is ``compress.api.run`` (a module attribute
named ``run`` would be replaced by this package as soon as it is imported, so the package is the API).
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, recipe, **options):
        """Run a recipe and return its typed results: see ``compress.api.run``."""
        from compress.api import run

        return run(recipe, **options)


sys.modules[__name__].__class__ = _CallableModule
