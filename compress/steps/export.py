"""Export a torch model to ONNX, and prove the file computes what the module computes."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.sources.inputs import (
    InputSpec,
    as_input_spec,
    bind,
    call_module,
    example_inputs,
    to_torch,
)
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
    optimize: Literal["auto", "transformer", "none"] = Field(
        "none", description="transformer: ONNX Runtime's transformer optimizer fuses attention, "
        "LayerNorm and GELU subgraphs into its own ops (Attention, SkipLayerNormalization, ...; "
        "ONNX Runtime only: TensorRT, OpenVINO and NNCF cannot read them), verified again; auto: "
        "on for text models exported to onnx. Off by default: static int8 and NNCF cannot use the fused "
        "ops, and dynamic int8 was no faster fused (docs/results/transformers-int8.md)"
    )

    @model_validator(mode="after")
    def _fusions_need_onnx(self):
        if self.optimize == "transformer" and self.format == "openvino":
            raise ValueError("optimize: transformer writes ONNX Runtime's own fused ops, which "
                             "OpenVINO cannot read; use optimize: none (or auto) with format: openvino")
        return self


#: what ONNX Runtime's optimizer can fuse, per op (``get_fused_operator_statistics``)
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
             "LayerNormalization", "Gelu", "FastGelu", "BiasGelu", "GemmFastGelu")


def onnx_dynamic_axes(input_spec: InputSpec, dynamic_batch: bool) -> dict | None:
    """ONNX dynamic axes: the batch (unless ``dynamic_batch`` is off) and a text input's sequence
    (always: text batches are padded to their own longest sample); ``logits`` follows the batch."""
    axes = {n: {a: label for a, label in ax.items() if dynamic_batch or a != 0}
            for n, ax in input_spec.dynamic_axes().items()}
    if dynamic_batch:
        axes["logits"] = {0: "batch"}
    axes = {n: ax for n, ax in axes.items() if ax}
    return axes or None


def _keywords(inner, names: list[str]):
    """A module taking ``names`` positionally and calling ``inner`` with them as keywords."""
    import torch

    class Keywords(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return call_module(self.inner, dict(zip(names, args, strict=True)))

    return Keywords().eval()


def export_onnx(module, example, path, *, opset: int, dynamic_batch: bool = True,
                dynamic_axes: dict | None = None) -> None:
    """Export with the data's input names, in the spec's order: ``example`` is an InputSpec, a
    mapping of named example arrays, or one image sample's shape. ``dynamic_axes`` defaults to the
    batch axis (``dynamic_batch``), and for an InputSpec to its own axes (text: batch and sequence)."""
    import torch

    if not isinstance(example, Mapping):
        spec = as_input_spec(example)
        example = example_inputs(spec, batch=2)
        if dynamic_axes is None:
            dynamic_axes = onnx_dynamic_axes(spec, dynamic_batch)
    module = module.eval()
    names = list(example)
    tensors = to_torch(example)
    # one input goes positionally (image classifiers); several as keywords, through an adapter that
    # takes them positionally (the tracer drops a trailing kwargs dict for a forward(**inputs))
    args = tuple(tensors[n] for n in names)
    if len(names) > 1:
        module = _keywords(module, names)
    if dynamic_axes is not None:
        axes = dynamic_axes
    else:
        axes = {**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # the legacy exporter announces its deprecation; its output is what we verify below
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=names, output_names=["logits"],
            opset_version=opset, dynamic_axes=axes, dynamo=False, do_constant_folding=True,
        )


def verify_onnx(module, path, inputs, atol: float, what: str = "the exported ONNX model") -> float:
    """Max |ORT - torch| over ``inputs`` (one batch of named arrays, or several: text batches of
    different lengths), relative to the logits' range; raises above ``atol``."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    err = 0.0
    for batch in [inputs] if isinstance(inputs, Mapping) else inputs:
        got = sess.run(None, bind(batch, names, what))[0]
        with torch.inference_mode():
            want = call_module(module.eval(), to_torch(batch)).numpy()
        scale = max(1e-6, float(np.abs(want).max()))
        err = max(err, float(np.abs(got - want).max()) / scale)
    if err > atol:
        raise StepError(
            f"{what} disagrees with torch: max relative error {err:.2e} > atol "
            f"{atol:g}; the model may use an op the exporter translates differently"
        )
    return err


