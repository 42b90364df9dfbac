"""``compress profile MODEL --target ...``: profile one model file on one or more targets, no recipe.

A target is written ``RUNTIME[:DEVICE][,KEY=VALUE...]``, e.g. ``onnxruntime:cpu,threads=2``,
``onnxruntime:cuda,execution_provider=tensorrt,device_id=0`` or ``torch:cuda,dtype=fp16``.
``name``, ``threads``, ``usd_per_hour`` and ``instance`` are target keys; every other key is a
runtime option (the same keys as ``targets[].options`` in a recipe). Values are read as YAML
scalars (``2`` is a number, ``true`` a boolean).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from compress.errors import InputError, RecipeError, StepError
from compress.sources.inputs import as_input_spec

TARGET_KEYS = ("name", "threads", "usd_per_hour", "instance")
TORCHVISION_INPUT_SHAPE = (3, 224, 224)


def parse_target(text: str):
    """``RUNTIME[:DEVICE][,KEY=VALUE...]`` -> a validated ``TargetConfig``."""
    from pydantic import ValidationError

    from compress.recipe import TargetConfig, format_validation_error

    head, *pairs = [p.strip() for p in text.split(",")]
    runtime, _, device = head.partition(":")
    data: dict = {"runtime": runtime, "device": device or "cpu", "options": {}}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RecipeError(f"--target {text!r}: {pair!r} must look like KEY=VALUE, e.g. threads=2")
        parsed = yaml.safe_load(value) if value else value
        if key in TARGET_KEYS:
            data[key] = parsed
        else:
            data["options"][key] = parsed
    data.setdefault("name", f"{runtime}-{data['device']}" + (
        f"-{data['options']['execution_provider']}" if "execution_provider" in data["options"] else ""))
    try:
        return TargetConfig.model_validate(data)
    except ValidationError as err:
        problems = format_validation_error(err)
        raise RecipeError(f"--target {text!r}: " + "; ".join(problems), problems) from None


def load_model(model: str, input_shape: tuple[int, ...] | None, kwargs: dict | None = None,
               checkpoint: Path | None = None):
    """An ONNX file, or a torch model source (torchvision:NAME, python:FILE.py:FACTORY) with an
    optional state_dict checkpoint -> (Artifact, input shape of one sample, or the InputSpec of an
    ONNX text model: int64 inputs named input_ids, attention_mask, token_type_ids)."""
    from compress.artifacts import Artifact, file_digest

    if model.endswith(".onnx") or model.startswith("onnx:"):
        path = Path(model.removeprefix("onnx:"))
        if not path.is_file():
            raise InputError(f"model file {str(path)!r} does not exist; check the path")
        shape = input_shape or _onnx_text_spec(path) or _onnx_sample_shape(path)
        return Artifact(kind="onnx", digest=file_digest(path), path=path, lineage=[path.name]), shape
    scheme = model.partition(":")[0]
    if scheme not in ("torchvision", "python"):
        raise InputError(
            f"model {model!r}: give an .onnx file, or a torch model source torchvision:NAME or "
            "python:FILE.py:FACTORY (with --input-shape)"
        )
    if input_shape is None and scheme == "torchvision":
        input_shape = TORCHVISION_INPUT_SHAPE  # what torchvision's classification weights are trained at
    if input_shape is None:
        raise InputError(f"model {model!r}: a torch model needs --input-shape, e.g. 3,224,224")
    from compress.sources.models import ModelSpec, load_state_dict_checked, read_state_dict

    spec = ModelSpec(model, dict(kwargs or {}), Path("."))
    module = spec.build()
    if checkpoint is not None:
        load_state_dict_checked(module, read_state_dict(Path(checkpoint)), str(checkpoint))
    art = Artifact(kind="torch", digest="cli", module=module.eval(), model_spec=spec, lineage=[model])
    return art, input_shape


def _onnx_text_spec(path: Path, seq_len: int = 128):
    """The InputSpec of an ONNX text model (its token ids drawn below the rows of the embedding
    that gathers input_ids), or None when the file's inputs are not token arrays."""
    import onnx

    from compress.sources.inputs import TEXT_INPUTS, InputSpec

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name: i for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    if "input_ids" not in names or not set(names) <= set(TEXT_INPUTS) or any(
            i.type.tensor_type.elem_type != onnx.TensorProto.INT64 for i in inputs):
        return None
    vocab = next((int(inits[n.input[0]].dims[0]) for n in graph.node
                  if n.op_type == "Gather" and n.input[1] == "input_ids" and n.input[0] in inits), 0)
    return InputSpec.text(names, seq_len, vocab)


