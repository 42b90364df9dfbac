"""The recipe: a pydantic schema of the YAML file.

Every model forbids unknown keys, so a typo fails at load time with its key path. Rules that span
several keys (step order, data roles, which target can run which variant) are generic loops over
the plug-ins' declarations in ``compress.recipe.rules``; ``compress.recipe.load`` runs both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

import compress.runtimes  # noqa: F401  (registers the runtimes)
import compress.steps  # noqa: F401  (registers the steps)
from compress.recipe.variants import VariantConfig
from compress.runtimes.target import TargetConfig
from compress.search.space import SearchConfig
from compress.sources.data import DATA_SCHEMES
from compress.sources.models import MODEL_SCHEMES


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
        description="torchvision:NAME | python:MODULE_OR_FILE.py:FACTORY (runs your code) | onnx:PATH | "
        "hf:DIR (a saved Hugging Face text or image classifier, loaded offline)"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Arguments of the factory")
    checkpoint: Path | CheckpointConfig | None = Field(
        None, description="A state_dict file, loaded with torch.load(weights_only=True)"
    )
    input_shape: tuple[int, ...] | None = Field(
        None, description="One image sample's shape, e.g. [3, 32, 32] (image data needs it; text "
        "models take token arrays of the data's max_length)"
    )
    tokenizer: Path | None = Field(
        None, description="A saved Hugging Face tokenizer directory for text data; default: the hf: "
        "model directory's, else a WordPiece vocabulary trained on the train split"
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _check_source(v, MODEL_SCHEMES, "model")

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
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


class TextConfig(Strict):
    """How text samples are read and tokenized."""

    column: str | list[str] = Field(
        "text", description="The text column, or a pair of columns (e.g. [premise, hypothesis])"
    )
    label_column: str = Field("label", description="The label column: class names or integers")
    label_names: list[str] | None = Field(
        None, description="Class order (id = position); default: integer labels are their own ids, "
        "names are sorted"
    )
    max_length: int = Field(128, ge=2, description="Tokens per sample at most (longer ones are truncated)")
    vocab_size: int | None = Field(
        None, gt=5, description="Size of the WordPiece vocabulary trained on the train split when there "
        "is no tokenizer; default: the hf: model config's vocab_size, else 8000"
    )

    @field_validator("column")
    @classmethod
    def _column(cls, v):
        if isinstance(v, list) and not 1 <= len(v) <= 2:
            raise ValueError(f"column is one column or a pair, got {len(v)}")
        return v


class DriftConfig(Strict):
    source: str | None = Field(None, description="Labelled newer data, e.g. npz:new.npz or csv:new.csv")
    corruption: str | None = Field(
        None, description="Synthetic shift: gaussian_noise, gaussian_blur, jpeg, brightness, contrast "
        "(images); typo, case, dropped_words (text)"
    )
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
    source: str | None = Field(
        None, description="One source split by `split`: sklearn:digits | imagefolder:DIR | npz:FILE | "
        "python:MODULE:FN | csv:FILE | tsv:FILE | jsonl:FILE | hf-dataset:NAME[/CONFIG]@SPLIT | hf-disk:DIR[@SPLIT]"
    )
    sources: dict[Literal["train", "calibration", "tuning", "heldout"], str] | None = Field(
        None, description="Or one source per role, already separate (e.g. newer data as held-out)"
    )
    transform: TransformConfig = Field(default_factory=TransformConfig)
    text: TextConfig | None = Field(None, description="Text columns, labels and tokenization (text data)")
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
        from compress.sources.text_splits import is_text_source

        given = [self.source] if self.source is not None else list(self.sources.values())
        given += [d.source for d in (self.drift, self.production) if d is not None and d.source is not None]
        if len({is_text_source(s) for s in given}) > 1:
            raise ValueError(f"data mixes text and image sources ({', '.join(given)}): use one kind")
        if self.is_text:
            if self.text is None:
                self.text = TextConfig()
            if self.transform != TransformConfig():
                raise ValueError("data.transform applies to images; text data has none (remove it)")
        elif self.text is not None:
            raise ValueError("data.text applies to text sources (csv:, tsv:, jsonl:, hf-dataset:, hf-disk:); "
                             "remove it for image data")
        return self

    @property
    def is_text(self) -> bool:
        from compress.sources.text_splits import is_text_source

        return is_text_source(self.source if self.source is not None else next(iter(self.sources.values())))

    def roles(self) -> set[str]:
        """The data roles this data provides (train, calibration, tuning, heldout)."""
        if self.sources is not None:
            return set(self.sources)
        return {r for r in SPLIT_ROLES if getattr(self.split, r) > 0}


# --------------------------------------------------------------------------- training


class TrainConfig(Strict):
    epochs: int = Field(4, ge=1)
    lr: float = Field(0.02, gt=0)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="sgd: Nesterov momentum (CNNs); adamw: what transformers train with"
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (sgd only)")
    weight_decay: float = Field(5e-4, ge=0)
    warmup: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the steps over which the learning rate rises linearly "
        "from 0 (then the cosine decay); transformers want about 0.06"
    )
    max_grad_norm: float | None = Field(None, gt=0, description="Clip the gradient norm to this (e.g. 1.0)")


class BaselineConfig(Strict):
    train: TrainConfig | None = Field(None, description="Train the baseline when there is no checkpoint")


# --------------------------------------------------------------------------- profile, gate


class RealLengthsConfig(Strict):
    """Time a split's own token lengths as a server batches them (text models)."""

    enabled: bool = Field(True, description="false: skip it (`real_lengths: false` says the same)")
    split: Literal["heldout", "calibration", "tuning", "train"] = Field(
        "heldout", description="The split whose samples are served")
    batch_size: int | None = Field(None, ge=1, description="Default: the largest of profile.batch_sizes")
    batching: Literal["arrival", "length"] = Field(
        "arrival", description="arrival: batches in the split's order; length: sorted by length first "
        "(a server that buckets requests by length)")
    samples: int | None = Field(
        128, ge=1, description="A seeded random subset of this many samples, timed in one pass per call "
        "(null: the whole split)")


