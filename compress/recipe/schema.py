"""The recipe: a pydantic schema of the YAML file, and the rules between its parts.

Every model forbids unknown keys, so a typo fails at load time with its key path. Rules that span
several keys (step order, which target can run which variant, disjoint splits) are checked in
``Recipe.check_rules`` after the per-field validation, and every problem is reported at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

import compress.runtimes  # noqa: F401  (registers the runtimes)
import compress.steps  # noqa: F401  (registers the steps)
from compress.errors import InputError, RecipeError
from compress.runtimes.base import RUNTIMES
from compress.sources.data import DATA_SCHEMES
from compress.sources.models import MODEL_SCHEMES
from compress.steps.base import STEPS, StepConfig

_KIND_NAMES = {"torch": "a torch", "onnx": "an ONNX", "openvino": "an OpenVINO IR", "tensorrt": "a TensorRT"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_source(value: str, schemes: dict[str, str], what: str) -> str:
    scheme, sep, rest = value.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"{what} source {value!r} must look like SCHEME:VALUE; valid schemes: "
            + ", ".join(f"{k}:{v}" for k, v in schemes.items())
        )
    if scheme not in schemes:
        raise ValueError(
            f"unknown {what} source scheme {scheme!r}; valid schemes: "
            + ", ".join(f"{k}:{v}" for k, v in schemes.items())
        )
    return value


# --------------------------------------------------------------------------- model


class CheckpointConfig(Strict):
    path: Path
    key: str | None = Field(None, description="Key of the state_dict inside the file, e.g. state_dict")
    strip_prefix: str | None = Field(None, description="Prefix removed from every key, e.g. 'module.'")


class ModelConfig(Strict):
    source: str = Field(
        description="torchvision:NAME | python:MODULE_OR_FILE.py:FACTORY (runs your code) | onnx:PATH"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Arguments of the factory")
    checkpoint: Path | CheckpointConfig | None = Field(
        None, description="A state_dict file, loaded with torch.load(weights_only=True)"
    )
    input_shape: tuple[int, ...] = Field(description="One sample's shape, e.g. [3, 32, 32]")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _check_source(v, MODEL_SCHEMES, "model")

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(d <= 0 for d in v):
            raise ValueError(f"input_shape must be positive sizes such as [3, 32, 32], got {list(v)}")
        return v

    @property
    def checkpoint_config(self) -> CheckpointConfig | None:
        if self.checkpoint is None or isinstance(self.checkpoint, CheckpointConfig):
            return self.checkpoint
        return CheckpointConfig(path=self.checkpoint)


# --------------------------------------------------------------------------- data


class TransformConfig(Strict):
    resize: int | tuple[int, int] | None = Field(None, description="Output size (square or [H, W])")
    channels: Literal[1, 3] | None = Field(None, description="Convert to 1 or 3 channels")
    normalize: tuple[list[float], list[float]] | None = Field(
        None, description="[mean, std], per channel or one value for all"
    )

    @field_validator("normalize")
    @classmethod
    def _normalize(cls, v):
        if v is not None:
            mean, std = v
            if len(mean) != len(std) or not mean:
                raise ValueError("normalize needs [mean, std] lists of the same, non-zero length")
            if any(s <= 0 for s in std):
                raise ValueError("normalize std values must be > 0")
        return v


SPLIT_ROLES = ("train", "calibration", "tuning", "heldout")


class SplitConfig(Strict):
    """Fractions of one source; disjoint, stratified by label, seeded."""

    train: float = 0.6
    calibration: float = 0.1
    tuning: float = 0.0
    heldout: float = 0.3

    @model_validator(mode="after")
    def _fractions(self):
        values = {r: getattr(self, r) for r in SPLIT_ROLES}
        for role, f in values.items():
            if not 0 <= f < 1:
                raise ValueError(f"split.{role} must be a fraction in [0, 1), got {f}")
        if self.heldout <= 0:
            raise ValueError("split.heldout must be > 0: variants are judged on held-out data")
        total = sum(values.values())
        if total > 1 + 1e-9:
            raise ValueError(f"split fractions add up to {total:g} > 1; they must not overlap")
        return self


class DriftConfig(Strict):
    source: str | None = Field(None, description="Labelled newer data, e.g. npz:new.npz")
    corruption: str | None = Field(None, description="Synthetic shift: gaussian_noise, gaussian_blur, jpeg, brightness, contrast")
    severity: int = Field(2, ge=1, le=5)

    @model_validator(mode="after")
    def _one(self):
        if (self.source is None) == (self.corruption is None):
            raise ValueError("drift needs exactly one of 'source' or 'corruption'")
        if self.source is not None:
            _check_source(self.source, DATA_SCHEMES, "data")
        return self


class ProductionConfig(Strict):
    source: str = Field(description="Unlabelled (or labelled, labels unused) sample, e.g. npz:prod.npz")

    @field_validator("source")
    @classmethod
    def _source(cls, v):
        return _check_source(v, DATA_SCHEMES, "data")


class DataConfig(Strict):
    source: str | None = Field(None, description="One source split by `split`: sklearn:digits | imagefolder:DIR | npz:FILE | python:MODULE:FN")
    sources: dict[Literal["train", "calibration", "tuning", "heldout"], str] | None = Field(
        None, description="Or one source per role, already separate (e.g. newer data as held-out)"
    )
    transform: TransformConfig = Field(default_factory=TransformConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    drift: DriftConfig | None = None
    production: ProductionConfig | None = Field(
        None, description="Unlabelled recent inputs: shift of predictions against held-out"
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v):
        return v if v is None else _check_source(v, DATA_SCHEMES, "data")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v):
        for s in (v or {}).values():
            _check_source(s, DATA_SCHEMES, "data")
        return v

    @model_validator(mode="after")
    def _one(self):
        if (self.source is None) == (self.sources is None):
            raise ValueError("data needs exactly one of 'source' (split by fractions) or 'sources' (one per role)")
        if self.sources is not None and "heldout" not in self.sources:
            raise ValueError("data.sources needs a 'heldout' source: variants are judged on it")
        return self


# --------------------------------------------------------------------------- training


class TrainConfig(Strict):
    epochs: int = Field(4, ge=1)
    lr: float = Field(0.02, gt=0)
    batch_size: int = Field(32, ge=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)


class BaselineConfig(Strict):
    train: TrainConfig | None = Field(None, description="Train the baseline when there is no checkpoint")


# --------------------------------------------------------------------------- variants


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


StepEntry = _step_union()


class VariantConfig(Strict):
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


# --------------------------------------------------------------------------- targets, profile, gate


class TargetConfig(Strict):
    name: str
    runtime: str
    device: Literal["cpu", "cuda", "gpu", "npu"] = Field(
        "cpu", description="cpu; cuda (NVIDIA, torch/onnxruntime); gpu or npu (Intel, openvino)"
    )
    threads: int | None = Field(None, ge=1, description="Intra-op threads; default: all cores")
    usd_per_hour: float | None = Field(None, ge=0, description="Price of the machine serving the model")
    instance: str | None = Field(
        None, description="Cloud instance type from the built-in price table (e.g. c7i.large); "
        "sets usd_per_hour unless that is given"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Runtime-specific settings")

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v):
        if v not in RUNTIMES:
            raise ValueError(f"unknown runtime {v!r}; valid runtimes: {', '.join(RUNTIMES.names())}")
        return v

    @model_validator(mode="after")
    def _device(self):
        spec = RUNTIMES.get(self.runtime)
        if self.device not in spec.devices:
            raise ValueError(
                f"runtime {self.runtime!r} cannot run on device {self.device!r}; "
                f"its devices: {', '.join(sorted(spec.devices))}"
            )
        return self

    @model_validator(mode="after")
    def _options_and_price(self):
        spec = RUNTIMES.get(self.runtime)
        # every runtime rejects an unknown option (names from its registration); its own hook
        # then checks the values
        unknown = set(self.options) - set(spec.options)
        if unknown:
            raise ValueError(
                f"targets.{self.name}.options: unknown option(s) {sorted(unknown)} for runtime "
                f"{self.runtime!r}; valid: {', '.join(spec.options) or '(none)'}"
            )
        if getattr(spec, "validate", None) is not None:
            spec.validate(self)  # ValueError -> the problem, with its key path
        if self.instance is not None:
            from compress.measure.cost import lookup_price

            price = lookup_price(self.instance)
            if self.usd_per_hour is None:
                self.usd_per_hour = price.usd_per_hour
        return self


class ProfileConfig(Strict):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    warmup: int = Field(5, ge=0, description="Untimed runs per variant before timing")
    rounds: int = Field(7, ge=1, description="Interleaved rounds over all variants")
    min_round_s: float = Field(0.2, gt=0, description="Minimum timed seconds per variant per round")
    warmup_max_s: float = Field(2.0, ge=0, description="Warm-up runs until two windows agree, at most this long")
    max_cv: float = Field(
        0.1, gt=0, description="Largest coefficient of variation of the per-round medians; above it, "
        "rounds are added (max_extra_rounds), then the measurement is flagged unstable"
    )
    max_extra_rounds: int = Field(6, ge=0, description="Rounds added at most for unstable measurements")
    memory: bool = Field(True, description="Measure peak resident memory of each session in a subprocess")
    requests_per_day: float | None = Field(
        None, ge=0, description="Traffic for the monthly cost and the break-even days"
    )
    compression_usd_per_hour: float | None = Field(
        None, ge=0, description="Price of the machine that ran the compression steps; default: "
        "each target's usd_per_hour"
    )

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, v):
        if not v or any(b < 1 for b in v):
            raise ValueError(f"batch_sizes must be positive integers, got {v}")
        return sorted(set(v))


class RobustnessConfig(Strict):
    """Synthetic corruptions of held-out, as a robustness profile per variant."""

    when: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: only when the recipe gives no drift or production data"
    )
    corruptions: list[str] = Field(
        default_factory=lambda: ["gaussian_noise", "gaussian_blur", "jpeg", "brightness"],
        description="gaussian_noise, gaussian_blur, jpeg, brightness, contrast",
    )
    severities: list[int] = Field(default_factory=lambda: [1, 3, 5], description="Each in 1..5")

    @field_validator("corruptions")
    @classmethod
    def _corruptions(cls, v):
        from compress.measure.corruptions import CORRUPTIONS

        unknown = [c for c in v if c not in CORRUPTIONS]
        if unknown or not v:
            raise ValueError(
                f"unknown corruption(s) {unknown or v}; valid: {', '.join(sorted(CORRUPTIONS))}"
            )
        return v

    @field_validator("severities")
    @classmethod
    def _severities(cls, v):
        if not v or any(s not in (1, 2, 3, 4, 5) for s in v):
            raise ValueError(f"severities must be integers in 1..5, got {v}")
        return sorted(set(v))


class EvaluateConfig(Strict):
    metrics: list[Literal["top1", "top5"]] = Field(default_factory=lambda: ["top1"])
    batch_size: int = Field(256, ge=1)
    bootstrap_resamples: int = Field(
        2000, ge=100,
        description="Resamples of the bootstrap of an unpaired drift change (paired intervals do not resample)",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of every interval and test")
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)


class GateConfig(Strict):
    max_accuracy_drop: float | None = Field(None, ge=0, description="Points of top-1 on held-out")
    min_speedup: float | None = Field(None, gt=0, description="Against `reference` on the same target")
    speedup_batch_sizes: list[int] | None = Field(
        None, description="Batch sizes min_speedup applies to; default: every profiled one"
    )
    reference: str = Field("baseline", description="Variant that speed-ups are measured against")
    reference_target: str | None = Field(
        None, description="Time the reference on this target for every speed-up (e.g. ONNX Runtime fp32 "
        "as the bar for OpenVINO variants); default: the reference on the same target"
    )
    mode: Literal["point", "confident"] = Field(
        "point", description="point: the estimate must be within tolerance; confident: the "
        "upper bound of the 95% interval of the drop must be"
    )
    max_worst_class_drop: float | None = Field(
        None, description="Points of top-1 the worst class may lose on held-out"
    )
    max_overfit_gap_increase: float | None = Field(
        None, description="Points the (fit split - held-out) gap may grow over the baseline's"
    )
    max_drift_drop_increase: float | None = Field(
        None, description="Points a variant may lose on drift data beyond what the baseline loses"
    )

    @field_validator(
        "max_accuracy_drop", "max_worst_class_drop", "max_overfit_gap_increase",
        "max_drift_drop_increase", mode="before",
    )
    @classmethod
    def _tolerance(cls, v, info):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            raise ValueError(
                f"{info.field_name} is a tolerance in points and must be >= 0 (0 = no loss "
                f"allowed), got {v}"
            )
        return v


class ReportConfig(Strict):
    dir: Path = Field(Path("runs"), description="Run directories go under DIR/<timestamp>")


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Names the run directory")
    seed: int = Field(0, description="Seeds splits, training, calibration sampling and bootstraps")
    model: ModelConfig = Field(description="The trained model to compress")
    data: DataConfig = Field(description="Where samples come from and how they are split")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig, description="How to get the baseline without a checkpoint")
    variants: dict[str, VariantConfig] = Field(description="Name -> chain of steps")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Accuracy measurement")
    targets: list[TargetConfig] = Field(min_length=1, description="Where variants are run and timed")
    profile: ProfileConfig = Field(default_factory=ProfileConfig, description="Timing method")
    gate: GateConfig = Field(default_factory=GateConfig, description="Rules that decide the exit code")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Where runs are written")

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v):
        if not v:
            raise ValueError("a recipe needs at least one variant")
        for name in v:
            if name == "baseline" or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(
                    f"variant name {name!r} must be letters, digits, '-' or '_' and not 'baseline'"
                )
        return v

    # -- rules between keys ------------------------------------------------------------------

    def variant_order(self) -> list[str]:
        """Variants with every `from:` parent before its children."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, stack: tuple[str, ...]) -> None:
            if name in seen:
                return
            parent = self.variants[name].from_
            if parent is not None and parent in self.variants and parent not in stack:
                visit(parent, (*stack, name))
            seen.add(name)
            order.append(name)

        for name in self.variants:
            visit(name, ())
        return order

    def final_kinds(self) -> dict[str, str]:
        """The artifact kind each variant ends with (torch, onnx, openvino, tensorrt)."""
        start = "onnx" if self.model.source.startswith("onnx:") else "torch"
        kinds: dict[str, str] = {"baseline": start}
        for name in self.variant_order():
            v = self.variants[name]
            kind = kinds.get(v.from_, start) if v.from_ else start
            for step_name, cfg in v.step_list():
                spec = STEPS.get(step_name)
                if kind in spec.accepts:
                    kind = spec.produces(cfg, kind)
            kinds[name] = kind
        return kinds

    def check_rules(self) -> list[str]:
        problems: list[str] = []
        start = "onnx" if self.model.source.startswith("onnx:") else "torch"
        # from: exists, no cycles
        for name, v in self.variants.items():
            if v.from_ is None:
                continue
            if v.from_ not in self.variants:
                problems.append(
                    f"variants.{name}.from: unknown variant {v.from_!r}; valid: {', '.join(self.variants)}"
                )
                continue
            seen, cur = {name}, v.from_
            while cur is not None and cur in self.variants:
                if cur in seen:
                    problems.append(f"variants.{name}.from: `from` chain loops back to {cur!r}")
                    break
                seen.add(cur)
                cur = self.variants[cur].from_
        if problems:
            return problems
        # step order: each step must accept the kind the previous one produced
        kinds: dict[str, str] = {"baseline": start}
        broken: set[str] = set()
        for name in self.variant_order():
            v = self.variants[name]
            kind = kinds[v.from_] if v.from_ else start
            if v.from_ in broken:
                broken.add(name)
            for i, (step_name, cfg) in enumerate(v.step_list()):
                spec = STEPS.get(step_name)
                if step_name == "quantize" and kind == "openvino" and getattr(cfg, "backend", None) != "nncf":
                    broken.add(name)
                    problems.append(
                        f"variants.{name}.steps[{i}].quantize: an OpenVINO IR model is quantized with "
                        "backend: nncf (ONNX Runtime quantizes ONNX files)"
                    )
                    break
                if kind not in spec.accepts:
                    # keyed by the kind the variant has here: a torch model needs exporting
                    # first; an onnx model is too late for a torch-only step
                    hint = {
                        ("torch", "onnx"): "add `- export: {format: onnx}` before it",
                        ("onnx", "torch"): "move it before the export step",
                    }.get((kind, next(iter(sorted(spec.accepts)))), "")
                    problems.append(
                        f"variants.{name}.steps[{i}].{step_name}: needs "
                        f"{' or '.join(_KIND_NAMES[k] for k in sorted(spec.accepts))} model, but the "
                        f"variant has {_KIND_NAMES.get(kind, kind)} model at this point"
                        + (f"; {hint}" if hint else "")
                    )
                    broken.add(name)
                    break
                kind = spec.produces(cfg, kind)
            kinds[name] = kind
        # targets
        names = [t.name for t in self.targets]
        for dup in {n for n in names if names.count(n) > 1}:
            problems.append(f"targets: name {dup!r} is used twice; target names must be unique")
        for name, kind in kinds.items():
            if name != "baseline" and name not in broken and not any(
                kind in RUNTIMES.get(t.runtime).accepts for t in self.targets
            ):
                problems.append(
                    f"variants.{name}: ends with a {kind} model, which no target can run "
                    f"(targets: {', '.join(f'{t.name}={t.runtime}' for t in self.targets)})"
                )
        roles = set(self.data.sources or {}) if self.data.sources is not None else {
            r for r in SPLIT_ROLES if getattr(self.data.split, r) > 0
        }
        for name, v in self.variants.items():
            for i, (step_name, cfg) in enumerate(v.step_list()):
                if step_name == "quantize" and getattr(cfg, "mode", None) == "static" and "calibration" not in roles:
                    problems.append(
                        f"variants.{name}.steps[{i}].quantize: static quantization calibrates on the "
                        "calibration split, and the data has none; set data.split.calibration (e.g. 0.1)"
                    )
                needs_train = step_name == "finetune" or (step_name in ("prune", "sparsify") and getattr(cfg, "finetune", None))
                if needs_train and "train" not in roles:
                    problems.append(
                        f"variants.{name}.steps[{i}].{step_name}: fine-tuning needs a train split; set data.split.train"
                    )
        target_names = {t.name for t in self.targets}
        for name, v in self.variants.items():
            for i, (step_name, cfg) in enumerate(v.step_list()):
                budget = getattr(cfg, "latency_budget", None)
                if budget is not None and budget.target not in target_names:
                    problems.append(
                        f"variants.{name}.steps[{i}].{step_name}.latency_budget.target: unknown target "
                        f"{budget.target!r}; valid: {', '.join(sorted(target_names))}"
                    )
        for name, v in self.variants.items():
            for t in v.targets or []:
                if t not in target_names:
                    problems.append(f"variants.{name}.targets: unknown target {t!r}; valid: {', '.join(sorted(target_names))}")
        if self.gate.reference_target is not None and self.gate.reference_target not in target_names:
            problems.append(
                f"gate.reference_target: unknown target {self.gate.reference_target!r}; valid: {', '.join(sorted(target_names))}"
            )
        ref = self.gate.reference
        if ref != "baseline" and ref not in self.variants:
            problems.append(
                f"gate.reference: unknown variant {ref!r}; valid: baseline, {', '.join(self.variants)}"
            )
        if self.gate.speedup_batch_sizes:
            missing = set(self.gate.speedup_batch_sizes) - set(self.profile.batch_sizes)
            if missing:
                problems.append(
                    f"gate.speedup_batch_sizes: {sorted(missing)} are not in profile.batch_sizes "
                    f"{self.profile.batch_sizes}"
                )
        if self.model.source.startswith("onnx:") and self.baseline.train is not None:
            problems.append("baseline.train: an onnx: model cannot be trained; remove baseline.train")
        if self.data.drift and self.data.drift.corruption:
            from compress.measure.corruptions import CORRUPTIONS

            if self.data.drift.corruption not in CORRUPTIONS:
                problems.append(
                    f"data.drift.corruption: unknown corruption {self.data.drift.corruption!r}; "
                    f"valid: {', '.join(sorted(CORRUPTIONS))}"
                )
        has_tuning = (self.data.split.tuning > 0 if self.data.source is not None
                      else "tuning" in (self.data.sources or {}))
        for name, v in self.variants.items():
            for i, (step_name, cfg) in enumerate(v.step_list()):
                if getattr(cfg, "mixed_precision", None) is not None and not has_tuning:
                    problems.append(
                        f"variants.{name}.steps[{i}].{step_name}.mixed_precision: needs a tuning "
                        "split, disjoint from calibration and held-out; set data.split.tuning "
                        "(e.g. 0.1) or data.sources.tuning"
                    )
        return problems


# --------------------------------------------------------------------------- loading


def _format_loc(loc: tuple) -> str:
    out = ""
    prev = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == prev or str(part).startswith("function-"):  # the tagged union repeats the step name
            continue
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out or "(top level)"


def format_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = _format_loc(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `compress schema` lists the valid keys)"
        msg = msg.removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}")
    return problems


def parse_recipe(data: Any, *, origin: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: a recipe must be a YAML mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        problems = format_validation_error(err)
        raise RecipeError(f"{origin} is invalid:\n  " + "\n  ".join(problems), problems) from None
    problems = recipe.check_rules()
    if problems:
        raise RecipeError(f"{origin} is invalid:\n  " + "\n  ".join(problems), problems)
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file. Relative input paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe file {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{path}: YAML syntax error{where}: {problem}") from None
    return parse_recipe(data, origin=str(path))


def recipe_json_schema() -> dict:
    return Recipe.model_json_schema(by_alias=True)
