"""The runtime interface: load an artifact for a target, then run batches of named inputs. Nothing else.

The evaluator and the profiler both go through a ``Session``, so every number is measured on the
artifact that would be deployed, with the runtime that would run it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from compress.registry import Registry

if TYPE_CHECKING:
    from compress.artifacts import Artifact
    from compress.recipe import TargetConfig


class Session(ABC):
    """A loaded model. ``run`` takes a batch of named inputs (name -> array, e.g. ``pixel_values``
    float32 NCHW; see ``compress.sources.inputs``) and returns float32 logits [N, classes]."""

    #: what actually runs (providers, precision read back from the runtime), for the report
    info: dict[str, Any]

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Free what the session holds."""


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    accepts: frozenset[str]
    devices: frozenset[str]
    loader: Any  # callable(artifact, target) -> Session
    summary: str = ""
    extra: str | None = None  # the pip extra that installs it, when optional
    options: tuple[str, ...] = field(default_factory=tuple)
    #: checks a target's device and options when the recipe is loaded; raises ValueError
    validate: Any = None

    def load(self, artifact: Artifact, target: TargetConfig) -> Session:
        return self.loader(artifact, target)


RUNTIMES: Registry[RuntimeSpec] = Registry("runtime")


def register_runtime(name: str, *, accepts: set[str], devices: set[str], summary: str,
                     extra: str | None = None, options: tuple[str, ...] = (), validate=None):
    def decorator(loader):
        RUNTIMES.add(
            name, RuntimeSpec(name, frozenset(accepts), frozenset(devices), loader, summary, extra,
                              options, validate)
        )
        return loader

    return decorator


def check_options(target: TargetConfig, allowed: tuple[str, ...]) -> None:
    from compress.errors import RecipeError

    unknown = set(target.options) - set(allowed)
    if unknown:
        raise RecipeError(
            f"targets.{target.name}.options: unknown option(s) {sorted(unknown)} for runtime "
            f"{target.runtime!r}; valid: {', '.join(allowed) or '(none)'}"
        )
