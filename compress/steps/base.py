"""The step interface: a pydantic config whose fields are the YAML keys, plus one transformation.

A step takes one artifact and returns a new one; it never edits its input. Steps register here and
the recipe validates each entry against the registered config when it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from compress.registry import Registry

if TYPE_CHECKING:
    from compress.artifacts import Artifact
    from compress.sources.data import Splits
    from compress.sources.inputs import InputSpec
    from compress.sources.models import ModelSpec


class StepConfig(BaseModel):
    """Base of every step config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(kw_only=True)
class StepContext:
    """What a step may use besides its input artifact. Data comes by role, so a step can only
    consume the splits it is meant to (train, calibration, tuning), never held-out. ``input_spec``
    names the model's inputs; ``input_shape=`` (one image sample's shape) is accepted in its place."""

    splits: Splits
    model_spec: ModelSpec | None
    input_spec: InputSpec | None = None
    input_shape: InitVar[tuple[int, ...] | None] = None
    seed: int
    workdir: Path
    baseline: Artifact | None = None
    progress: Any = None
    log: Callable[[str], None] = print
    consumed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    targets: list[Any] = field(default_factory=list)  # the recipe's targets (e.g. for a latency budget)

    def __post_init__(self, input_shape):
        from compress.sources.inputs import InputSpec

        if (self.input_spec is None) == (input_shape is None):
            raise TypeError("StepContext takes input_spec (an InputSpec) or input_shape (an image "
                            "sample's shape), exactly one")
        if self.input_spec is None:
            self.input_spec = InputSpec.image(input_shape)

    def target(self, name: str):
        """The recipe target called ``name``; a clear error names the valid ones."""
        for t in self.targets:
            if t.name == name:
                return t
        from compress.errors import StepError

        raise StepError(
            f"no target named {name!r} in the recipe; valid: {', '.join(t.name for t in self.targets) or '(none)'}"
        )

    def data(self, role: str):
        """The split of that role; records that this variant consumed it (held-out is refused)."""
        if role not in STEP_ROLES:
            raise ValueError(
                f"steps may use the {', '.join(STEP_ROLES)} splits, never {role!r}: held-out judges "
                "the variants, drift and production data check them"
            )
        if role not in self.splits:
            from compress.errors import StepError

            raise StepError(
                f"this step needs the {role} split, and the data has none; set data.split.{role} "
                f"(or data.sources.{role}); `compress validate` finds this before building"
            )
        self.consumed.add(role)
        return self.splits[role]


def _no_input_shape(self):
    raise AttributeError("StepContext.input_shape is gone: use ctx.input_spec (an InputSpec: "
                         "example inputs, names, dynamic axes; sample_shape for images)")


# the init keyword stays for callers that give an image shape; reading it back is an error, not None
StepContext.input_shape = property(_no_input_shape)

#: the only splits a step may consume
STEP_ROLES = ("train", "calibration", "tuning")

Apply = Callable[["Artifact", Any, StepContext], "Artifact"]


#: the data roles a config needs: a set, or role -> why ("importance taylor scores channels", or
#: "KEY: why" to point at the config key that asks for it), which the recipe's message quotes
Roles = Callable[[Any], "set[str] | frozenset[str] | dict[str, str]"]


@dataclass(frozen=True)
class StepSpec:
    """What a step is and what it needs, declared at registration so that the recipe's rules are
    generic loops over these declarations (no central list of step fields).

    - ``roles(cfg)``: the data roles the step consumes with that config (train, calibration, tuning),
      as a set or as role -> why (see ``Roles``); a recipe whose data lacks one is invalid;
    - ``targets(cfg)``: the recipe target names its config refers to, as a set or as
      config key -> name (``{"latency_budget.target": "cpu"}``), so the message names the key;
    - ``check(cfg, recipe)``: any other problem with the rest of the recipe, as messages without the
      key path (the caller prefixes ``variants.<name>.steps[<i>].<step>``);
    - ``check_input(cfg, kind)``: a problem (or None) when the step with this config cannot take an
      input of that kind although ``accepts`` lists it (e.g. quantize with backend onnxruntime on an
      OpenVINO IR);
    - ``cache_key(cfg, ctx)``: what, besides the input artifact, the config, the seed, the data and
      compress's code, decides the artifact (e.g. the GPU a TensorRT engine is built for); computed
      before the step runs, it is part of the one cache key;
    - ``example``: a valid config, for the conformance tests of plug-ins whose config has required fields.
    """

    name: str
    config: type[StepConfig]
    accepts: frozenset[str]
    produces: Callable[[Any, str], str]
    apply: Apply
    summary: str
    roles: Roles = lambda _cfg: frozenset()  # noqa: E731
    targets: Callable[[Any], set[str] | frozenset[str] | dict[str, str]] = lambda _cfg: frozenset()  # noqa: E731
    check: Callable[[Any, Any], list[str]] | None = None
    cache_key: Callable[[Any, StepContext], Any] | None = None
    example: dict = field(default_factory=dict)
    check_input: Callable[[Any, str], str | None] | None = None


STEPS: Registry[StepSpec] = Registry("step")


def register_step(
    name: str,
    *,
    config: type[StepConfig],
    accepts: set[str],
    produces: str | Callable[[Any, str], str] | None = None,
    roles: set[str] | dict[str, str] | Roles | None = None,
    targets: Callable[[Any], set[str]] | None = None,
    check: Callable[[Any, Any], list[str]] | None = None,
    cache_key: Callable[[Any, StepContext], Any] | None = None,
    example: dict | None = None,
    check_input: Callable[[Any, str], str | None] | None = None,
) -> Callable[[Apply], Apply]:
    """Register ``apply(artifact, config, ctx) -> artifact`` as step ``name``.

    ``produces`` is the artifact kind the step returns: a constant, a function of (config, input
    kind), or None for "same kind as its input". ``roles`` is a constant set of data roles or a
    function of the config; see ``StepSpec`` for the rest.
    """

    if produces is None:

        def produced(_cfg, kind):
            return kind
    elif isinstance(produces, str):
        const = produces

        def produced(_cfg, _kind):
            return const
    else:
        produced = produces

    if roles is None:
        role_fn: Roles = lambda _cfg: frozenset()  # noqa: E731
    elif callable(roles):
        role_fn = roles
    else:
        fixed = dict(roles) if isinstance(roles, dict) else frozenset(roles)
        role_fn = lambda _cfg: fixed  # noqa: E731

    def decorator(fn: Apply) -> Apply:
        doc = (fn.__doc__ or "").strip().splitlines()
        STEPS.add(
            name,
            StepSpec(name, config, frozenset(accepts), produced, fn, doc[0] if doc else name,
                     roles=role_fn, targets=targets or (lambda _cfg: frozenset()), check=check,
                     cache_key=cache_key, example=dict(example or {}), check_input=check_input),
        )
        return fn

    return decorator
