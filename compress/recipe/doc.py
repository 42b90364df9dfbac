"""Generate docs/recipe.md from the recipe schema, so the reference never drifts from the code.

Run ``python -m compress.recipe.doc > docs/recipe.md``; a test fails when the file is stale.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from compress.recipe import Recipe, StepEntry
from compress.runtimes.base import RUNTIMES
from compress.sources.data import DATA_SCHEMES
from compress.sources.models import MODEL_SCHEMES
from compress.steps.base import STEPS


def _type_name(tp) -> str:
    if tp is StepEntry:
        return "step (see Steps below)"
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple and typing.get_args(tp)[-1:] == (Ellipsis,):
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]"
    if tp is type(None):
        return "null"
    if tp is typing.Any:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.__name__
    return getattr(tp, "__name__", str(tp))


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        return f"`{field.default!r}`" if field.default is not None else "`null`"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(default)"
        if isinstance(value, BaseModel):
            return "(defaults)"
        return f"`{value!r}`"
    return "**required**"


def _models_in(tp, out: list) -> None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp not in out:
            out.append(tp)
            for f in tp.model_fields.values():
                _models_in(f.annotation, out)
        return
    for a in typing.get_args(tp):
        _models_in(a, out)


def model_table(model: type[BaseModel], title: str) -> str:
    lines = [f"### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        key = f.alias or name
        desc = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{key}` | {_type_name(f.annotation)} | {_default(f)} | {desc} |")
    return "\n".join(lines)


def render() -> str:
    parts = [
        "# Recipe reference",
        "",
        "Generated from the code by `python -m compress.recipe.doc > docs/recipe.md`; do not edit by hand.",
        "Every mapping rejects unknown keys. `compress validate RECIPE` checks a recipe, "
        "`compress schema` prints the JSON Schema.",
        "",
        "Model sources: " + ", ".join(f"`{k}:{v}`" for k, v in MODEL_SCHEMES.items())
        + ". Data sources: " + ", ".join(f"`{k}:{v}`" for k, v in DATA_SCHEMES.items()) + ".",
        "`python:` sources import and run your code.",
        "",
        "Runtimes: " + ", ".join(f"`{n}` ({s.summary}; runs {', '.join(sorted(s.accepts))})" for n, s in RUNTIMES.items()) + ".",
        "Each runtime's `targets[].options` are listed under Runtimes below.",
        "",
        "## Top level and sections",
        "",
    ]
    models: list = []
    _models_in(Recipe, models)
    for m in models:
        parts += [model_table(m, m.__name__), ""]
    parts += ["## Steps", "", "A variant's `steps` is a list of one-key mappings: `- NAME: {config}`.", ""]
    for name, spec in STEPS.items():
        parts.append(f"### `{name}`\n\n{spec.summary} Accepts: {', '.join(sorted(spec.accepts))} models.\n")
        sub: list = []
        _models_in(spec.config, sub)
        for m in sub:
            parts += [model_table(m, m.__name__ if m is not spec.config else f"{name} config"), ""]
    parts += ["## Runtimes", "", "A target's `options` are checked against its runtime's options when the "
              "recipe loads: unknown keys and values outside the choices are errors.", ""]
    for name, spec in RUNTIMES.items():
        devices = ", ".join(sorted(spec.devices))
        parts.append(f"### `{name}`\n\n{spec.summary}. Runs {', '.join(sorted(spec.accepts))} models on "
                     f"device {devices}" + (f"; install with the `{spec.extra}` extra" if spec.extra else "") + ".\n")
        if spec.options.model_fields:
            parts += [model_table(spec.options, f"{name} options"), ""]
        else:
            parts += ["No options.", ""]
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
