"""What actually runs: count the operators of an ONNX model after ONNX Runtime optimised it.

A QDQ model declares int8 intent; whether a convolution *runs* in int8 depends on ORT fusing its
DequantizeLinear -> Conv -> QuantizeLinear pattern into QLinearConv. With int8 activations ORT on
x86 fuses only some convolutions, and the "int8" model is slower than fp32. This module reads the
graph ORT will execute, so the report can say "QLinearConv 20/20" instead of assuming.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Op families and the names their members have in the graph ORT executes (int8 or float).
# MatMulNBits (4-bit weights) counts as low-bit MatMul: its compute is no longer float.
INT8_FORMS = {
    "Conv": {"QLinearConv", "ConvInteger"},
    "MatMul/Gemm": {"QGemm", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
                    "MatMulIntegerToFloat", "MatMulNBits"},
    "Attention": {"QAttention"},
    "Add": {"QLinearAdd"},
    "GlobalAveragePool": {"QLinearGlobalAveragePool"},
}
FLOAT_FORMS = {
    "Conv": {"Conv", "FusedConv", "NchwcConv"},
    "MatMul/Gemm": {"MatMul", "FusedMatMul", "Gemm", "FusedGemm"},
    "Attention": {"Attention", "MultiHeadAttention"},
    "Add": {"Add"},
    "GlobalAveragePool": {"GlobalAveragePool"},
}
COMPUTE_FAMILIES = ("Conv", "MatMul/Gemm", "Attention")


@dataclass
class Coverage:
    """Per compute op family: how many run in int8 out of how many exist after optimisation."""

    int8: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def compute_fraction(self) -> float | None:
        """Share of Conv/MatMul/Gemm/Attention running in int8 (the ops that carry the MACs)."""
        keys = [k for k in COMPUTE_FAMILIES if self.total.get(k)]
        tot = sum(self.total[k] for k in keys)
        return None if tot == 0 else sum(self.int8.get(k, 0) for k in keys) / tot

    def summary(self) -> str:
        parts = [f"{k} {self.int8.get(k, 0)}/{n}" for k, n in self.total.items() if n]
        return ", ".join(parts) if parts else "no compute ops"

    def to_dict(self) -> dict:
        return {
            "int8": self.int8, "total": self.total, "compute_fraction": self.compute_fraction,
            "summary": self.summary(), "op_counts": self.op_counts,
        }


def optimized_op_counts(path: Path, threads: int = 1) -> Counter:
    """Op types of the graph ORT executes on the CPU EP (after all graph optimisations)."""
    return Counter(op for op, _name in optimized_nodes(path, threads))


def int8_node_names(path: Path) -> set[str]:
    """Names of the source nodes that ORT runs as int8 kernels (fused names lose ``_token_N``).

    A node left float by the quantizer can still run in int8: when its input comes from a
    DequantizeLinear and its output goes to a QuantizeLinear, ORT's WeightBiasQuantization
    transformer quantizes its float weights at load time and fuses it into QLinearConv.
    """
    int8_ops = set().union(*INT8_FORMS.values())
    return {re.sub(r"_token_\d+$", "", name) for op, name in optimized_nodes(path) if op in int8_ops}


def optimized_nodes(path: Path, threads: int = 1) -> list[tuple[str, str]]:
    """(op_type, name) of the graph ORT executes on the CPU EP (after all graph optimisations)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(out)
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        model = onnx.load(str(out), load_external_data=False)
    return [(n.op_type, n.name) for n in model.graph.node]


def int8_coverage(path: Path) -> Coverage:
    counts = optimized_op_counts(path)
    cov = Coverage(op_counts=dict(sorted(counts.items())))
    for family in INT8_FORMS:
        q = sum(counts.get(op, 0) for op in INT8_FORMS[family])
        f = sum(counts.get(op, 0) for op in FLOAT_FORMS[family])
        if q or f:
            cov.int8[family] = q
            cov.total[family] = q + f
    return cov


def source_op_counts(path: Path) -> Counter:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(n.op_type for n in model.graph.node)