def optimizer_settings(module, input_spec: InputSpec) -> dict:
    """``optimize_model`` keywords for this model: ``bert`` for text (``vit`` for images) unless the
    HF config names a type ONNX Runtime knows; heads and width from the config (0: detected)."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    config = getattr(module, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_TYPES:
        model_type = "bert" if input_spec.kind == "text" else "vit"
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    from compress.pruning.transformers import attention_modules

    shapes = {(a.heads, a.head_size) for a in attention_modules(module)}
    if len(shapes) == 1:
        # the attention width, which after head pruning is less than the model's: ONNX Runtime fuses
        # Attention only when hidden_size = num_heads x head size (measured: 0 of 2 layers otherwise)
        heads, size = shapes.pop()
        hidden = heads * size
    return {"model_type": model_type, "num_heads": heads, "hidden_size": hidden}


def fuse_transformer(src, out, settings: dict) -> dict[str, int]:
    """Run ONNX Runtime's transformer optimizer on ``src`` into ``out``; the fused ops' counts."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    # its fusion logs are INFO/WARNING chatter ("word_embedding_table size ..."; after head pruning,
    # "Input hidden size (128) is not same as weight matrix dimension of q,k,v (256)", which is the
    # point: the attention is narrower than the model); the counts say it
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    attention_logger = logging.getLogger("fusion_attention")  # ORT names its fusion loggers by module
    attention_level = attention_logger.level
    attention_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = optimize_model(str(src), **settings)
            stats = model.get_fused_operator_statistics()
            model.save_model_to_file(str(out))
    finally:
        logger.setLevel(level)
        attention_logger.setLevel(attention_level)
    return {op: int(stats.get(op, 0)) for op in FUSED_OPS if stats.get(op)}


def transformer_fusions(module, path, input_spec: InputSpec, batches, atol: float, log) -> dict:
    """Fuse ``path`` in place with ONNX Runtime's transformer optimizer and verify it again on
    ``batches``. Returns the facts: settings, fused op counts, the layers attention could fuse in,
    the error after fusion. A fused model that disagrees with torch raises."""
    settings = optimizer_settings(module, input_spec)
    fused_path = path.with_name("model.fused.onnx")
    try:
        fused = fuse_transformer(path, fused_path, settings)
    except Exception as err:
        raise StepError(f"ONNX Runtime's transformer optimizer failed: {type(err).__name__}: {err}; "
                        "set optimize: none") from err
    config = getattr(module, "config", None)
    facts = {**settings, "fused": fused,
             "attention_layers": getattr(config, "num_hidden_layers", None),
             "attention_implementation": getattr(config, "_attn_implementation", None)}
    if batches:
        facts["max_rel_error"] = verify_onnx(module, fused_path, batches, atol,
                                             what="the ONNX model after transformer fusions")
    fused_path.replace(path)
    log(f"export: ONNX Runtime fused {describe_fusions(facts)}")
    return facts


def describe_fusions(facts: dict) -> str:
    """One line: which fusions happened, attention out of the model's layers when known."""
    fused = dict(facts.get("fused") or {})
    layers = facts.get("attention_layers")
    attention = fused.pop("Attention", 0) + fused.pop("MultiHeadAttention", 0)
    parts = [f"Attention {attention}" + (f" of {layers} layers" if layers else "")]
    parts += [f"{op} {n}" for op, n in fused.items()]
    return ", ".join(parts)


def verification_batches(split, input_spec: InputSpec, dynamic_batch: bool) -> list[dict[str, np.ndarray]]:
    """Real samples to compare ONNX with torch on. Images: one batch (up to 64; 2 for a fixed
    batch). Text: the shortest and the longest of the first 64 samples as two batches of different
    sizes, each padded to its own longest sample, so both dynamic axes are exercised."""
    n = min(len(split), 64)
    if input_spec.kind != "text":
        return [split.inputs(np.arange(min(n, 64 if dynamic_batch else 2)))]
    idx = np.arange(n)
    if hasattr(split, "lengths"):
        idx = idx[np.argsort(np.asarray(split.lengths())[:n], kind="stable")]
    small, large = (2, 2) if not dynamic_batch else (max(1, min(8, n // 4)), max(1, min(16, n // 2)))
    return [split.inputs(np.sort(idx[:small])), split.inputs(np.sort(idx[-large:]))]


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
    """Export to ONNX with dynamic batch (and, for text, sequence) axes, verified against torch
    on real inputs."""
    module = art.load_module()
    path = ctx.workdir / "model.onnx"
    try:
        export_onnx(module, ctx.input_spec, path, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch)
    except Exception as err:
        raise StepError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    meta = dict(art.meta)
    batches = None
    if cfg.verify:
        role = "calibration" if "calibration" in ctx.splits else "train"
        batches = verification_batches(ctx.data(role), ctx.input_spec, cfg.dynamic_batch)
        meta["export_max_rel_error"] = verify_onnx(module, path, batches, cfg.atol)
        if ctx.input_spec.kind == "text":
            meta["export_verified_shapes"] = [list(next(iter(b.values())).shape) for b in batches]
    if cfg.optimize == "transformer" or (cfg.optimize == "auto" and ctx.input_spec.kind == "text"
                                         and cfg.format == "onnx"):
        meta["transformer_fusions"] = transformer_fusions(
            module, path, ctx.input_spec, batches, cfg.atol, ctx.log)
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
