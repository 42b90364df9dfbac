"""The versioned JSON Schema of results.json, and loading/validating results files.

results.json is the contract between a run and everything that reads it (the report, the gate,
`compress compare`, other tools). The schema pins the fields those readers rely on and their
types; it allows extra fields, so new measurements can be added without a version bump. A change
that removes or retypes a pinned field bumps ``SCHEMA_VERSION``.

``docs/results.schema.json`` is generated from this module:
``python -m compress.results.schema > docs/results.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.errors import InputError

SCHEMA_VERSION = 1
SCHEMA_ID = "urn:compress:results-schema"

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_STR_OR_NULL = {"type": ["string", "null"]}


def _obj(properties: dict, required: list[str] | None = None, description: str | None = None) -> dict:
    out: dict = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


def _per_target_per_batch(item: dict, description: str) -> dict:
    """{target name: {batch size as a string: item}}."""
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": item,
        },
    }


INTERVAL = _obj(
    {"estimate": _NUM, "low": _NUM, "high": _NUM, "confidence": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
     "method": {**_STR, "description": "how the interval was computed: tango_scas_cc (paired score "
                "interval) or mover_tango_scas_cc (difference of two of them); absent for bootstraps"}},
    ["estimate", "low", "high", "confidence"],
    "A point estimate with a two-sided interval at `confidence`.",
)

SPLIT_ACCURACY = _obj(
    {
        "split": _STR,
        "n": _INT,
        "top1": {"type": "number", "minimum": 0, "maximum": 100, "description": "percent"},
        "top5": {"type": ["number", "null"], "minimum": 0, "maximum": 100, "description": "percent"},
        "predictions": {"type": "array", "items": {"type": "integer"},
                        "description": "predicted class per sample, in the split's order (held-out only)"},
    },
    ["n", "top1"],
)

ACCURACY = _obj(
    {
        "heldout": SPLIT_ACCURACY,
        "train": SPLIT_ACCURACY,
        "drift": SPLIT_ACCURACY,
        "change_points": {**_NUM, "description": "held-out top-1 minus the baseline's, in points"},
        "change_interval": INTERVAL,
        "mcnemar": _obj({"n_variant_only": _INT, "n_baseline_only": _INT, "p_value": _NUM},
                        ["n_variant_only", "n_baseline_only", "p_value"]),
        "agreement": {**_NUM, "description": "percent of held-out samples predicted like the baseline"},
        "drift_change_points": _NUM,
        "calibration": SPLIT_ACCURACY,
        "tuning": SPLIT_ACCURACY,
        "change_split": {**_STR, "description": "the split change_points was measured on"},
        "change_n": {**_INT, "description": "paired samples behind change_points"},
        "discordance_rate": {**_NUM, "description": "fraction of samples where exactly one model is right"},
        "top5_change_points": _NUM,
        "top5_change_interval": INTERVAL,
        "per_class": _obj({"variant_top1": {"type": "array"}, "baseline_top1": {"type": "array"},
                           "n": {"type": "array", "items": _INT}, "worst_class": _INT,
                           "worst_class_drop_points": _NUM, "worst_class_n": _INT,
                           "worst_class_drop_high_points": {
                               **_NUM, "description": "upper limit of the largest per-class drop: "
                               "the largest per-class paired upper limit"},
                           "worst_class_drop_high_class": _INT}),
        "fidelity": _obj({"cosine_mean": _NUM, "cosine_min": _NUM, "kl_mean_nats": _NUM,
                          "kl_max_nats": _NUM}),
    },
    ["heldout"],
)

LATENCY = _obj(
    {
        "n": _INT,
        "p50_ms": _NUM, "p90_ms": _NUM, "p99_ms": _NUM, "mean_ms": _NUM, "min_ms": _NUM,
        "p50_low_ms": _NUM, "p50_high_ms": _NUM, "cv": _NUM,
        "batch_size": _INT,
        "throughput_per_s": _NUM,
        "usd_per_1m": {**_NUM_OR_NULL, "description": "dollars per million inferences at the target's price"},
        "energy": {"type": "object"},
        "samples_ms": {"type": "array", "items": _NUM, "description": "every timed call, in order"},
    },
    ["p50_ms", "batch_size", "throughput_per_s"],
)

CHECK = _obj(
    {
        "rule": _STR, "value": _NUM_OR_NULL, "limit": _NUM, "passed": {"type": "boolean"},
        "detail": _STR, "target": _STR_OR_NULL, "batch_size": _INT_OR_NULL,
        "mode": _STR_OR_NULL, "needed_heldout_n": _INT_OR_NULL,
    },
    ["rule", "value", "limit", "passed", "detail"],
)

GATE_RESULT = _obj(
    {"verdict": {"enum": ["pass", "fail", "error", "not gated", "reference"]},
     "checks": {"type": "array", "items": CHECK}},
    ["verdict", "checks"],
)

ARTIFACT = _obj(
    {
        "kind": _STR,
        "lineage": {"type": "array", "items": _STR},
        "size_bytes": _INT_OR_NULL,
        "params": _INT_OR_NULL,
        "macs": _INT_OR_NULL,
        "int8_coverage": {"type": ["object", "null"]},
        "quantization": {"type": ["object", "null"]},
        "pruning": {"type": ["object", "null"]},
    },
    ["kind", "lineage"],
)

_MEASURED = {
    "accuracy": ACCURACY,
    "latency": _per_target_per_batch(LATENCY, "{target: {batch size: latency summary}}"),
    "speedup": _per_target_per_batch(INTERVAL, "{target: {batch size: speed-up over gate.reference}}"),
    "not_profiled": {"type": "object", "additionalProperties": _STR,
                     "description": "{target: why this model was not timed there}"},
    "evaluated_on": {**_STR, "description": "the target whose runtime computed the accuracy"},
    "artifact": ARTIFACT,
    "fit_splits": {"type": "array", "items": _STR,
                   "description": "splits this model was fitted on (consumed by its steps, or train)"},
    "heldout_overlap": {"type": "object", "additionalProperties": _INT,
                        "description": "{fitted split: held-out samples it shares, by content hash}"},
    "overfit": {"type": "object", "description": "fit-split minus held-out gaps (see docs/evaluator.md)"},
    "drift": {"type": "object", "description": "labelled / production / robustness drift checks"},
}

BASELINE = _obj({"status": {"const": "ok"}, **_MEASURED, "info": {"type": "object"}},
                ["status", "artifact", "accuracy"])

VARIANT = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "failed"]},
        "error": _STR_OR_NULL,
        "from": _STR_OR_NULL,
        "description": _STR_OR_NULL,
        "gated": {"type": "boolean"},
        "steps": {"type": "array", "items": {"type": "object"}},
        "notes": {"type": "array", "items": _STR},
        **_MEASURED,
        "gate": GATE_RESULT,
    },
    "required": ["status", "gate"],
    # A variant that built must carry its artifact; one that failed must say why.
    "allOf": [
        {"if": {"properties": {"status": {"const": "ok"}}},
         "then": {"required": ["artifact"]}},
        {"if": {"properties": {"status": {"const": "failed"}}},
         "then": {"required": ["error"], "properties": {"error": _STR}}},
    ],
}

VERDICT = _obj(
    {
        "passed": {"type": "boolean"},
        "failed": {"type": "array", "items": _STR},
        "errors": {"type": "array", "items": _STR},
        "passing": {"type": "array", "items": _STR},
        "recommended": _STR_OR_NULL,
        "recommended_target": _STR_OR_NULL,
        "recommended_by": {"enum": ["usd_per_1m", "latency", None]},
        "exit_code": {"enum": [0, 1, 3]},
        "rules": {"type": "object"},
    },
    ["passed", "failed", "errors", "passing", "recommended", "exit_code", "rules"],
)

RECIPE = _obj(
    {
        "name": _STR,
        "seed": {"type": "integer"},
        "gate": _obj({"max_accuracy_drop": _NUM_OR_NULL, "min_speedup": _NUM_OR_NULL,
                      "reference": _STR}),
        "profile": _obj({"batch_sizes": {"type": "array", "items": {"type": "integer", "minimum": 1}}}),
        "variants": {"type": "object"},
    },
    ["name", "gate", "profile", "variants"],
    "The recipe as run, every default filled in (see docs/recipe.md).",
)


def results_json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of results.json at ``SCHEMA_VERSION``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"compress results.json, schema version {SCHEMA_VERSION}",
        "description": (
            "Every number a `compress run` measured, with units in the field names (_ms, _bytes, "
            "usd_per_1m, top1 in percent, changes in points). Fields not listed here may appear; "
            "readers must ignore what they do not know. Removing or retyping a listed field bumps "
            "schema_version."
        ),
        "type": "object",
        "required": ["schema_version", "compress_version", "recipe", "run", "data", "targets",
                     "baseline", "variants", "verdict"],
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "compress_version": _STR,
            "recipe": RECIPE,
            "run": _obj(
                {"recipe_path": _STR, "started": {**_STR, "format": "date-time"},
                 "finished": {**_STR, "format": "date-time"}, "wall_s": _NUM_OR_NULL,
                 "run_dir": _STR},
                ["recipe_path", "started"],
            ),
            "data": _obj(
                {
                    "splits": {
                        "type": "object",
                        "required": ["heldout"],
                        "additionalProperties": _obj({"n": _INT, "source": _STR, "fingerprint": _STR},
                                                     ["n", "source"]),
                    },
                    "classes": {"type": "array"},
                    "heldout_labels": {"type": "array", "items": {"type": "integer"},
                                       "description": "true class per held-out sample; pairs with accuracy.heldout.predictions"},
                },
                ["splits"],
            ),
            "targets": {
                "type": "array",
                "items": _obj({"name": _STR, "runtime": _STR, "device": _STR,
                               "threads": _INT_OR_NULL, "usd_per_hour": _NUM_OR_NULL},
                              ["name", "runtime", "device"]),
            },
            "baseline": BASELINE,
            "variants": {"type": "object", "additionalProperties": VARIANT},
            "verdict": VERDICT,
            "environment": {"type": "object", "description": "versions, CPU, GPUs, thread settings, git commit"},
        },
    }


def _problems(results) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(results_json_schema())
    out = []
    for err in sorted(validator.iter_errors(results), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(f"{where}: {err.message}")
    return out


def validate_results(results, source: str = "results") -> None:
    """Raise InputError listing every field of ``results`` that breaks the schema."""
    if isinstance(results, dict) and results.get("schema_version") not in (None, SCHEMA_VERSION):
        raise InputError(
            f"{source} has schema_version {results['schema_version']!r}; this compress reads "
            f"version {SCHEMA_VERSION}: rerun the recipe with this version, or use the compress "
            "version that wrote it"
        )
    problems = _problems(results)
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InputError(
            f"{source} does not match the results schema (docs/results.schema.json, version "
            f"{SCHEMA_VERSION}):\n  {shown}{more}\nIt was not written by this version of compress "
            "or was edited by hand: rerun the recipe to get a valid file."
        )


def resolve_results_path(path: Path) -> Path:
    """A results.json file, a run directory holding one, or a report directory whose newest
    run directory holds one (run directories are named by their UTC start time)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "results.json").is_file():
            return path / "results.json"
        runs = sorted(p for p in path.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / "results.json").is_file())
        if runs:
            return runs[-1] / "results.json"
        raise InputError(
            f"{path} holds no results.json, neither directly nor in a run directory below it: "
            "pass a run directory (runs/<name>/<timestamp>) or its results.json"
        )
    raise InputError(f"{path} does not exist: pass a run directory or a results.json file")


def load_results(path: Path) -> tuple[dict, Path]:
    """Read and validate results.json (see ``resolve_results_path``); return (results, file)."""
    file = resolve_results_path(path)
    try:
        results = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{file} is not valid JSON ({err}): pass the results.json a run wrote") from None
    except OSError as err:
        raise InputError(f"cannot read {file}: {err}") from None
    if not isinstance(results, dict):
        raise InputError(f"{file} holds a JSON {type(results).__name__}, not a results object")
    validate_results(results, str(file))
    return results, file


def main() -> None:  # pragma: no cover - `python -m compress.results.schema > docs/results.schema.json`
    print(json.dumps(results_json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
