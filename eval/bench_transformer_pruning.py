"""Does removing attention heads and FFN neurons make a BERT faster in ONNX Runtime? Latency only.

A BERT of 4 layers x 256 (4 heads, FFN 1024, eager attention) is built from its config (random
weights: latency does not depend on them), cut by compress's prune step code (``granularity: heads``,
L2 magnitude: ``head_ratio`` of every layer's heads and ``ffn_ratio`` of every FFN's neurons), exported
to ONNX fp32 by the export step's code, plain and with ONNX Runtime's transformer fusions (the export
step's default for text), and all four files are timed with compress's profiler (ORT CPU, 2 threads,
interleaved rounds) at batch 32 x 128 tokens. Prints params, MACs and the measured latency side by
side, and the fused ops of each.

    python eval/bench_transformer_pruning.py [--head-ratio 0.5] [--ffn-ratio 0.5] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BATCH, TOKENS = 32, 128


def fused_ops(path: Path, threads: int) -> Counter:
    """Op types of the graph ONNX Runtime actually runs (after its optimizer)."""
    import onnx
    import onnxruntime as ort

    from compress.runtimes.onnxruntime import make_session_options

    so = make_session_options(threads, "all")
    so.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def main() -> int:
    import torch
    from torch import nn
    from transformers import BertConfig, BertForSequenceClassification

    from compress.measure.timing import time_sessions
    from compress.pruning.channels import count_macs_params
    from compress.pruning.transformers import HeadCut, attention_modules
    from compress.runtimes.onnxruntime import OrtSession
    from compress.sources.inputs import InputSpec
    from compress.steps.export import (
        FUSED_OPS,
        export_onnx,
        onnx_dynamic_axes,
        transformer_fusions,
        verify_onnx,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-ratio", type=float, default=0.5)
    ap.add_argument("--ffn-ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    class Wrapped(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def forward(self, **inputs):
            return self.model(**inputs).logits

    spec = InputSpec.text(["input_ids", "attention_mask", "token_type_ids"], TOKENS, 30522)

    def build():
        torch.manual_seed(0)
        cfg = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                         num_labels=2, attn_implementation="eager")
        return Wrapped(BertForSequenceClassification(cfg)).eval()

    models = {"unpruned": build(), "pruned": build()}
    HeadCut(models["pruned"], head_ratio=args.head_ratio, ffn_ratio=args.ffn_ratio, importance="l2",
            input_spec=spec, num_classes=2, ignore=[], round_to=None).cut_copy(models["pruned"], 0.0)
    batch = spec.example(BATCH, fill="normal", seed=0)
    check = spec.example(4, fill="normal", seed=1)
    check["attention_mask"][:, TOKENS // 2:] = 0  # padded rows too
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-tprune-") as tmp:
        paths = {}
        for name, m in models.items():
            macs, params = count_macs_params(m, spec)
            for fused in (False, True):
                label = f"{name}, {'fused' if fused else 'plain'}"
                path = paths[label] = Path(tmp) / f"{name}-{int(fused)}.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export_onnx(m, spec.example(2), path, opset=17, dynamic_axes=onnx_dynamic_axes(spec, True))
                    err = verify_onnx(m, path, [check], 1e-3)
                    facts = transformer_fusions(m, path, spec, [check], 1e-3, lambda _m: None) if fused else {}
                rows[label] = {"macs": macs, "params": params, "err": facts.get("max_rel_error", err),
                               "fused": fused_ops(path, args.threads),
                               "heads": sum(a.heads for a in attention_modules(m)), "ffn": m.config.intermediate_size}
        sessions = {n: OrtSession(str(p), "cpu", args.threads, "all", {}) for n, p in paths.items()}
        out = time_sessions(sessions, lambda _bs: batch, [BATCH], rounds=args.rounds, min_round_s=0.5)
        for s in sessions.values():
            s.close()
    host = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"```\n{command}\n```\n{host}; {load}\n")
    print(f"| model | heads | FFN | params | MACs/sample ({TOKENS} tok) | MACs kept | ops ORT runs | "
          f"max rel. error vs torch | ORT p50 b{BATCH} | latency kept | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        ref = label.replace("pruned", "unpruned") if label.startswith("pruned") else label
        p50, p50_ref = out[label][BATCH]["p50_ms"], out[ref][BATCH]["p50_ms"]
        ops = ", ".join(f"{op} {n}" for op, n in sorted(r["fused"].items()) if op in FUSED_OPS) or "no fused ops"
        print(f"| {label} | {r['heads']} | {r['ffn']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | "
              f"{r['macs'] / rows[ref]['macs']:.1%} | {ops} | {r['err']:.1e} | {p50:.1f} ms | "
              f"{p50 / p50_ref:.1%} | {p50_ref / p50:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
