"""The `search:` section of a recipe: which step and target options vary, what is minimised under
the gate, for how long, and at which fidelity trials are screened first.

A space key names an option the way the recipe spells it: ``prune.ratio``, ``prune.finetune.epochs``,
``quantize.calibration.method`` (a step of the starting chain, then its fields), ``target`` (which
recipe target runs the variant) or ``targets.NAME.options.OPTION`` (that target's runtime option,
sampled only when NAME is chosen). ``check_search`` validates every bound and choice against the
step's (or runtime's) own pydantic config before a study starts, so a bad space is an exit-2 error
naming its key.
"""

from __future__ import annotations

import copy
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.steps.base import STEPS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dimension(_Strict):
    """One searched option: ``choices: [...]``, or ``low``/``high`` (ints sample ints) with an
    optional ``step`` and ``log`` scale."""

    choices: list[Any] | None = Field(None, description="The values tried (any YAML values)")
    low: int | float | None = Field(None, description="Smallest value (with high)")
    high: int | float | None = Field(None, description="Largest value (with low)")
    step: int | float | None = Field(None, gt=0, description="Grid step between low and high")
    log: bool = Field(False, description="Sample on a log scale (low must be > 0)")

    @model_validator(mode="after")
    def _shape(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("empty choices: give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs `choices: [...]` or both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"empty range: low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (self.low, self.high, *([self.step] if self.step is not None else [])))

    @property
    def size(self) -> int | None:
        """How many distinct values can be drawn: the choices, or the points of an int range or a
        stepped grid; None for a continuous range."""
        if self.choices is not None:
            return len({json.dumps(c, sort_keys=True, default=str) for c in self.choices})
        if self.is_int:
            return (self.high - self.low) // (self.step or 1) + 1
        if self.step is not None:
            return int((self.high - self.low) / self.step + 1e-9) + 1
        return None

    def corners(self) -> list[Any]:
        """The values that bound this dimension: every choice, or low and high."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial, name: str) -> Any:
        """Sample with an Optuna trial; non-scalar choices (mappings, lists) are sampled by index."""
        if self.choices is not None:
            if all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices):
                return trial.suggest_categorical(name, self.choices)
            return self.choices[trial.suggest_categorical(name, list(range(len(self.choices))))]
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        value = trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)
        return round(value, 12)  # a grid step's float error (0.6000000000000001) stays out of configs

    def param_value(self, value: Any) -> Any:
        """What Optuna stores for ``value`` (the index of a non-scalar choice)."""
        if self.choices is not None and not all(
                c is None or isinstance(c, (bool, int, float, str)) for c in self.choices):
            return self.choices.index(value)
        return value


class ObjectiveConfig(_Strict):
    metric: Literal["usd_per_1m", "latency_ms_p50"] = Field(
        "usd_per_1m", description="Minimised: $ per 1M inferences (the target needs usd_per_hour), or p50 latency"
    )
    target: str | None = Field(
        None, description="Target it is measured on when `target` is not searched; default: the first "
        "of the starting variant's targets that can run it"
    )
    batch_size: int = Field(32, ge=1, description="Batch size of the objective and of the speed-up constraint")


class BudgetConfig(_Strict):
    trials: int | None = Field(None, description="Trials in all (across --resume): measured, screened out or "
                               "failed; a draw of options already tried is free and not counted, and the "
                               "search stops early when the space has nothing new")
    minutes: float | None = Field(None, description="Wall minutes of this invocation; no trial starts after")

    @field_validator("trials", "minutes")
    @classmethod
    def _positive(cls, v, info):
        if v is not None and v <= 0:
            raise ValueError(f"a budget of {v:g} {info.field_name} runs nothing; give {info.field_name} > 0")
        return v

    @model_validator(mode="after")
    def _one(self):
        if self.trials is None and self.minutes is None:
            raise ValueError("give trials and/or minutes, e.g. {trials: 20, minutes: 30}")
        return self


class FidelityConfig(_Strict):
    tuning_samples: int | None = Field(
        None, ge=1, description="First stage: top-1 on this many tuning samples (seeded); default all"
    )
    finetune_epochs: int | None = Field(
        None, ge=1, description="First stage: every finetune.epochs capped at this; default uncapped"
    )
    promote_margin_points: float = Field(
        1.0, ge=0, description="Go on to full fidelity (and timing) when the first stage's tuning drop "
        "is within gate.max_accuracy_drop plus this"
    )


class SearchConfig(_Strict):
    start: str = Field(description="The variant whose chain (with its `from:` parents) is varied; "
                       "it is also the first trial")
    space: dict[str, Dimension] = Field(description="Option key -> choices or range (see docs/search.md)")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig,
                                       description="What is minimised, on which target, at which batch size")
    budget: BudgetConfig = Field(description="When to stop: trials and/or minutes")
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig,
                                     description="The cheap first stage that screens each trial")
    front_size: int = Field(3, ge=1, description="Pareto members (cheapest first) measured on held-out")
    sampler: Literal["tpe", "nsga2", "random"] = Field("tpe", description="Optuna sampler (seeded by `seed`)")
    timing_rounds: int = Field(3, ge=1, description="Interleaved rounds timing a trial against the reference")

    @field_validator("space")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("an empty space searches nothing: give at least one option key")
        return v


# --------------------------------------------------------------------------- the chain and its options


def start_chain(recipe, name: str) -> list[tuple[str, dict]]:
    """The steps of variant ``name`` with its `from:` parents first, as (step, config as given)."""
    steps: list[tuple[str, dict]] = []
    cur = name
    while cur is not None:
        v = recipe.variants[cur]
        steps = [(s, c.model_dump(mode="json", exclude_unset=True)) for s, c in v.step_list()] + steps
        cur = v.from_
    return steps


def _model_of(annotation) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``FinetuneConfig | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _check_fields(model: type[BaseModel], path: list[str], what: str) -> str | None:
    for i, part in enumerate(path):
        if part not in model.model_fields:
            return f"unknown option {part!r} of {what}; valid: {', '.join(model.model_fields)}"
        if i < len(path) - 1:
            inner = _model_of(model.model_fields[part].annotation)
            if inner is None:
                return f"{part!r} of {what} has no options below it"
            model, what = inner, f"{what}.{part}"
    return None


def set_option(config: dict, path: list[str], value: Any) -> dict:
    """A copy of ``config`` with ``path`` set (missing sections are created)."""
    out = copy.deepcopy(config)
    node = out
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return out


def _errors(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: "
                     f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())


def step_index(chain: list[tuple[str, dict]], step: str) -> int | str:
    """Where ``step`` is in the chain, or why it cannot be searched."""
    found = [i for i, (s, _) in enumerate(chain) if s == step]
    if len(found) == 1:
        return found[0]
    if not found:
        return (f"the starting chain has no {step!r} step (it has: {', '.join(s for s, _ in chain) or 'none'}); "
                f"space keys are STEP.OPTION, `target` or targets.NAME.options.OPTION")
    return f"step {step!r} appears {len(found)} times in the starting chain; a searched step must be unique"


def check_search(recipe) -> list[str]:
    """Every problem of ``recipe.search`` (None: none), each starting with its key path. Each bound
    and choice is validated against the step's or runtime's own config model."""
    from compress.runtimes.target import TargetConfig

    s = recipe.search
    if s is None:
        return []
    problems = []
    if "tuning" not in recipe.data.roles():
        problems.append("data.split.tuning: search scores trials on the tuning split (never held-out); "
                        "carve one from train, e.g. split: {train: 0.5, calibration: 0.1, tuning: 0.1, heldout: 0.3}")
    if s.start not in recipe.variants:
        return problems + [f"search.start: unknown variant {s.start!r}; valid: {', '.join(recipe.variants)}"]
    chain = start_chain(recipe, s.start)
    targets = {t.name: t for t in recipe.targets}
    if s.objective.target is not None and s.objective.target not in targets:
        problems.append(f"search.objective.target: unknown target {s.objective.target!r}; valid: {', '.join(targets)}")
    searched = s.space["target"].corners() if "target" in s.space else [default_target(recipe)]
    if s.objective.metric == "usd_per_1m":
        for t in searched:
            if t in targets and targets[t].usd_per_hour is None:
                problems.append(f"search.objective: target {t!r} has no usd_per_hour, so $ per 1M cannot be "
                                "measured; price it, or use metric: latency_ms_p50")
    if recipe.gate.reference != "baseline" and recipe.gate.reference not in recipe.variants:
        problems.append(f"gate.reference: {recipe.gate.reference!r} is not a variant; the search times trials against it")
    for key, dim in s.space.items():
        where = f"search.space.{key}"
        parts = key.split(".")
        if key == "target":
            bad = [c for c in dim.corners() if c not in targets]
            if bad or dim.choices is None:
                problems.append(f"{where}: choices must be target names; unknown {bad or 'range'}; valid: {', '.join(targets)}")
            continue
        if parts[0] == "targets":
            if len(parts) < 4 or parts[2] != "options" or parts[1] not in targets:
                problems.append(f"{where}: a target option key is targets.NAME.options.OPTION with NAME one of "
                                f"{', '.join(targets)}")
                continue
            t = targets[parts[1]]
            given = t.model_dump(mode="json")
            for value in dim.corners():
                try:
                    TargetConfig.model_validate({**given, "options": set_option(given["options"], parts[3:], value)})
                except ValidationError as err:
                    problems.append(f"{where}: value {value!r} is invalid for target {t.name}: {_errors(err)}")
                    break
            continue
        idx = step_index(chain, parts[0])
        if isinstance(idx, str):
            problems.append(f"{where}: {idx}")
            continue
        if len(parts) < 2:
            problems.append(f"{where}: name an option of the {parts[0]} step, e.g. {parts[0]}.OPTION")
            continue
        spec = STEPS.get(parts[0])
        unknown = _check_fields(spec.config, parts[1:], f"step {parts[0]}")
        if unknown:
            problems.append(f"{where}: {unknown}")
            continue
        for value in dim.corners():
            try:
                spec.config.model_validate(set_option(chain[idx][1], parts[1:], value))
            except ValidationError as err:
                problems.append(f"{where}: value {value!r} is invalid for step {parts[0]}: {_errors(err)}")
                break
    return problems


# --------------------------------------------------------------------------- one sampled candidate


@dataclass
class Candidate:
    """A sampled point: the full chain of steps and the target that runs it."""

    steps: list[tuple[str, dict]]
    target: dict  # a recipe target as a mapping (options possibly changed)
    params: dict[str, Any] = field(default_factory=dict)


def default_target(recipe) -> str:
    s = recipe.search
    if s.objective.target is not None:
        return s.objective.target
    wanted = recipe.variants[s.start].targets
    cur = recipe.variants[s.start]
    while wanted is None and cur.from_ is not None:
        cur = recipe.variants[cur.from_]
        wanted = cur.targets
    kind = recipe.final_kinds()[s.start]
    from compress.runtimes.base import RUNTIMES

    for t in recipe.targets:
        if (wanted is None or t.name in wanted) and kind in RUNTIMES.get(t.runtime).accepts:
            return t.name
    return recipe.targets[0].name


def apply_params(recipe, params: dict[str, Any]) -> Candidate:
    """The candidate that ``params`` (space key -> value; missing keys keep the start's value) make."""
    s = recipe.search
    chain = start_chain(recipe, s.start)
    target_name = params.get("target", default_target(recipe))
    target = next(t for t in recipe.targets if t.name == target_name).model_dump(mode="json")
    for key, value in params.items():
        parts = key.split(".")
        if key == "target":
            continue
        if parts[0] == "targets":
            if parts[1] == target_name:
                target["options"] = set_option(target["options"], parts[3:], value)
            continue
        idx = step_index(chain, parts[0])
        chain[idx] = (parts[0], set_option(chain[idx][1], parts[1:], value))
    return Candidate(chain, target, dict(params))


def sample(recipe, trial) -> Candidate:
    """Sample every dimension with an Optuna trial; a target's options only when it is chosen."""
    s = recipe.search
    params: dict[str, Any] = {}
    if "target" in s.space:
        params["target"] = s.space["target"].suggest(trial, "target")
    chosen = params.get("target", default_target(recipe))
    for key, dim in s.space.items():
        parts = key.split(".")
        if key == "target" or (parts[0] == "targets" and parts[1] != chosen):
            continue
        params[key] = dim.suggest(trial, key)
    return apply_params(recipe, params)


def space_size(recipe) -> int | None:
    """How many distinct option sets the space holds (a target's options count only under that
    target, as they are sampled), or None when a dimension is continuous."""
    s = recipe.search

    def product(keys) -> int | None:
        n = 1
        for key in keys:
            size = s.space[key].size
            if size is None:
                return None
            n *= size
        return n

    common = [k for k in s.space if k != "target" and not k.startswith("targets.")]
    base = product(common)
    if base is None:
        return None
    per_target = {}
    names = s.space["target"].choices if "target" in s.space else [default_target(recipe)]
    for name in dict.fromkeys(names):
        n = product([k for k in s.space if k.startswith(f"targets.{name}.")])
        if n is None:
            return None
        per_target[name] = n
    return base * sum(per_target.values())


def start_params(recipe) -> dict[str, Any] | None:
    """The starting variant's own values of every searched option, when all lie in the space (then it is
    enqueued as the first trial, so the result is never worse than the hand-written start)."""
    s = recipe.search
    chain = start_chain(recipe, s.start)
    target_name = default_target(recipe)
    target = next(t for t in recipe.targets if t.name == target_name).model_dump(mode="json")
    out: dict[str, Any] = {}
    for key, dim in s.space.items():
        parts = key.split(".")
        if key == "target":
            value = target_name
        elif parts[0] == "targets":
            if parts[1] != target_name:
                continue
            value = _get(target["options"], parts[3:])
        else:
            idx = step_index(chain, parts[0])
            spec = STEPS.get(parts[0])
            value = _get(spec.config.model_validate(chain[idx][1]).model_dump(mode="json"), parts[1:])
        if value is None or not dim.contains(value):
            return None
        out[key] = dim.param_value(value)
    return out


def _get(config: dict | None, path: list[str]) -> Any:
    node: Any = config
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
