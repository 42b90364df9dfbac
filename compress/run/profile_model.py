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

from compress.errors import InputError, RecipeError
from compress.sources.inputs import PIXEL_VALUES

TARGET_KEYS = ("name", "threads", "usd_per_hour", "instance")


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
    optional state_dict checkpoint -> (Artifact, input shape of one sample)."""
    from compress.artifacts import Artifact, file_digest

    if model.endswith(".onnx") or model.startswith("onnx:"):
        path = Path(model.removeprefix("onnx:"))
        if not path.is_file():
            raise InputError(f"model file {str(path)!r} does not exist; check the path")
        shape = input_shape or _onnx_sample_shape(path)
        return Artifact(kind="onnx", digest=file_digest(path), path=path, lineage=[path.name]), shape
    scheme = model.partition(":")[0]
    if scheme not in ("torchvision", "python"):
        raise InputError(
            f"model {model!r}: give an .onnx file, or a torch model source torchvision:NAME or "
            "python:FILE.py:FACTORY (with --input-shape)"
        )
    if input_shape is None:
        raise InputError(f"model {model!r}: a torch model needs --input-shape, e.g. 3,224,224")
    from compress.sources.models import ModelSpec, load_state_dict_checked, read_state_dict

    spec = ModelSpec(model, dict(kwargs or {}), Path("."))
    module = spec.build()
    if checkpoint is not None:
        load_state_dict_checked(module, read_state_dict(Path(checkpoint)), str(checkpoint))
    art = Artifact(kind="torch", digest="cli", module=module.eval(), model_spec=spec, lineage=[model])
    return art, input_shape


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


def profile_model(artifact, input_shape, targets, batch_sizes: list[int], *, plan: dict,
                  memory: bool = True, requests_per_day: float | None = None, seed: int = 0,
                  log=print) -> dict:
    """Time ``artifact`` on every target that can run it (targets on one device interleaved),
    measure memory and cost. Returns ``{"model": ..., "targets": {name: {...}}}``."""
    from compress.errors import CompressError
    from compress.measure.cost import monthly_cost_usd, usd_per_1m
    from compress.measure.energy import meter_device
    from compress.measure.memory import measure_memory
    from compress.measure.timing import check_batch_sizes, time_sessions
    from compress.runtimes.base import RUNTIMES

    batch_sizes = check_batch_sizes(batch_sizes)
    rng = np.random.default_rng(seed)
    batches = {bs: {PIXEL_VALUES: rng.standard_normal((bs, *input_shape)).astype(np.float32)}
               for bs in batch_sizes}
    out: dict = {"model": " → ".join(artifact.lineage), "kind": artifact.kind,
                 "size_bytes": artifact.size_bytes, "input_shape": list(input_shape), "targets": {}}
    by_device: dict[str, dict] = {}
    for t in targets:
        entry = out["targets"][t.name] = {"target": t.model_dump(mode="json")}
        runtime = RUNTIMES.get(t.runtime)
        if artifact.kind not in runtime.accepts:
            entry["not_profiled"] = f"{t.runtime} cannot run a {artifact.kind} model"
            continue
        try:
            by_device.setdefault(meter_device(t), {})[t.name] = runtime.load(artifact, t)
        except CompressError as err:
            entry["not_profiled"] = str(err)
    for device, sessions in by_device.items():
        log(f"profiling on {', '.join(sessions)} ({device}), interleaved ...")
        timings = time_sessions(sessions, lambda bs: batches[bs], batch_sizes, device=device, **plan)
        for name, per_bs in timings.items():
            entry = out["targets"][name]
            entry["runtime_info"] = sessions[name].info
            sessions[name].close()
            t = next(t for t in targets if t.name == name)
            for m in per_bs.values():
                if t.usd_per_hour is not None:
                    m["usd_per_1m"] = usd_per_1m(m["throughput_per_s"], t.usd_per_hour)
                    if requests_per_day is not None:
                        m["monthly_usd"] = monthly_cost_usd(requests_per_day, m["throughput_per_s"],
                                                            t.usd_per_hour)
            entry["latency"] = {str(bs): m for bs, m in per_bs.items()}
            if memory:
                entry["memory"] = measure_memory(artifact, t, input_shape, batch_sizes)
    return out


def render(result: dict, requests_per_day: float | None, max_cv: float) -> str:
    from compress.report.serving import _notes, serving_table

    model = result["model"]
    parts = [f"# compress profile: {model}"]
    for name, entry in result["targets"].items():
        t = entry["target"]
        parts.append(f"## Target `{name}` ({t['runtime']} on {t['device']})")
        fake = {"recipe": {"profile": {"requests_per_day": requests_per_day, "max_cv": max_cv}}}
        rows = [(Path(model).name, {k: {name: entry[k]} for k in ("latency", "memory", "not_profiled")
                                    if k in entry})]
        table = serving_table(fake, name, rows)
        if table:
            parts.append(table)
        notes = _notes(fake, name, rows)
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"
