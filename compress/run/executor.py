"""Where a run's work happens: in this process (the default), or on a Ray cluster.

An executor builds the variants, evaluates every model on every split and times each target's
models; the pipeline around it (baseline, gate, report, run directory) is the same for every
executor, and so are the artifacts' digests, the accuracies and the verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from compress.registry import Registry
from compress.run.build import build_variants
from compress.run.evaluate import evaluate_models
from compress.run.profiling import profile_pairs


class Executor(Protocol):
    """One small interface per executor (``InProcess``, ``compress.run.ray_executor.RayExecutor``)."""

    name: str
    #: every worker reads and writes one artifact store, so a run always has one (``--no-cache``
    #: gets a fresh store inside the run's work directory)
    shared_store: bool

    def check(self, recipe) -> None:
        """Refuse, before anything is built, a recipe this executor cannot place (e.g. a target
        no node provides)."""

    def build_variants(self, recipe, recipe_path: Path, baseline, splits, cache, workroot: Path,
                       progress=None, log=print) -> dict:
        """``compress.run.build.build_variants``: {variant: Built}, parents before children."""

    def evaluate_models(self, recipe, recipe_path: Path, splits, models: dict, roles, corrupted,
                        load: Callable, eval_target: Callable, progress=None) -> dict:
        """``compress.run.evaluate.evaluate_models``: {model: results or the exception}."""

    def profile_pairs(self, recipe, recipe_path: Path, pairs: dict, make_batch: Callable, settings: dict,
                      progress=None, log=print) -> dict:
        """``compress.run.profiling.profile_pairs(pairs, make_batch, **settings)``, the settings of
        ``compress.run.pipeline.profile_settings`` (a worker makes its own batches and settings)."""

    def map(self, fn: Callable, items: list, *, num_cpus: float = 1, num_gpus: float = 0,
            resources: dict | None = None) -> list:
        """``fn(item)`` for every item (e.g. search trials), in order; an item whose call failed
        gets its exception in its place, so no item is silently dropped. ``resources``: custom
        resources each call needs (``{"target:cpu": 1}`` runs it on a node providing that target)."""

    def slots(self) -> int:
        """How many ``map`` calls of one CPU run at once (a search asks this many trials at a time)."""

    def close(self) -> None:
        """Release what the executor started (a local Ray)."""


class InProcess:
    """Everything in this process, one thing after another: the default, and no Ray needed."""

    name = "in-process"
    shared_store = False

    def check(self, recipe) -> None:
        return None

    def build_variants(self, recipe, recipe_path, baseline, splits, cache, workroot, progress=None, log=print):
        return build_variants(recipe, baseline, splits, cache, workroot, progress, log)

    def evaluate_models(self, recipe, recipe_path, splits, models, roles, corrupted, load, eval_target,
                        progress=None):
        return evaluate_models(recipe, splits, models, roles, corrupted, load, progress)

    def profile_pairs(self, recipe, recipe_path, pairs, make_batch, settings, progress=None, log=print):
        return profile_pairs(pairs, make_batch, **settings, progress=progress, log=log)

    def map(self, fn, items, *, num_cpus=1, num_gpus=0, resources=None):
        out = []
        for item in items:
            try:
                out.append(fn(item))
            except Exception as err:
                out.append(err)
        return out

    def slots(self) -> int:
        return 1

    def close(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ray_executor(address: str | None = None, log=print) -> Executor:
    from compress.run.ray_executor import RayExecutor  # Ray is imported only here

    return RayExecutor(address=address, log=log)


#: name -> factory(address=None, log=print); tests/test_executor.py checks each against Executor
EXECUTORS: Registry[Callable[..., Executor]] = Registry("executor")
EXECUTORS.add("in-process", lambda address=None, log=print: InProcess())
EXECUTORS.add("ray", _ray_executor)


def make_executor(*, ray: bool = False, ray_address: str | None = None, log=print) -> Executor:
    """The executor ``compress run`` options ask for: ``--ray`` (a local Ray started here),
    ``--ray-address ADDRESS`` (join a cluster), else in-process. Ray is imported only for Ray."""
    name = "ray" if ray or ray_address is not None else "in-process"
    return EXECUTORS.get(name)(address=ray_address, log=log)
