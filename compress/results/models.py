"""results.json as typed models: the one description of the file.

They validate every run's results before they are written and every file ``compress gate`` and
``compress compare`` read; they generate ``docs/results.schema.json``
(``python -m compress.results.schema``); and they are the Python API's typed results
(``Results.model_validate(json.loads(path.read_text()))``, or what ``compress.run`` returns).

Fields not listed here may appear (new measurements are added without a version bump) and are
kept; readers must ignore what they do not know. Removing or retyping a listed field bumps
``SCHEMA_VERSION``. Units are in the field names: _ms, _bytes, usd_per_1m, top1 in percent,
changes in points.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = 1
SCHEMA_ID = "urn:compress:results-schema"

BatchSize = Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]
Count = Annotated[int, Field(ge=0)]
Percent = Annotated[float, Field(ge=0, le=100, description="percent")]


class Model(BaseModel):
    """Strict types (a number is a number, not a string), unknown fields kept."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True)


class Interval(Model):
    """A point estimate with a two-sided interval at ``confidence``."""

    estimate: float
    low: float
    high: float
    confidence: Annotated[float, Field(gt=0, le=1)]
    method: str | None = Field(
        None, description="how the interval was computed: tango_scas_cc (paired score interval) or "
        "mover_tango_scas_cc (difference of two of them); absent for bootstraps")


class SplitAccuracy(Model):
    split: str | None = None
    n: Count
    top1: Percent
    top5: Percent | None = None
    predictions: list[int] | None = Field(
        None, description="predicted class per sample, in the split's order (held-out only)")


class McNemar(Model):
    n_variant_only: Count
    n_baseline_only: Count
    p_value: float


class PerClass(Model):
    variant_top1: list | None = None
    baseline_top1: list | None = None
    n: list[Count] | None = None
    worst_class: Count | None = None
    worst_class_drop_points: float | None = None
    worst_class_n: Count | None = None
    worst_class_drop_high_points: float | None = Field(
        None, description="upper limit of the largest per-class drop: the largest per-class paired upper limit")
    worst_class_drop_high_class: Count | None = None


class Fidelity(Model):
    cosine_mean: float | None = None
    cosine_min: float | None = None
    kl_mean_nats: float | None = None
    kl_max_nats: float | None = None


class Accuracy(Model):
    heldout: SplitAccuracy
    train: SplitAccuracy | None = None
    drift: SplitAccuracy | None = None
    calibration: SplitAccuracy | None = None
    tuning: SplitAccuracy | None = None
    change_points: float | None = Field(None, description="held-out top-1 minus the baseline's, in points")
    change_interval: Interval | None = None
    mcnemar: McNemar | None = None
    agreement: float | None = Field(None, description="percent of held-out samples predicted like the baseline")
    drift_change_points: float | None = None
    change_split: str | None = Field(None, description="the split change_points was measured on")
    change_n: Count | None = Field(None, description="paired samples behind change_points")
    discordance_rate: float | None = Field(None, description="fraction of samples where exactly one model is right")
    top5_change_points: float | None = None
    top5_change_interval: Interval | None = None
    per_class: PerClass | None = None
    fidelity: Fidelity | None = None


class Energy(Model):
    """Energy per inference from a hardware counter, or why there is no number."""

    measured: bool
    meter: str | None = None
    reason: str | None = None
    j_per_inference: float | None = None
    energy_j: float | None = None
    seconds: float | None = None
    mean_power_w: float | None = None


class Latency(Model):
    """One (model, target, batch size): the timed calls and what follows from them."""

    n: Count | None = None
    p50_ms: float
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    p50_low_ms: float | None = None
    p50_high_ms: float | None = None
    cv: float | None = None
    batch_size: Count
    seq_len: Count | None = Field(None, description="tokens per sample (text models); absent for images")
    throughput_per_s: float
    round_cv: float | None = None
    stable: bool | None = None
    usd_per_1m: float | None = Field(None, description="dollars per million inferences at the target's price")
    monthly_usd: float | None = Field(None, description="dollars per month at profile.requests_per_day")
    energy: Energy | None = None
    samples_ms: list[float] | None = Field(None, description="every timed call, in order")