def _onnx_sample_shape(path: Path) -> tuple[int, ...]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    dims = inputs[0].type.tensor_type.shape.dim[1:]
    if not dims or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
        raise InputError(f"{path}: the input's sample shape is not fixed in the file; pass --input-shape")
    return tuple(int(d.dim_value) for d in dims)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise InputError(f"--input-shape {text!r} must be sizes like 3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise InputError(f"--input-shape {text!r} must be positive sizes like 3,224,224")
    return shape


def profile_model(artifact, input_spec, targets, batch_sizes: list[int], *, plan: dict,
                  memory: bool = True, requests_per_day: float | None = None, seed: int = 0,
                  seq_lens: list[int] | None = None, log=print) -> dict:
    """Time ``artifact`` on every target that can run it (targets on one device interleaved),
    measure memory and cost, with the loop ``compress run`` uses. A torch model given to a target
    that runs ONNX but not torch (ONNX Runtime, OpenVINO) is exported to ONNX on the way and
    verified against torch, as a run's export step does. A text model is timed at every length of
    ``seq_lens`` (default: its spec's). Returns ``{"model": ..., "targets": {name: {...}}}``."""
    import tempfile
    from dataclasses import replace

    from compress.measure.lengths import check_seq_lens
    from compress.measure.timing import check_batch_sizes
    from compress.run.profiling import add_costs, profile_pairs
    from compress.runtimes.base import RUNTIMES

    batch_sizes = check_batch_sizes(batch_sizes)
    spec = as_input_spec(input_spec)  # an InputSpec, or one image sample's shape
    if seq_lens and spec.kind != "text":
        raise InputError(f"--seq-len applies to text models (token inputs); this model takes {spec.describe()}")
    if spec.kind == "text":
        seq_lens = check_seq_lens(seq_lens or [spec.seq_len])
        spec = replace(spec, seq_len=seq_lens[-1])  # memory and the export check at the longest
    batches: dict = {}

    def make_batch(bs: int, seq_len: int | None = None):
        if (bs, seq_len) not in batches:
            batches[bs, seq_len] = spec.example(bs, fill="normal", seed=seed, seq_len=seq_len)
        return batches[bs, seq_len]

    out: dict = {"model": " → ".join(artifact.lineage), "kind": artifact.kind,
                 "size_bytes": artifact.size_bytes, "inputs": spec.describe(), "targets": {}}
    if spec.kind == "image":
        out["input_shape"] = list(spec.sample_shape)
    exported: list = []
    with tempfile.TemporaryDirectory(prefix="compress-profile-") as workdir:

        def runs_on(target):
            accepts = RUNTIMES.get(target.runtime).accepts
            if artifact.kind != "torch" or "torch" in accepts or "onnx" not in accepts:
                return artifact
            if not exported:
                check = spec.example(8, fill="normal", seed=seed + 1)
                exported.append(export_verified(artifact, spec, check, Path(workdir) / "model.onnx", log))
            return exported[0]

        pairs = {t.name: (runs_on(t), t) for t in targets}
        measured = profile_pairs(pairs, make_batch, batch_sizes, plan=plan, seq_lens=seq_lens,
                                 memory_input_spec=spec if memory else None, log=log)
    if exported:
        out["onnx_export"] = {k: exported[0].meta[k] for k in ("opset", "export_max_rel_error")}
    for t in targets:
        entry = out["targets"][t.name] = {"target": t.model_dump(mode="json"), **measured[t.name]}
        if pairs[t.name][0] is not artifact:
            entry["ran"] = " → ".join(pairs[t.name][0].lineage)
        if "latency" in entry:  # priced like a run's entry: {target: {batch size: summary}}
            add_costs({"model": {k: {t.name: entry[k]} for k in ("latency", "latency_by_seq_len") if k in entry}},
                      [t], reference="model", requests_per_day=requests_per_day)
    return out


def export_verified(artifact, input_spec, inputs: dict[str, np.ndarray], path: Path, log=print):
    """A torch artifact exported to ONNX (the export step's defaults: opset, dynamic batch) and
    checked against torch on ``inputs`` (the export step's tolerance); an onnx Artifact."""
    from compress.artifacts import Artifact
    from compress.sources.inputs import as_input_spec
    from compress.steps.export import ExportConfig, export_onnx, verify_onnx

    cfg = ExportConfig()
    module = artifact.load_module()
    log(f"exporting {artifact.lineage[-1]} to ONNX (opset {cfg.opset}), verified against torch ...")
    try:
        export_onnx(module, as_input_spec(input_spec), path, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch)
    except Exception as err:
        raise StepError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    error = verify_onnx(module, path, inputs, cfg.atol)
    return Artifact(kind="onnx", path=path, lineage=[*artifact.lineage, "export(onnx)"],
                    meta={"export_max_rel_error": error, "opset": cfg.opset})


def render(result: dict, requests_per_day: float | None, max_cv: float) -> str:
    from compress.report.serving import _notes, serving_table
    from compress.report.shapes import grid_table

    model = result["model"]
    parts = [f"# compress profile: {model}"]
    for name, entry in result["targets"].items():
        t = entry["target"]
        parts.append(f"## Target `{name}` ({t['runtime']} on {t['device']})")
        if "ran" in entry:
            exp = result["onnx_export"]
            parts.append(f"Ran the model's ONNX export ({entry['ran']}; opset {exp['opset']}, max relative "
                         f"error vs torch {exp['export_max_rel_error']:.1e}).")
        fake = {"recipe": {"profile": {"requests_per_day": requests_per_day, "max_cv": max_cv}}}
        rows = [(Path(model).name, {k: {name: entry[k]} for k in ("latency", "memory", "not_profiled")
                                    if k in entry})]
        table = serving_table(fake, name, rows)
        if table:
            parts.append(table)
        if "latency_by_seq_len" in entry:
            parts.append("Batch size × sequence length (p50 per batch):\n\n" + grid_table(
                fake, name, [(rows[0][0], {"latency_by_seq_len": {name: entry["latency_by_seq_len"]}})]))
        notes = _notes(fake, name, rows)
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"