class ProfileConfig(Strict):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    seq_lens: list[int] | None = Field(
        None, description="Text models: sequence lengths in tokens, crossed with batch_sizes (every batch "
        "padded or cut to each); default: data.text.max_length. The gate and $ / 1M read the longest")
    real_lengths: RealLengthsConfig | None = Field(
        None, description="Text models: time the split's own lengths with per-batch (dynamic) padding "
        "against padding to max_length; default: on for text models (false: off)")
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

    @field_validator("seq_lens")
    @classmethod
    def _seq_lens(cls, v):
        if v is not None and (not v or any(n < 1 for n in v)):
            raise ValueError(f"seq_lens must be positive numbers of tokens, e.g. [32, 128], got {v}")
        return v if v is None else sorted(set(v))

    @field_validator("real_lengths", mode="before")
    @classmethod
    def _real_lengths(cls, v):
        return {"enabled": v} if isinstance(v, bool) else v

    def real_lengths_config(self, text: bool) -> RealLengthsConfig | None:
        """The real-lengths measurement to run: on by default for a text model, never for images."""
        real = self.real_lengths or RealLengthsConfig()
        return real if text and real.enabled else None


IMAGE_DEFAULT_CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "jpeg", "brightness")
TEXT_DEFAULT_CORRUPTIONS = ("typo", "case", "dropped_words")


class RobustnessConfig(Strict):
    """Synthetic corruptions of held-out, as a robustness profile per variant."""

    when: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: only when the recipe gives no drift or production data"
    )
    corruptions: list[str] | None = Field(
        None, description="Images: gaussian_noise, gaussian_blur, jpeg, brightness, contrast (default: "
        "the first four); text: typo, case, dropped_words (default: all three)",
    )
    severities: list[int] = Field(default_factory=lambda: [1, 3, 5], description="Each in 1..5")

    @field_validator("corruptions")
    @classmethod
    def _corruptions(cls, v):
        from compress.measure.corruptions import CORRUPTIONS
        from compress.measure.text_corruptions import TEXT_CORRUPTIONS

        if v is None:
            return v
        unknown = [c for c in v if c not in CORRUPTIONS | TEXT_CORRUPTIONS]
        if unknown or not v:
            raise ValueError(
                f"unknown corruption(s) {unknown or v}; valid: {', '.join(sorted(CORRUPTIONS))} "
                f"(images), {', '.join(sorted(TEXT_CORRUPTIONS))} (text)"
            )
        return v

    def corruptions_for(self, text: bool) -> list[str]:
        """The corruptions to run: the recipe's, else the default of the data's kind."""
        if self.corruptions is not None:
            return list(self.corruptions)
        return list(TEXT_DEFAULT_CORRUPTIONS if text else IMAGE_DEFAULT_CORRUPTIONS)

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
    search: SearchConfig | None = Field(
        None, description="`compress search`: options to vary, objective, budget (see docs/search.md)"
    )

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

    @property
    def start_kind(self) -> str:
        """The kind of artifact the baseline is: onnx for an onnx: source, else torch."""
        return "onnx" if self.model.source.startswith("onnx:") else "torch"

    def final_kinds(self) -> dict[str, str]:
        """The artifact kind each variant ends with (torch, onnx, openvino, tensorrt), walked by
        the same rule that checks the step order (a loaded recipe has no broken chain)."""
        from compress.recipe.rules import _step_order

        return _step_order(self, [])[0]