class Facts(Model):
    """What the steps that made an artifact recorded about it (each step keeps its input's facts,
    so a variant carries its whole chain's). Steps may record more than is listed here."""

    params: Count | None = None
    macs: Count | None = None
    export_max_rel_error: float | None = Field(None, description="ONNX export vs torch, relative to the logits' range")
    opset: int | None = Field(None, description="ONNX opset of the export")
    export_verified_shapes: list[list[int]] | None = Field(
        None, description="text models: the (batch, sequence) shapes the export was verified at")
    transformer_fusions: dict[str, Any] | None = Field(
        None, description="ONNX Runtime's transformer optimizer: settings, fused op counts "
        "(Attention, SkipLayerNormalization, ...), attention_layers, max_rel_error after fusion")
    fp16_max_rel_error: float | None = Field(None, description="fp16 vs fp32, relative to the logits' range")
    precision: dict[str, Any] | None = Field(None, description="fp16 step: weights and I/O precision")
    int8_coverage: dict[str, Any] | None = Field(None, description="which compute ops run in int8")
    quantization: dict[str, Any] | None = Field(None, description="the quantize step's settings and rewrites")
    pruning: dict[str, Any] | None = Field(None, description="MACs/params before and after, recovery")
    tensorrt: dict[str, Any] | None = Field(None, description="engine precision, fingerprint, batch profile")
    openvino_fingerprint: dict[str, Any] | None = None


class Artifact(Model):
    kind: str = Field(description="torch | onnx | openvino | tensorrt")
    lineage: list[str]
    size_bytes: Count | None = None
    facts: Facts = Field(default_factory=Facts)


class Check(Model):
    rule: str = Field(description="a gate rule (compress.results.gate.RULES)")
    value: float | None
    limit: float
    passed: bool
    detail: str
    target: str | None = None
    batch_size: Count | None = None
    mode: str | None = None
    needed_heldout_n: Count | None = None
    decisive: bool | None = None


class GateResult(Model):
    verdict: Literal["pass", "fail", "error", "not gated", "reference"]
    checks: list[Check]
    passing_targets: list[str] | None = None


PerTarget = dict[str, dict[BatchSize, Latency]]
SeqLen = Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]


class Pass(Model):
    """One timed pass over the served samples (a call runs every batch of the pass)."""

    p50_ms: float = Field(description="median time of one pass")
    p50_low_ms: float | None = None
    p50_high_ms: float | None = None
    throughput_per_s: float = Field(description="samples per second over the pass")
    stable: bool | None = None
    usd_per_1m: float | None = None
    samples_ms: list[float] | None = None


class RealLengths(Model):
    """A split's own samples batched as a server would, padded per batch (dynamic) and to max_length."""

    split: str
    batching: Literal["arrival", "length"] = Field(
        description="arrival: the split's order; length: sorted by length before batching")
    batch_size: Count
    n_samples: Count
    n_batches: Count
    max_length: Count
    tokens: Count = Field(description="real tokens in the pass (no padding)")
    mean_length: float
    padding_fraction: float = Field(description="share of token slots that are padding, per-batch padding")
    padding_fraction_max_length: float = Field(description="the same, padded to max_length")
    dynamic: Pass
    padded: Pass
    speedup: Interval = Field(description="padded median / dynamic median: what dynamic padding saves")


class Measured(Model):
    """What was measured of one model: accuracy, latency and the rest, per target."""

    accuracy: Accuracy | None = None
    latency: PerTarget | None = Field(None, description="{target: {batch size: latency summary}}")
    speedup: dict[str, dict[BatchSize, Interval]] | None = Field(
        None, description="{target: {batch size: speed-up over gate.reference}}")
    latency_by_seq_len: dict[str, dict[SeqLen, dict[BatchSize, Latency]]] | None = Field(
        None, description="text models: {target: {seq_len: {batch size: latency summary}}}, every cell of "
        "the grid; latency holds the longest sequence length's cells")
    speedup_by_seq_len: dict[str, dict[SeqLen, dict[BatchSize, Interval]]] | None = Field(
        None, description="text models: {target: {seq_len: {batch size: speed-up over gate.reference}}}")
    real_lengths: dict[str, RealLengths] | None = Field(
        None, description="text models: {target: a split's own lengths, dynamic padding vs max_length}")
    not_profiled: dict[str, str] | None = Field(None, description="{target: why this model was not timed there}")
    runtime_info: dict[str, dict[str, Any]] | None = Field(None, description="{target: what the runtime reported}")
    memory: dict[str, dict[str, Any]] | None = Field(None, description="{target: peak resident memory}")
    cost: dict[str, dict[str, Any]] | None = Field(None, description="{target: compression cost and break-even}")
    evaluated_on: str | None = Field(None, description="the target whose runtime computed the accuracy")
    artifact: Artifact | None = None
    fit_splits: list[str] | None = Field(
        None, description="splits this model was fitted on (consumed by its steps, or train)")
    heldout_overlap: dict[str, Count] | None = Field(
        None, description="{fitted split: held-out samples it shares, by content hash}")
    overfit: dict[str, Any] | None = Field(None, description="fit-split minus held-out gaps (see docs/evaluator.md)")
    drift: dict[str, Any] | None = Field(None, description="labelled / production / robustness drift checks")


