"""How much does padding every SST-2 dev sentence to 128 tokens cost a BERT server on this CPU?

Exports a BERT of ``--layers`` x ``--hidden`` built from its config (eager attention, random
weights: this benchmark is about time, not accuracy) with dynamic batch and sequence axes, tokenizes
the 872 GLUE dev sentences with a WordPiece vocabulary trained on SST-2 train
(compress.sources.wordpiece), and profiles it with the profiler ``compress run`` uses
(``compress.run.profiling.profile_pairs``; ONNX Runtime CPU, ``--threads`` threads):

1. the batch size x sequence length grid (``--batch-size`` x ``--seq-len``), real dev sentences
   padded or cut to each length;
2. ``--samples`` dev sentences at their own lengths in batches of ``--real-batch`` (``--batching``:
   arrival order, or grouped by length), each batch padded to its longest sentence, against the
   same batches padded to ``--max-length``, in the same interleaved loop.

    python eval/bench_text_shapes.py --data /work/shared/data --out /tmp/text-shapes

Prints and writes OUT/result.json, with the host CPU and load. Exit 2 when the data is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SST2 = "text-classification/sst2"


class DevSplit:
    """The tokenized dev sentences as the profiler reads a text split."""

    def __init__(self, encoded):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded.lengths)

    def lengths(self) -> np.ndarray:
        return self.encoded.lengths

    def inputs(self, idx) -> dict[str, np.ndarray]:
        from compress.sources.text import pad_batch

        return pad_batch(self.encoded, np.asarray(idx)).inputs


def export_bert(path: Path, vocab_size: int, layers: int, hidden: int, max_length: int) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                        max_position_embeddings=max_length, num_labels=2, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits

    names = ["input_ids", "attention_mask", "token_type_ids"]
    x = torch.ones((2, 16), dtype=torch.int64)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model), (x, x, torch.zeros_like(x)), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("COMPRESS_SHARED_DATA", "../shared/data")))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, action="append", help="grid batch sizes (default 1, 32)")
    p.add_argument("--seq-len", type=int, action="append", help="grid sequence lengths (default 32, 128)")
    p.add_argument("--real-batch", type=int, default=32)
    p.add_argument("--batching", choices=["arrival", "length"], default="arrival")
    p.add_argument("--samples", type=int, default=128, help="dev sentences timed per pass (0: all 872)")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)

    from compress.artifacts import Artifact, file_digest
    from compress.measure.lengths import fit_length, served_lengths
    from compress.run.profiling import profile_pairs
    from compress.runtimes.target import TargetConfig
    from compress.sources.text import encode, read_text_file
    from compress.sources.wordpiece import train_wordpiece

    train_path, dev_path = args.data / SST2 / "train.tsv", args.data / SST2 / "dev.tsv"
    if not train_path.is_file():
        print(f"SST-2 not found at {train_path}: pass --data or set COMPRESS_SHARED_DATA", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    train = read_text_file(train_path, text_column="sentence")
    dev = read_text_file(dev_path, text_column="sentence", label_names=train.label_names)
    tokenizer = train_wordpiece(train.texts, args.out / "tokenizer", vocab_size=8000)
    split = DevSplit(encode(dev, tokenizer, args.max_length))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bert.onnx"
        export_bert(path, len(tokenizer), args.layers, args.hidden, args.max_length)
        art = Artifact(kind="onnx", digest=file_digest(path), path=path, lineage=["bert.onnx"])
        target = TargetConfig(name="cpu", runtime="onnxruntime", device="cpu", threads=args.threads)
        rng = np.random.default_rng(0)

        def make_batch(bs, seq_len):
            return fit_length(split.inputs(np.sort(rng.choice(len(split), bs, replace=False))), seq_len)

        plan = {"rounds": args.rounds}
        result = {"model": f"BERT {args.layers} x {args.hidden}, ONNX Runtime fp32, {args.threads} threads",
                  "dev_sentences": len(split), "dev_tokens_mean": float(split.lengths().mean()),
                  "dev_tokens_max": int(split.lengths().max())}
        served = served_lengths(split, batch_size=args.real_batch, max_length=args.max_length,
                                batching=args.batching, samples=args.samples or None)
        got = profile_pairs({"bert@cpu": (art, target)}, make_batch, args.batch_size or [1, 32], plan=plan,
                            seq_lens=args.seq_len or [32, args.max_length], served=served, log=print)["bert@cpu"]
        result["grid_p50_ms"] = {f"b{bs} x {n}": round(m["p50_ms"], 2)
                                 for n, cells in got["latency_by_seq_len"].items() for bs, m in cells.items()}
        result["grid_stable"] = all(m["stable"] for cells in got["latency_by_seq_len"].values()
                                    for m in cells.values())
        real = got["real_lengths"]
        result["real_lengths"] = {
            k: real[k] for k in ("batching", "n_samples", "n_batches", "batch_size", "mean_length",
                                 "padding_fraction", "padding_fraction_max_length")
        } | {"dynamic_samples_per_s": round(real["dynamic"]["throughput_per_s"], 1),
             "padded_samples_per_s": round(real["padded"]["throughput_per_s"], 1),
             "stable": bool(real["dynamic"]["stable"] and real["padded"]["stable"]),
             "speedup": {k: round(real["speedup"][k], 3) for k in ("estimate", "low", "high")}}
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    result["host"] = next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                           if line.startswith("Model name")), platform.processor())
    result["load_1_5_15"] = list(os.getloadavg())
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
