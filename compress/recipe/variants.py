"""A variant: a chain of registered steps, each entry validated against the step registry as it is
when a recipe loads (a step registered after this module was imported counts too)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    create_model,
    field_validator,
)
from pydantic_core import core_schema

from compress.steps.base import STEPS, StepConfig


def _step_union():
    """A tagged union of ``{step_name: StepConfig}`` entries, built from the step registry."""
    members = []
    for name, spec in STEPS.items():
        entry = create_model(
            f"{name.title().replace('_', '')}Step",
            __config__=ConfigDict(extra="forbid"),
            **{name: (spec.config, Field(default_factory=spec.config))},
        )
        members.append(Annotated[entry, Tag(name)])

    def tag(value: Any) -> str | None:
        if isinstance(value, dict):
            keys = list(value)
            return keys[0] if len(keys) == 1 and keys[0] in STEPS else None
        if isinstance(value, str) and value in STEPS:  # "- export" with all defaults
            return value
        for name in STEPS:
            if isinstance(value, BaseModel) and hasattr(value, name):
                return name
        return None

    return Annotated[
        Union[tuple(members)],  # noqa: UP007
        Discriminator(
            tag,
            custom_error_type="unknown_step",
            custom_error_message="each step is one key naming the step; valid steps: "
            + ", ".join(STEPS.names()),
        ),
    ]


_UNIONS: dict[tuple, TypeAdapter] = {}


def _step_adapter() -> TypeAdapter:
    """The union of the steps registered now (a step registered after this module was imported
    counts too), built once per set of steps and their configs."""
    key = tuple((name, spec.config) for name, spec in STEPS.items())
    if key not in _UNIONS:
        _UNIONS[key] = TypeAdapter(_step_union())
    return _UNIONS[key]


class _Step:
    """One entry of ``steps``: validated against the step registry at validation time."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source, _handler):
        return core_schema.no_info_plain_validator_function(
            lambda value: _step_adapter().validate_python(value),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda entry, info: entry.model_dump(mode=info.mode), info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, _core, handler):
        return handler(_step_adapter().core_schema)


StepEntry = _Step


class VariantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(None, alias="from", description="Start from another variant's result")
    steps: list[StepEntry] = Field(default_factory=list)
    description: str | None = None
    gate: bool = Field(True, description="false: measured and reported, but never fails the run")
    targets: list[str] | None = Field(None, description="Profile only on these targets (default: every target that can run it)")

    @field_validator("steps", mode="before")
    @classmethod
    def _bare_names(cls, v):
        if isinstance(v, list):
            return [{s: {}} if isinstance(s, str) else s for s in v]
        return v

    def step_list(self) -> list[tuple[str, StepConfig]]:
        out = []
        for entry in self.steps:
            (name,) = type(entry).model_fields
            out.append((name, getattr(entry, name)))
        return out
