"""One run of a recipe, in stages: build (through the cache), evaluate, profile, gate, write.

The package is callable: ``compress.run(recipe, ...)`` is ``compress.api.run`` (a module attribute
named ``run`` would be replaced by this package as soon as it is imported, so the package is the API).
"""

import os
import sys
import types


def passive_openmp_wait() -> None:
    """With OpenMP's default active wait, two PyTorch threads on a busy 2-core machine slow down
    many times over (seen here on a ResNet-18 forward pass); passive waiting costs little when the
    machine is idle. Called by the CLI and by ``compress.run`` before torch is imported; a user's
    own OMP_WAIT_POLICY wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _CallableModule(types.ModuleType):
    def __call__(self, recipe, **options):
        """Run a recipe and return its typed results: see ``compress.api.run``."""
        passive_openmp_wait()
        from compress.api import run

        return run(recipe, **options)


sys.modules[__name__].__class__ = _CallableModule