class Baseline(Measured):
    status: Literal["ok"]
    artifact: Artifact
    accuracy: Accuracy
    info: dict[str, Any] | None = None


class Step(Model):
    step: str
    config: dict[str, Any] | None = None
    seconds: float | None = None
    compute_seconds: float | None = None
    cached: bool | None = None
    machine: str | None = None
    inherited: bool | None = None


class Variant(Measured):
    """One variant: built (status ok, with its artifact) or failed (with the error)."""

    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"properties": {"status": {"const": "ok"}}}, "then": {"required": ["artifact"]}},
        {"if": {"properties": {"status": {"const": "failed"}}},
         "then": {"required": ["error"], "properties": {"error": {"type": "string"}}}},
    ]})

    status: Literal["ok", "failed"]
    error: str | None = None
    from_: str | None = Field(None, alias="from")
    description: str | None = None
    gated: bool | None = None
    steps: list[Step] | None = None
    notes: list[str] | None = None
    consumed_splits: list[str] | None = None
    gate: GateResult

    @model_validator(mode="after")
    def _status(self):
        if self.status == "ok" and self.artifact is None:
            raise ValueError("a variant with status ok carries its artifact: 'artifact' is required")
        if self.status == "failed" and not self.error:
            raise ValueError("a failed variant says why: 'error' is required")
        return self


class Verdict(Model):
    passed: bool
    failed: list[str]
    errors: list[str]
    passing: list[str]
    recommended: str | None
    recommended_target: str | None = Field(None, description="the target the recommendation is for")
    recommended_by: Literal["usd_per_1m", "latency"] | None = Field(
        None, description="usd_per_1m when every timed target has a price, else latency per sample")
    exit_code: Literal[0, 1, 3]
    rules: dict[str, Any]
    mode: str | None = None


class GateRules(Model):
    max_accuracy_drop: float | None = None
    min_speedup: float | None = None
    reference: str | None = None


class ProfileSettings(Model):
    batch_sizes: list[Annotated[int, Field(ge=1)]]


class RecipeAsRun(Model):
    """The recipe as run, every default filled in (see docs/recipe.md)."""

    name: str
    seed: int | None = None
    gate: GateRules
    profile: ProfileSettings
    variants: dict[str, Any]


class Run(Model):
    recipe_path: str
    started: str = Field(json_schema_extra={"format": "date-time"})
    finished: str | None = Field(None, json_schema_extra={"format": "date-time"})
    wall_s: float | None = None
    run_dir: str | None = None


class SplitInfo(Model):
    n: Count
    source: str
    fingerprint: str | None = None


class Data(Model):
    splits: dict[str, SplitInfo]
    classes: list | None = None
    heldout_labels: list[int] | None = Field(
        None, description="true class per held-out sample; pairs with accuracy.heldout.predictions")
    tokenizer: dict | None = Field(
        None, description="text data: the tokenizer's origin, sha256_20 hash, vocab_size, max_length, "
        "inputs and path in the run directory")

    @model_validator(mode="after")
    def _heldout(self):
        if "heldout" not in self.splits:
            raise ValueError("data.splits has no 'heldout' split: every run judges on held-out data")
        return self


class Target(Model):
    name: str
    runtime: str
    device: str
    threads: Count | None = None
    usd_per_hour: float | None = None


class Results(Model):
    """Every number a ``compress run`` measured (results.json)."""

    model_config = ConfigDict(title=f"compress results.json, schema version {SCHEMA_VERSION}")

    schema_version: Literal[SCHEMA_VERSION]  # type: ignore[valid-type]
    compress_version: str
    recipe: RecipeAsRun
    run: Run
    data: Data
    targets: list[Target]
    baseline: Baseline
    variants: dict[str, Variant]
    verdict: Verdict
    environment: dict[str, Any] | None = Field(
        None, description="versions, CPU, GPUs, thread settings, git commit")


def results_json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of results.json, generated from ``Results``."""
    schema = Results.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "description": (
            "Every number a `compress run` measured, with units in the field names (_ms, _bytes, "
            "usd_per_1m, top1 in percent, changes in points). Fields not listed here may appear; "
            "readers must ignore what they do not know. Removing or retyping a listed field bumps "
            "schema_version."
        ),
    }
