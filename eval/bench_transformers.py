"""Transformer benchmark on real data (issue [9] item 7): every path a user could take, in one run.

For one model (``--model sst2 | agnews | vit``) this builds, from the same fp32 model:

- ``ort-fp32``: the exported ONNX file in ONNX Runtime (the bar every speed-up is measured against);
- ``ort-dynamic-defaults``: ``onnxruntime.quantization.quantize_dynamic`` with its defaults (what
  Optimum's dynamic quantization does);
- ``openvino-fp32``: OpenVINO reading the same ONNX file, default config;
- ``nncf-int8``: ``nncf.quantize`` with its defaults; ``nncf-int8-transformer``: with
  ``model_type=TRANSFORMER``, also with the THROUGHPUT hint;
- ORT levers: the transformer optimizer's fusions (Attention, SkipLayerNorm, Gelu; for the ViT on an
  eager-attention re-export) before ``quantize_dynamic`` (defaults, per-channel) or static QDQ S8S8;
- pruned variants (FFN neurons, whole layers) with a short distillation from the fp32 model, then
  NNCF int8 (transformer type) and ORT fused dynamic int8.

Each variant's top-1 on the held-out set with the paired 95% interval of its difference from ORT
fp32 (compress.measure.paired); every variant timed in one interleaved run
(compress.measure.timing.time_sessions; 2 threads, batch 32, text at 128 tokens; ORT sessions with
``session.intra_op.allow_spinning=0``); speed-up = ORT fp32 median / variant median with its bootstrap
interval. For SST-2 also the whole dev set with dynamic padding vs padded to 128 tokens.

    python eval/bench_transformers.py --model sst2 [--data DIR] [--json OUT.json] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from transformer_variants import (  # noqa: E402
    OrtRun,
    OvRun,
    distill,
    executed_ops,
    export,
    fuse,
    nncf_int8,
    quantize_dynamic,
    quantize_static_qdq,
)

# (ffn neurons kept, encoder layers kept or None = all, distillation steps) per model: short, so
# a model's whole run stays within ~20 minutes on the shared 2-core machine
PRUNE_PLANS = {
    "sst2": {"pruned-ffn50-3layers": (0.5, [0, 1, 3], 150)},
    "agnews": {"pruned-ffn50-3layers": (0.5, [0, 1, 3], 150)},
    "vit": {"pruned-ffn50-5layers": (0.5, [0, 1, 2, 3, 5], 60)},
}


def build_variants(setup, work: Path, threads: int, log, prune_plans: dict,
                   reuse: bool = False) -> tuple[dict, dict]:
    """name -> runner factory (lazy: OpenVINO compiles on first use), and name -> build notes."""
    fp32 = export(setup.module, setup.timing_batch, work / "fp32.onnx", setup.dynamic_axes)
    model_type, heads, hidden = setup.fusion
    runners = {"ort-fp32": lambda: OrtRun(fp32, threads)}
    notes: dict = {}

    def add(name, make, what):
        t0 = time.perf_counter()
        try:
            runners[name], info = make()
            notes[name] = {"what": what, "build_s": round(time.perf_counter() - t0, 1), **info}
            log(f"  built {name} in {notes[name]['build_s']} s {info}")
        except Exception as err:  # a failed path is a result: reported in the table, never hidden
            notes[name] = {"what": what, "error": f"{type(err).__name__}: {err}"}
            log(f"  {name} FAILED: {err}\n{traceback.format_exc(limit=3)}")

    def ort(path, **info):
        return (lambda: OrtRun(path, threads)), info

    def ov(path, hint="LATENCY", **info):
        return (lambda: OvRun(path, threads, hint)), info

    add("ort-dynamic-defaults", lambda: ort(quantize_dynamic(fp32, work / "dyn.onnx")),
        "ORT quantize_dynamic, defaults")
    add("openvino-fp32", lambda: ov(fp32), "OpenVINO, the fp32 ONNX file, default config")
    def nncf_plain():
        path, info = nncf_int8(fp32, work / "nncf.xml", setup.calibration, reuse=reuse)
        return ov(path, **info)

    add("nncf-int8", nncf_plain,
        "nncf.quantize defaults (300 calibration samples), OpenVINO")
    ir = {}

    def nncf_transformer():
        ir["path"], info = nncf_int8(fp32, work / "nncf_tr.xml", setup.calibration, transformer=True,
                                       reuse=reuse)
        return ov(ir["path"], **info)

    add("nncf-int8-transformer", nncf_transformer, "nncf.quantize model_type=TRANSFORMER, OpenVINO")
    if "path" in ir:
        add("nncf-int8-transformer-throughput", lambda: ov(ir["path"], "THROUGHPUT"),
            "the same IR, OpenVINO THROUGHPUT hint (2 requests)")

    src = fp32
    if "eager" in setup.extra_exports:
        src = export(setup.extra_exports["eager"], setup.timing_batch, work / "eager.onnx", setup.dynamic_axes)
    fused = {}

    def do_fuse():
        fused["path"], ops = fuse(src, work / "fused.onnx", model_type, heads, hidden)
        return ort(fused["path"], fused_ops=ops)

    add("ort-fused-fp32", do_fuse, f"ORT transformer optimizer ({model_type}"
        + (", eager-attention re-export)" if src != fp32 else ")"))
    if "path" in fused:
        f = fused["path"]
        add("ort-fused-dynamic", lambda: ort(quantize_dynamic(f, work / "fused_dyn.onnx", fused=True)),
            "fused, then quantize_dynamic defaults")
        add("ort-fused-dynamic-per-channel",
            lambda: ort(quantize_dynamic(f, work / "fused_dyn_pc.onnx", fused=True,
                                                    per_channel=True)),
            "fused, then quantize_dynamic per_channel=True")
        cal = [setup.calibration[i] for i in range(0, 300, 3)]
        add("ort-fused-qdq-s8s8", lambda: ort(quantize_static_qdq(f, work / "fused_qdq.onnx", cal,
                                                                  preprocess=False)),
            "fused, then static QDQ S8S8 per-channel MinMax (100 samples)")
    for name, (ffn_keep, layers, steps) in prune_plans.items():
        student = pruned_student(setup, work, name, ffn_keep, layers, steps, log)
        if student is None:
            continue
        path = export(student, setup.timing_batch, work / f"{name}.onnx", setup.dynamic_axes)
        what = (f"FFN neurons x{ffn_keep}" + (f", layers {layers}" if layers else "")
                + f", {steps} steps of distillation")
        key, pruned_ir = f"{name}-nncf-int8-transformer", {}

        def pruned_nncf(p=path, n=name, keep=pruned_ir):
            keep["path"], info = nncf_int8(p, work / f"{n}_nncf.xml", setup.calibration, transformer=True)
            return ov(keep["path"], **info)

        add(key, pruned_nncf, what + ", NNCF transformer")
        if "path" in pruned_ir:
            add(key + "-throughput", lambda keep=pruned_ir: ov(keep["path"], "THROUGHPUT"),
                "the same, THROUGHPUT hint")
        if "eager" not in setup.extra_exports:  # the pruned ViT keeps nn.MultiheadAttention: no fusion
            add(f"{name}-ort-fused-dynamic", lambda p=path, n=name: ort(quantize_dynamic(
                fuse(p, work / f"{n}_fused.onnx", model_type, heads, hidden)[0], work / f"{n}_fdyn.onnx", fused=True)),
                what + ", ORT fused + quantize_dynamic")
    return runners, notes


def pruned_student(setup, work, name, ffn_keep, layers, steps, log):
    """The pruned, distilled torch module (cached under eval/.cache by model, plan and steps)."""
    import copy

    import torch

    cache = HERE / ".cache" / f"{setup.name}-{name}-{ffn_keep}-{layers}-{steps}.pt"
    student = setup.prune(copy.deepcopy(setup.module), ffn_keep, layers)
    if cache.is_file():
        student.load_state_dict(torch.load(cache, weights_only=True))
        return student.eval()
    torch.set_num_threads(1)
    t0 = time.process_time()
    distill(student, setup.module, setup.finetune, setup.call, epochs=1, max_steps=steps,
            lr=setup.finetune_lr, log=log)
    log(f"  {name}: distilled in {time.process_time() - t0:.0f} CPU s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(student.state_dict(), cache)
    return student.eval()


def heldout_correct(runner, setup) -> np.ndarray:
    logits = {}
    for inputs, idx in setup.heldout:
        out = runner.run_dynamic(inputs) if hasattr(runner, "run_dynamic") else runner.run(inputs)
        for i, row in zip(idx, np.asarray(out), strict=True):
            logits[int(i)] = row
    pred = np.array([logits[i].argmax() for i in range(len(setup.labels))])
    return pred == setup.labels


def padding_point(runners: dict, setup, names: list[str], rounds: int) -> dict:
    """Whole held-out set, length-sorted batches of 32: padded per batch vs to 128 tokens."""
    from compress.measure.timing import speedup, time_sessions

    class Whole:
        def __init__(self, runner, batches):
            self.runner, self.batches = runner, batches

        def run(self, _):
            for b in self.batches:
                self.runner.run_dynamic(b) if hasattr(self.runner, "run_dynamic") else self.runner.run(b)

    per_batch, padded = setup.dev_batches(None), setup.dev_batches(128)
    sessions = {}
    for n in names:
        sessions[f"{n} padded to 128"] = Whole(runners[n], padded)
        sessions[f"{n} dynamic padding"] = Whole(runners[n], per_batch)
    t = time_sessions(sessions, lambda _bs: None, [1], warmup=1, rounds=rounds, min_round_s=0.01,
                      warmup_max_s=0, max_extra_rounds=2)
    out = {}
    for n in names:
        a, b = t[f"{n} padded to 128"][1], t[f"{n} dynamic padding"][1]
        out[n] = {"padded_128_ms": a["p50_ms"], "dynamic_ms": b["p50_ms"], "speedup": speedup(a, b)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["sst2", "agnews", "vit"], required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--min-round-s", type=float, default=0.5)
    p.add_argument("--no-prune", action="store_true")
    p.add_argument("--work", default=None)
    p.add_argument("--reuse", action="store_true",
                   help="read NNCF IRs an earlier run left in --work instead of quantizing again")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from cifar_data import shared_data_dir

    data_dir = shared_data_dir(args.data)
    from compress.measure.paired import paired_diff_interval
    from compress.measure.timing import speedup, time_sessions

    def log(m):
        print(m, flush=True)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = _uptime()
    t0 = time.perf_counter()
    from transformer_setups import text_setup, vit_setup

    setup = vit_setup(data_dir, log) if args.model == "vit" else text_setup(args.model, data_dir, log)
    work = Path(args.work or tempfile.mkdtemp(prefix=f"bench-tr-{args.model}-"))
    work.mkdir(parents=True, exist_ok=True)
    plans = {} if args.no_prune else PRUNE_PLANS[args.model]
    factories, notes = build_variants(setup, work, args.threads, log, plans, args.reuse)
    runners = {n: f() for n, f in factories.items()}
    correct = {n: heldout_correct(r, setup) for n, r in runners.items()}
    log(f"  accuracy done ({time.perf_counter() - t0:.0f} s); load {_uptime()}")
    load_timing = _uptime()
    timing = time_sessions(runners, lambda _bs: setup.timing_batch, [32], rounds=args.rounds,
                           min_round_s=args.min_round_s)
    rows = {}
    base = timing["ort-fp32"][32]
    for n in runners:
        diff = paired_diff_interval(correct[n], correct["ort-fp32"])
        t = timing[n][32]
        rows[n] = {**notes.get(n, {"what": "exported fp32 ONNX file, ONNX Runtime"}),
                   "top1": float(correct[n].mean() * 100), "diff_points": diff.to_dict(),
                   "p50_ms": t["p50_ms"], "speedup": speedup(base, t), "stable": t.get("stable")}
        if isinstance(runners[n], OrtRun):
            rows[n]["executed_ops"] = _ops(runners[n])
    failed = {n: v for n, v in notes.items() if "error" in v}
    result = {"model": args.model, "started": started, "host": _cpu(), "load_start": load_start,
              "load_timing": load_timing, "load_end": _uptime(), "threads": args.threads,
              "batch": 32, "notes": setup.notes, "rows": rows, "failed": failed,
              "wall_s": round(time.perf_counter() - t0, 1), "command": " ".join(sys.argv)}
    if setup.dev_batches is not None:
        ort_best = max((n for n in rows if n.startswith("ort-") and n != "ort-fp32"),
                       key=lambda n: rows[n]["speedup"]["estimate"])
        best = max(rows, key=lambda n: rows[n]["speedup"]["estimate"])
        names = list(dict.fromkeys(["ort-fp32", ort_best, best]))
        result["dynamic_padding"] = padding_point(runners, setup, names, rounds=5)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


def _ops(runner) -> dict:
    """The fused and int8 op types ORT executes for this variant (its graph after optimisation)."""
    ops = executed_ops(runner.path)
    keep = ("Attention", "QAttention", "SkipLayerNormalization", "FastGelu", "Gelu", "MatMul", "MatMulInteger",
            "DynamicQuantizeMatMul", "QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "FusedMatMul")
    return {k: v for k, v in sorted(ops.items()) if k in keep}


def markdown(r: dict) -> str:
    out = [f"{r['model']}: {r['started']}, host {r['host']}, load (1/5/15 min) at start {r['load_start']}, "
           f"before timing {r['load_timing']}, at end {r['load_end']}; {r['threads']} threads, batch 32"
           + (", 128 tokens" if r["model"] != "vit" else "") + f"; wall {r['wall_s']:.0f} s",
           "", "| variant | top-1 | vs ORT fp32 [95% paired] | p50 ms | speed-up vs ORT fp32 [95%] | notes |",
           "|---|---|---|---|---|---|"]
    for n, v in r["rows"].items():
        d, s = v["diff_points"], v["speedup"]
        extra = {k: v[k] for k in ("fused_ops", "executed_ops", "FakeQuantize") if k in v}
        out.append(f"| {n} | {v['top1']:.1f}% | {d['estimate']:+.1f} [{d['low']:+.1f}, "
                   f"{d['high']:+.1f}] | {v['p50_ms']:.1f} | **{s['estimate']:.2f}x** [{s['low']:.2f}, "
                   f"{s['high']:.2f}] | {v['what']}; {json.dumps(extra) if extra else ''} |")
    for n, v in r["failed"].items():
        out.append(f"| {n} | — | — | — | failed | {v['what']}: {v['error'][:200]} |")
    if "dynamic_padding" in r:
        out += ["", "| variant | whole held-out set padded to 128 (ms) | dynamic padding (ms) | speed-up |",
                "|---|---|---|---|"]
        for n, v in r["dynamic_padding"].items():
            s = v["speedup"]
            out.append(f"| {n} | {v['padded_128_ms']:.0f} | {v['dynamic_ms']:.0f} | {s['estimate']:.2f}x "
                       f"[{s['low']:.2f}, {s['high']:.2f}] |")
    return "\n".join(out)


def _uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line), "?")


if __name__ == "__main__":
    sys.exit(main())
