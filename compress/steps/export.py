"""Export a torch model to ONNX, and prove the file computes what the module computes."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.sources.inputs import as_input_spec, bind, call_module, example_inputs, to_torch
from compress.steps.base import StepConfig, StepContext, register_step

# Opset 17: every ORT >= 1.14 and TensorRT >= 8.6 runs it, and the legacy exporter (which writes a
# single self-contained file, unlike the dynamo exporter's external .onnx.data) supports it fully.
DEFAULT_OPSET = 17


class ExportConfig(StepConfig):
    format: Literal["onnx", "openvino"] = Field(
        "onnx", description="onnx, or openvino (OpenVINO IR, written beside the verified ONNX file)"
    )
    opset: int = Field(DEFAULT_OPSET, ge=13, le=21)
    dynamic_batch: bool = Field(True, description="Batch axis left dynamic, so one file serves every batch size")
    verify: bool = Field(True, description="Compare ONNX Runtime's outputs with torch's on calibration inputs")
    atol: float = Field(1e-3, gt=0, description="Largest allowed |onnx - torch| relative to the logits' range")


def export_onnx(module, example, path, *, opset: int, dynamic_batch: bool,
                dynamic_axes: dict[str, dict[int, str]] | None = None) -> None:
    """Export with the data's input names: ``example`` is a mapping of named example arrays, or one
    sample's shape (an image model: its one input is ``pixel_values``). ``dynamic_axes`` (an
    InputSpec's: batch, and sequence for text) replaces the batch axis alone."""
    import torch

    if not isinstance(example, Mapping):
        example = example_inputs(tuple(example), batch=2)
    module = module.eval()
    names = list(example)
    tensors = to_torch(example)
    # one input goes positionally (image classifiers); several as keywords (a trailing dict)
    args = (tensors[names[0]],) if len(names) == 1 else (tensors,)
    inputs_axes = dynamic_axes or {n: {0: "batch"} for n in names}
    axes = {**inputs_axes, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # the legacy exporter announces its deprecation; its output is what we verify below
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=names, output_names=["logits"],
            opset_version=opset, dynamic_axes=axes, dynamo=False, do_constant_folding=True,
        )


def verify_onnx(module, path, inputs: Mapping[str, np.ndarray], atol: float) -> float:
    """Max |ORT - torch| over ``inputs``, relative to the logits' range; raises above ``atol``."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, bind(inputs, [i.name for i in sess.get_inputs()], "the exported model"))[0]
    with torch.inference_mode():
        want = call_module(module.eval(), to_torch(inputs)).numpy()
    scale = max(1e-6, float(np.abs(want).max()))
    err = float(np.abs(got - want).max()) / scale
    if err > atol:
        raise StepError(
            f"the exported ONNX model disagrees with torch: max relative error {err:.2e} > atol "
            f"{atol:g}; the model may use an op the exporter translates differently"
        )
    return err


def openvino_fingerprint() -> dict:
    """What an OpenVINO IR was made with: a mismatch later explains a behaviour change."""
    from compress.run.environment import cpu_info
    from compress.runtimes.openvino import import_openvino

    ov = import_openvino()
    cpu = cpu_info()
    return {"openvino": ov.__version__, "cpu": cpu.get("model"), "cpu_flags": cpu.get("flags", [])}


def convert_to_openvino(onnx_file, xml_path) -> None:
    from compress.runtimes.openvino import import_openvino

    ov = import_openvino()
    try:
        model = ov.convert_model(str(onnx_file))
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
    except Exception as err:
        raise StepError(f"OpenVINO could not convert the ONNX model: {type(err).__name__}: {err}") from err


def _check(cfg: ExportConfig, recipe) -> list[str]:
    """verify runs both models on calibration inputs, or train ones when there is no calibration split."""
    if cfg.verify and not {"calibration", "train"} & recipe.data.roles():
        return ["verify compares ONNX Runtime with torch on calibration (or train) inputs, and the "
                "data has neither; set data.split.calibration (e.g. 0.1) or verify: false"]
    return []


@register_step(
    "export", config=ExportConfig, accepts={"torch"},
    produces=lambda cfg, _kind: "openvino" if cfg.format == "openvino" else "onnx",
    check=_check, example={"format": "onnx", "opset": 17},
)
def apply(art: Artifact, cfg: ExportConfig, ctx: StepContext) -> Artifact:
    """Export to ONNX with a dynamic batch axis, verified against torch on real inputs."""
    module = art.load_module()
    path = ctx.workdir / "model.onnx"
    try:
        spec = as_input_spec(ctx.input_shape)
        export_onnx(module, spec.example(batch=2), path, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch,
                    dynamic_axes=spec.dynamic_axes())
    except Exception as err:
        raise StepError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    meta = dict(art.meta)
    if cfg.verify:
        role = "calibration" if "calibration" in ctx.splits else "train"
        split = ctx.data(role)
        n = min(len(split), 64)
        inputs = split.inputs(np.arange(min(n, 64 if cfg.dynamic_batch else 2)))
        meta["export_max_rel_error"] = verify_onnx(module, path, inputs, cfg.atol)
    meta["opset"] = cfg.opset
    if cfg.format == "openvino":
        import json

        xml = ctx.workdir / "model.xml"
        convert_to_openvino(path, xml)
        meta["openvino_fingerprint"] = openvino_fingerprint()
        (ctx.workdir / "openvino_fingerprint.json").write_text(json.dumps(meta["openvino_fingerprint"], indent=2))
        meta["extra_files"] = ["model.onnx", "openvino_fingerprint.json"]
        return Artifact(
            kind="openvino", path=xml,
            lineage=[*art.lineage, "export(openvino IR)"], meta=meta,
        )
    return Artifact(
        kind="onnx", path=path,
        lineage=[*art.lineage, "export(onnx)"], meta=meta,
    )
