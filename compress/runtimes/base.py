"""The runtime interface: load an artifact for a target, then run batches of named inputs. Nothing else.

The evaluator and the profiler both go through a ``Session``, so every number is measured on the
artifact that would be deployed, with the runtime that would run it.

A runtime registers what it needs, so that a recipe is checked before anything is built: the
artifact kinds it runs, the devices it supports, a typed options model (``targets[].options``:
unknown keys and values outside the choices are refused when the recipe loads), a ``check`` of the
options against the rest of the target, and the modules the memory probe imports before measuring.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from compress.registry import Registry

if TYPE_CHECKING:
    from compress.artifacts import Artifact
    from compress.runtimes.target import TargetConfig


class Session(ABC):
    """A loaded model. ``run`` takes a batch of named inputs (name -> array, e.g. ``pixel_values``
    float32 NCHW; see ``compress.sources.inputs``) and returns float32 logits [N, classes]."""

    #: what actually runs (providers, precision read back from the runtime), for the report
    info: dict[str, Any]

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Free what the session holds."""


class RuntimeOptions(BaseModel):
    """Base of every runtime's options model: unknown keys are errors. A runtime without settings
    uses it as is."""

    model_config = ConfigDict(extra="forbid")


Check = Callable[["TargetConfig", Any], None]


@dataclass(frozen=True)
class RuntimeSpec:
    """What a runtime is and what it needs, declared at registration.

    - ``accepts``: the artifact kinds it runs; ``devices``: the target devices it runs on;
    - ``options``: the pydantic model of ``targets[].options`` (extra keys forbidden);
    - ``check(target, options)``: rules between the options and the rest of the target (e.g. an
      execution provider and the device); raises ValueError whose message starts with the option's
      name and ends with the fix;
    - ``imports``: modules the memory probe imports before it measures, so that the library's own
      footprint is not counted as the model's;
    - ``extra``: the pip extra that installs it, when optional.
    """

    name: str
    accepts: frozenset[str]
    devices: frozenset[str]
    loader: Any  # callable(artifact, target) -> Session
    summary: str = ""
    extra: str | None = None
    options: type[RuntimeOptions] = RuntimeOptions
    check: Check | None = None
    imports: tuple[str, ...] = field(default_factory=tuple)
    example: dict = field(default_factory=dict)  # valid options, for the conformance tests

    def load(self, artifact: Artifact, target: TargetConfig) -> Session:
        return self.loader(artifact, target)


RUNTIMES: Registry[RuntimeSpec] = Registry("runtime")


def register_runtime(name: str, *, accepts: set[str], devices: set[str], summary: str,
                     extra: str | None = None, options: type[RuntimeOptions] = RuntimeOptions,
                     check: Check | None = None, imports: tuple[str, ...] = (),
                     example: dict | None = None):
    """Register ``loader(artifact, target) -> Session`` as runtime ``name`` (see ``RuntimeSpec``)."""

    def decorator(loader):
        RUNTIMES.add(name, RuntimeSpec(name, frozenset(accepts), frozenset(devices), loader, summary,
                                       extra, options, check, tuple(imports), dict(example or {})))
        return loader

    return decorator


def option_problems(err: ValidationError, runtime: str, model: type[RuntimeOptions]) -> list[tuple[str, str]]:
    """(key, message) for each problem of a runtime's options, in the recipe's words."""
    out: list[tuple[str, str]] = []
    unknown = [str(e["loc"][0]) for e in err.errors() if e["type"] == "extra_forbidden" and e["loc"]]
    if unknown:
        out.append(("", f"unknown option(s) {sorted(unknown)} for runtime {runtime!r}; valid: "
                        f"{', '.join(model.model_fields) or '(none)'}"))
    for e in err.errors():
        if e["type"] == "extra_forbidden":
            continue
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "literal_error":
            valid = str(e.get("ctx", {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
            what = str(e["loc"][-1]).replace("_", " ") if e["loc"] else "value"
            out.append((key, f"unknown {what} {e['input']!r}; valid: {valid}"))
        else:
            out.append((key, e["msg"].removeprefix("Value error, ")))
    return out


def target_options(target: TargetConfig) -> Any:
    """The target's options as its runtime's typed model, checked against the target; a target
    built in code without validation gets the same checks (RecipeError naming the key)."""
    from compress.errors import RecipeError

    spec = RUNTIMES.get(target.runtime)
    where = f"targets.{target.name}.options"
    opts = target.options
    if not isinstance(opts, spec.options):
        try:
            opts = spec.options.model_validate(opts or {})
        except ValidationError as err:
            problems = [f"{where}{'.' + k if k else ''}: {m}" for k, m in option_problems(err, spec.name, spec.options)]
            raise RecipeError("; ".join(problems), problems) from None
    if spec.check is not None:
        try:
            spec.check(target, opts)
        except ValueError as err:
            raise RecipeError(f"{where}: {err}") from None
    return opts
