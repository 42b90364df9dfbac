"""NNCF post-training int8 quantization, the ``quantize`` step's ``backend: nncf``.

Output is OpenVINO IR (run by the openvino runtime) or ONNX with QDQ nodes (run by ONNX Runtime or
OpenVINO). Calibration draws from the calibration split; the accuracy-aware mode
(``nncf.quantize_with_accuracy_control``) validates on the *tuning* split, so held-out data stays
untouched for the final verdict.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from compress.errors import MissingDependency, StepError
from compress.sources.inputs import bind
from compress.steps.base import StepConfig, StepContext


class IgnoredScopeConfig(StepConfig):
    names: list[str] = Field(default_factory=list, description="Node names kept in float")
    types: list[str] = Field(default_factory=list, description="Op types kept in float, e.g. [Add]")
    patterns: list[str] = Field(default_factory=list, description="Regular expressions on node names")


class AccuracyControlConfig(StepConfig):
    max_drop: float = Field(0.5, gt=0, description="Allowed top-1 drop on the tuning split, in points")


class NNCFConfig(StepConfig):
    preset: Literal["performance", "mixed"] | None = Field(
        None, description="performance: symmetric activations; mixed: asymmetric activations; "
        "unset: NNCF's default for the model type (transformer: mixed; otherwise performance)"
    )
    subset_size: int = Field(300, ge=1, description="Calibration images (one per NNCF sample)")
    fast_bias_correction: bool = True
    output: Literal["openvino", "onnx"] = Field("openvino", description="OpenVINO IR, or ONNX with QDQ")
    model_type: Literal["auto", "transformer", "cnn"] = Field(
        "auto", description="transformer: NNCF's ModelType.TRANSFORMER (Add, MVN/LayerNorm, "
        "reductions and attention outputs stay float; SmoothQuant on MatMul inputs); cnn: NNCF's "
        "default; auto: transformer when the graph has attention (a MatMul of two activations and "
        "a Softmax)",
    )
    ignored_scope: IgnoredScopeConfig = Field(default_factory=IgnoredScopeConfig)
    accuracy_control: AccuracyControlConfig | None = Field(
        None, description="Revert layers to float until the drop on the tuning split is within max_drop"
    )


def _imports():
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise MissingDependency("nncf", "openvino", "Quantization with backend: nncf") from None
    return nncf, ov


def quantize_nncf(src_path, kind: str, cfg: NNCFConfig, ctx: StepContext, seed: int):
    """Quantize the model at ``src_path`` (onnx or openvino) -> (output path, output kind, meta)."""
    nncf, ov = _imports()
    if kind == "onnx":
        from compress.quantization.ort import contrib_ops

        fused = contrib_ops(src_path)
        if fused:
            raise StepError(
                f"backend nncf reads the model with OpenVINO, which cannot run ONNX Runtime's fused "
                f"ops ({', '.join(fused)}): export with optimize: none for the NNCF variant"
            )
    calib = ctx.data("calibration")
    rng = np.random.default_rng(seed)
    n = min(cfg.subset_size, len(calib))
    idx = np.sort(rng.choice(len(calib), size=n, replace=False))
    items = calib.stream(1, idx)  # one sample per item, read when NNCF iterates
    scope = cfg.ignored_scope
    ignored = None
    if scope.names or scope.types or scope.patterns:
        ignored = nncf.IgnoredScope(names=scope.names, types=scope.types, patterns=scope.patterns,
                                    validate=False)
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE,
              "mixed": nncf.QuantizationPreset.MIXED, None: None}[cfg.preset]
    transformer = (cfg.model_type == "transformer"
                   or (cfg.model_type == "auto" and has_attention(src_path, kind)))
    model_type = nncf.ModelType.TRANSFORMER if transformer else None
    if cfg.output == "onnx":
        if kind != "onnx":
            raise StepError("nncf output: onnx needs an ONNX input model; export with format: onnx first")
        if cfg.accuracy_control is not None:
            raise StepError("nncf accuracy_control is supported here with output: openvino only")
        import onnx

        model = onnx.load(str(src_path))
        inits = {i.name for i in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in inits]
    else:
        model = ov.Core().read_model(str(src_path))
        names = [i.get_any_name() for i in model.inputs]
    dataset = nncf.Dataset(items, lambda x: bind(x, names, "the model being quantized"))
    preset_name = cfg.preset or ("mixed" if transformer else "performance")
    meta: dict = {"nncf": nncf.__version__, "preset": preset_name, "calibration_samples": n,
                  "model_type": "transformer" if transformer else "default"}
    from compress.runtimes.openvino import own_signal_stack

    try:
        if cfg.accuracy_control is None:
            with own_signal_stack():  # it may run the model with OpenVINO on this thread
                q = nncf.quantize(model, dataset, preset=preset, subset_size=n, model_type=model_type,
                                  fast_bias_correction=cfg.fast_bias_correction, ignored_scope=ignored)
        else:
            tuning = ctx.data("tuning")  # declared as a role: validate refuses data without it
            val_items = tuning.stream(32, labels=True)

            def validate(compiled, data) -> float:
                correct = total = 0
                compiled_names = [i.get_any_name() for i in compiled.inputs]
                for x, y in data:
                    pred = np.asarray(compiled(bind(x, compiled_names, "the quantized model"))[0]).argmax(axis=1)
                    correct += int((pred == y).sum())
                    total += len(y)
                return correct / max(1, total)

            with own_signal_stack():  # it compiles models with OpenVINO on this thread
                q = nncf.quantize_with_accuracy_control(
                    model, dataset, nncf.Dataset(val_items), validate,
                    max_drop=cfg.accuracy_control.max_drop / 100.0, preset=preset, subset_size=n,
                    model_type=model_type,
                    fast_bias_correction=cfg.fast_bias_correction, ignored_scope=ignored,
                )
            meta["accuracy_control"] = {"split": "tuning", "n": len(tuning),
                                        "max_drop_points": cfg.accuracy_control.max_drop}
    except StepError:
        raise
    except Exception as err:
        raise StepError(f"NNCF quantization failed: {type(err).__name__}: {err}") from err
    if cfg.output == "onnx":
        import onnx

        out = ctx.workdir / "model.onnx"
        onnx.save(q, str(out))
        return out, "onnx", meta
    out = ctx.workdir / "model.xml"
    ov.save_model(q, str(out), compress_to_fp16=False)
    counts: dict[str, int] = {}
    for op in q.get_ordered_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    meta["fake_quantize_nodes"] = counts.get("FakeQuantize", 0)
    meta["convolutions"] = counts.get("Convolution", 0) + counts.get("GroupConvolution", 0)
    meta["matmuls"] = counts.get("MatMul", 0)
    return out, "openvino", meta


def has_attention(path, kind: str) -> bool:
    """Whether the model at ``path`` (onnx or openvino) has attention: NNCF's transformer type."""
    if kind == "onnx":
        from compress.quantization.ort import is_transformer

        return is_transformer(path)
    _, ov = _imports()
    ops = ov.Core().read_model(str(path)).get_ordered_ops()
    if not any(op.get_type_name() == "Softmax" for op in ops):
        return False
    # a MatMul neither of whose inputs is a (possibly converted) constant
    def constant(node) -> bool:
        while node.get_type_name() in ("Convert", "Reshape", "Transpose") and node.inputs():
            node = node.input_value(0).get_node()
        return node.get_type_name() == "Constant"

    return any(op.get_type_name() == "MatMul" and not any(
        constant(op.input_value(i).get_node()) for i in range(2)) for op in ops)
