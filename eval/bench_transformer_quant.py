"""int8 for a BERT on the CPU: compress's quantize step against the paths a user would take instead,
timed interleaved in one session (the issue's reference set: ORT fp32, ORT ``quantize_dynamic``
with defaults, OpenVINO fp32, plain NNCF int8).

The model is a BERT of 4 layers x 256 (4 heads, FFN 1024) built from its config with random
weights and eager attention, exported with dynamic batch and sequence axes: speed depends on the
shapes, not on the weights, so no data is needed. Calibration uses random token ids of random
lengths (16..128, padded per batch). Accuracy is not measured here (random weights): the logits'
largest difference from ORT fp32 on the timing batch is printed as a sanity check only.

    python eval/bench_transformer_quant.py [--threads 2] [--batch 32] [--tokens 128] [--rounds 7]

Variants: ort-fp32, ort-dynamic-defaults (quantize_dynamic, every argument default: what
Optimum's dynamic quantization does), compress-dynamic (quantize mode dynamic, target auto),
compress-dynamic-weights-only (activation_matmuls: false), compress-static (QDQ, target auto),
compress-static-s8s8 (int8 symmetric activations), openvino-fp32, nncf-int8-plain (nncf.quantize
defaults), compress-nncf (backend nncf: model type transformer, read from the graph); and, on the
graph the export step writes for a text model by default (ONNX Runtime's transformer optimizer:
fused Attention, SkipLayerNormalization, BiasGelu): ort-fp32-fused, compress-dynamic-fused
(QAttention), compress-static-fused. Speed-ups are ort-fp32's median over the variant's.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see compress/cli/app.py: busy-waiting threads

import numpy as np  # noqa: E402

VOCAB = 30522


class RandomTokens:
    """A calibration split of random token ids, ``n`` samples of 16..``max_len`` tokens, padded per batch."""

    def __init__(self, n: int, max_len: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self._lengths = rng.integers(16, max_len + 1, n)
        self._seed = seed
        self.labels = np.zeros(n, np.int64)

    def __len__(self) -> int:
        return len(self._lengths)

    def lengths(self) -> np.ndarray:
        return self._lengths

    def inputs(self, idx) -> dict[str, np.ndarray]:
        idx = np.arange(len(self))[idx]
        width = int(self._lengths[idx].max())
        rng = np.random.default_rng(self._seed + int(idx[0]))
        ids = rng.integers(1000, VOCAB, (len(idx), width), dtype=np.int64)
        mask = (np.arange(width)[None, :] < self._lengths[idx][:, None]).astype(np.int64)
        return {"input_ids": ids * mask, "attention_mask": mask}

    def stream(self, batch_size: int, idx=None, *, labels: bool = False):
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        split = self

        class Stream:
            def __len__(self):
                return len(batches)

            def __iter__(self):
                for rows in batches:
                    yield (split.inputs(rows), split.labels[rows]) if labels else split.inputs(rows)

        return Stream()

    def sample_hashes(self) -> list[str]:
        return [str(i) for i in range(len(self))]


def export_bert(path: Path, layers: int, hidden: int) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                                  num_labels=2, attn_implementation="eager")
    bert = transformers.BertForSequenceClassification(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(), example, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}})


def build_variants(fp32: Path, work: Path, heads: int, hidden: int, only: set[str] | None
                   ) -> dict[str, tuple[Path, str]]:
    """name -> (model path, runtime); ``only``: these names (and ort-fp32)."""
    import nncf
    import openvino as ov
    from onnxruntime.quantization import quantize_dynamic

    from compress.artifacts import Artifact
    from compress.quantization.coverage import int8_coverage
    from compress.sources.data import Splits
    from compress.sources.inputs import InputSpec
    from compress.steps.base import StepContext
    from compress.steps.export import fuse_transformer
    from compress.steps.quantize import QuantizeConfig, apply

    def wanted(name: str) -> bool:
        return only is None or name in only

    splits = Splits(calibration=RandomTokens(256, 128, 1))
    out: dict[str, tuple[Path, str]] = {"ort-fp32": (fp32, "onnxruntime")}
    if wanted("ort-dynamic-defaults"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32), str(work / "ort-dynamic.onnx"))
        out["ort-dynamic-defaults"] = (work / "ort-dynamic.onnx", "onnxruntime")
    # what the export step writes for a text model by default (optimize: auto): fused ops
    fused = work / "bert-fused.onnx"
    counts = fuse_transformer(fp32, fused, {"model_type": "bert", "num_heads": heads, "hidden_size": hidden})
    print(f"fused (export optimize: auto): {counts}")
    if wanted("ort-fp32-fused"):
        out["ort-fp32-fused"] = (fused, "onnxruntime")
    static = {"mode": "static", "calibration": {"samples": 128, "batch_size": 16}}
    configs = {
        "compress-dynamic": (fp32, {"mode": "dynamic"}),
        "compress-dynamic-weights-only": (fp32, {"mode": "dynamic", "activation_matmuls": False}),
        "compress-dynamic-fused": (fused, {"mode": "dynamic"}),
        "compress-static": (fp32, static),
        "compress-static-s8s8": (fp32, {**static, "activation_type": "int8", "symmetric_activations": True}),
        "compress-static-fused": (fused, static),
        "compress-nncf": (fp32, {"backend": "nncf", "nncf": {"subset_size": 128}}),
    }
    for name, (src, cfg) in configs.items():
        if not wanted(name):
            continue
        wd = work / name
        wd.mkdir()
        spec = InputSpec.text(["input_ids", "attention_mask"], 128, VOCAB)
        ctx = StepContext(splits=splits, model_spec=None, input_spec=spec, seed=0, workdir=wd,
                          log=lambda _m: None)
        art = apply(Artifact(kind="onnx", digest="bert", path=src), QuantizeConfig(**cfg), ctx)
        out[name] = (art.path, "openvino" if art.kind == "openvino" else "onnxruntime")
        q = art.meta["quantization"]
        cov = art.meta.get("int8_coverage") or (int8_coverage(art.path).to_dict() if art.kind == "onnx" else {})
        print(f"{name}: {cov.get('summary', '')} {({k: q[k] for k in ('op_types', 'model_type', 'preset') if k in q})}")
    if wanted("openvino-fp32"):
        out["openvino-fp32"] = (fp32, "openvino")
    if not wanted("nncf-int8-plain"):
        return out
    model = ov.Core().read_model(str(fp32))
    calib = splits["calibration"].stream(1, np.arange(128))
    plain = nncf.quantize(model, nncf.Dataset(calib), subset_size=128)
    ov.save_model(plain, str(work / "nncf-plain.xml"), compress_to_fp16=False)
    out["nncf-int8-plain"] = (work / "nncf-plain.xml", "openvino")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--variants", nargs="*", help="only these (ort-fp32 always runs)")
    args = ap.parse_args()

    from compress.artifacts import Artifact
    from compress.measure.timing import speedup, time_sessions
    from compress.runtimes.base import RUNTIMES
    from compress.runtimes.target import TargetConfig

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = work / "bert.onnx"
        export_bert(fp32, args.layers, args.hidden)
        variants = build_variants(fp32, work, args.hidden // 64, args.hidden,
                                  set(args.variants) if args.variants else None)
        sessions = {}
        for name, (path, runtime) in variants.items():
            target = TargetConfig(name=runtime, runtime=runtime, device="cpu", threads=args.threads)
            kind = "openvino" if path.suffix == ".xml" else "onnx"
            sessions[name] = RUNTIMES.get(runtime).load(Artifact(kind=kind, digest=name, path=path), target)
        batch = RandomTokens(args.batch, args.tokens, 7).inputs(slice(None))
        batch = {k: np.resize(v, (args.batch, args.tokens)) for k, v in batch.items()}
        batch["attention_mask"][:] = 1  # every sample args.tokens long: the padded-to-128 case
        ref = sessions["ort-fp32"].run(batch)
        timings = time_sessions(sessions, lambda _bs: batch, [args.batch], rounds=args.rounds)
        host = subprocess.run(["bash", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True).stdout
        print(f"\nhost: {host.split(':', 1)[-1].strip()} ({platform.machine()}), {args.threads} threads, "
              f"batch {args.batch} x {args.tokens} tokens, BERT {args.layers} x {args.hidden}")
        base = timings["ort-fp32"][args.batch]
        print("| variant | runtime | p50 ms | speed-up vs ORT fp32 (95% CI) | max abs logit diff |")
        print("|---|---|---|---|---|")
        for name, (_path, runtime) in variants.items():
            t = timings[name][args.batch]
            s = speedup(base, t)
            diff = float(np.abs(sessions[name].run(batch) - ref).max())
            print(f"| {name} | {runtime} | {t['p50_ms']:.1f} | {s['estimate']:.2f}x "
                  f"({s['low']:.2f}-{s['high']:.2f}) | {diff:.3g} |")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
