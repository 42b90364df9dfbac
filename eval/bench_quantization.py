"""Quantization benchmark on real data: the pretrained CIFAR-10 ResNet-20 and ResNet-56, int8 in
ONNX Runtime three ways, side by side in one run:

- `ort-defaults`: `onnxruntime.quantization.quantize_static` with every argument left at its default
  (QDQ, int8 activations and weights, per-tensor, MinMax), on the same calibration images;
- `compress`: the `quantize` step with its defaults (target auto -> this CPU's row of the table);
- `compress-no-rewrites`: the same with `pad_channels: 0` and `channel_pads_as_convs: false` (the
  stem's 3 input channels not padded to 4, the shortcuts' channel Pads left as Pads);
- `compress-mixed`: the same, plus `mixed_precision` (tolerance 0.5 points on the tuning split).

Calibration and tuning images are JPEG test images that are not twins of the exact 1,000 (two
disjoint slices, checked); accuracy is top-1 on the exact 1,000; int8 coverage is read back from
the graph ORT executes; latency is ORT on the CPU at batch 32, every variant of a model timed
interleaved in one session (medians of rounds; speed-up = fp32 median / variant median).

    python eval/bench_quantization.py [--data DIR] [--depths 20 56] [--threads 2] \
        [--out docs/results/quantization_table.md] [--json results.json]

Exit code 0 when it ran (goals met or not: the output says which), 2 when the data is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see compress/cli/app.py: busy-waiting threads

import numpy as np  # noqa: E402
from cifar_data import (  # noqa: E402
    MEAN_RGB,
    STD_RGB,
    load_exact_1000,
    load_jpeg_10k,
    non_twin_jpeg_rows,
    shared_data_dir,
    weights_dir,
)
from cifar_resnet import load_pretrained  # noqa: E402

GOAL_DROP_POINTS = 0.5
GOAL_SPEEDUP = 2.0
STRICT_DROP_POINTS = 0.1


def make_splits(data_dir: Path, calibration_n: int, tuning_n: int, seed: int):
    """calibration / tuning: disjoint slices of the non-twin JPEGs; heldout: the exact 1,000."""
    from compress.sources.data import Split, Splits

    exact, exact_labels, jpeg_row = load_exact_1000(data_dir)
    jpeg, jpeg_labels = load_jpeg_10k(data_dir)
    rest = non_twin_jpeg_rows(data_dir)
    rest = rest[np.random.default_rng(seed).permutation(len(rest))]
    cal_rows, tun_rows = rest[:calibration_n], rest[calibration_n : calibration_n + tuning_n]
    assert not np.intersect1d(cal_rows, jpeg_row).size, "a held-out twin leaked into calibration"
    assert not np.intersect1d(tun_rows, jpeg_row).size, "a held-out twin leaked into tuning"
    assert not np.intersect1d(cal_rows, tun_rows).size, "calibration and tuning overlap"
    mean, std = MEAN_RGB.reshape(1, 3, 1, 1), STD_RGB.reshape(1, 3, 1, 1)

    def split(role, images, labels, source):
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / 255
        return Split.from_arrays(role, x, labels, mean, std, source)

    splits = Splits()
    splits["calibration"] = split("calibration", jpeg[cal_rows], jpeg_labels[cal_rows], "jpeg non-twins")
    splits["tuning"] = split("tuning", jpeg[tun_rows], jpeg_labels[tun_rows], "jpeg non-twins")
    splits["heldout"] = split("heldout", exact, exact_labels, "exact 1000")
    splits.classes = [str(i) for i in range(10)]
    hashes = {r: set(s.sample_hashes()) for r, s in splits.items()}
    assert not hashes["heldout"] & (hashes["calibration"] | hashes["tuning"])
    return splits


def ort_defaults(src: Path, out: Path, batches: list[dict[str, np.ndarray]]) -> Path:
    """What a user gets from ORT's documented entry point with no arguments changed."""
    import warnings

    from onnxruntime.quantization import quantize_static

    from compress.quantization.ort import BatchReader, input_names

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(src), str(out), BatchReader(batches, input_names(src)))
    return out


def Timed(path: Path, threads: int):  # noqa: N802 (an OrtRunner runs named-input batches)
    from compress.quantization.ort import OrtRunner

    return OrtRunner(path, threads)


def main_variants(args) -> dict:
    from compress.steps.quantize import QuantizeConfig

    calib = {"samples": args.calibration_n}
    return {
        "ort-defaults": "ort-defaults",
        "compress": QuantizeConfig(calibration=calib),
        # the same without the two graph rewrites of the x86-vnni default (the stem's 3 input
        # channels padded to 4; the option-A shortcuts' channel Pads run as 1x1 Convs)
        "compress-no-rewrites": QuantizeConfig(calibration=calib, pad_channels=0, channel_pads_as_convs=False),
        "compress-mixed": QuantizeConfig(calibration=calib, mixed_precision={
            "max_drop_points": GOAL_DROP_POINTS, "max_float_layers": args.max_float_layers,
            "tuning_samples": args.tuning_n, "sensitivity_samples": args.sensitivity_n}),
        # a tolerance tighter than int8's own loss, so the search has to keep layers in float:
        # shows which layers it picks on a real model and what they cost
        "compress-mixed-strict": QuantizeConfig(calibration=calib, mixed_precision={
            "max_drop_points": STRICT_DROP_POINTS, "max_float_layers": args.max_float_layers,
            "tuning_samples": args.tuning_n, "sensitivity_samples": args.sensitivity_n}),
    }


def sweep_variants(args) -> dict:
    """The settings behind the x86-vnni row of the defaults table, one change at a time."""
    from compress.steps.quantize import QuantizeConfig

    calib = {"samples": args.calibration_n}
    return {
        "U8S8 per-channel minmax (default)": QuantizeConfig(calibration=calib),
        "U8S8 per-tensor": QuantizeConfig(calibration=calib, per_channel=False),
        "S8S8 per-channel": QuantizeConfig(calibration=calib, activation_type="int8"),
        "S8S8 symmetric (tensorrt row)": QuantizeConfig(calibration=calib, target="tensorrt"),
        "U8S8 reduce_range (x86 row)": QuantizeConfig(calibration=calib, target="x86"),
        "U8S8 entropy": QuantizeConfig(calibration={**calib, "method": "entropy"}),
        "U8S8 percentile 99.999": QuantizeConfig(calibration={**calib, "method": "percentile"}),
        "U8S8 no preprocess": QuantizeConfig(calibration=calib, preprocess=False),
        "U8S8 input channels not padded": QuantizeConfig(calibration=calib, pad_channels=0),
        "U8S8 channel Pads kept as Pads": QuantizeConfig(calibration=calib, channel_pads_as_convs=False),
    }


def bench_model(depth: int, splits, work: Path, args, variants: dict) -> dict:
    from compress.artifacts import Artifact
    from compress.measure.timing import speedup, time_sessions
    from compress.quantization.coverage import int8_coverage
    from compress.quantization.ort import OrtRunner
    from compress.steps.base import StepContext
    from compress.steps.export import export_onnx
    from compress.steps.quantize import apply

    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    export_onnx(load_pretrained(depth, weights_dir(args.data_dir)), (3, 32, 32), fp32,
                opset=17, dynamic_batch=True)
    art = Artifact(kind="onnx", digest=f"resnet{depth}", path=fp32, lineage=["fp32"])

    def ctx(i, name):
        d = work / f"v{i}"
        d.mkdir(exist_ok=True)
        return StepContext(splits=splits, model_spec=None, input_shape=(3, 32, 32), seed=0,
                           workdir=d, log=lambda m: print(f"  [{depth}/{name}] {m}", flush=True))

    paths, info, build_s = {"fp32": fp32}, {}, {}
    cal = splits["calibration"]
    for i, (name, cfg) in enumerate(variants.items()):
        t0 = time.perf_counter()
        if cfg == "ort-defaults":
            batches = [cal.inputs(slice(j, j + 32)) for j in range(0, args.calibration_n, 32)]
            paths[name] = ort_defaults(fp32, work / "ort_defaults.onnx", batches)
        else:
            out = apply(art, cfg, ctx(i, name))
            paths[name] = out.path
            info[name] = out.meta["quantization"]
        build_s[name] = time.perf_counter() - t0
        print(f"  [{depth}] {name}: built in {build_s[name]:.0f} s", flush=True)

    held = splits["heldout"]
    x, y = held.inputs(), held.labels
    rows = {}
    for name, path in paths.items():
        logits = OrtRunner(path, args.threads).logits(x, batch_size=100)
        cov = int8_coverage(path)
        rows[name] = {"top1": float((logits.argmax(1) == y).mean() * 100),
                      "coverage": cov.summary() if name != "fp32" else "—",
                      "compute_fraction": cov.compute_fraction, "build_s": build_s.get(name)}
    batch = held.inputs(np.arange(args.batch_size))
    timing = time_sessions({n: Timed(p, args.threads) for n, p in paths.items()},
                           lambda _bs: batch, [args.batch_size], warmup=3, rounds=args.rounds,
                           min_round_s=args.min_round_s)
    bs = args.batch_size
    for name in paths:
        t = timing[name][bs]
        rows[name]["p50_ms"] = t["p50_ms"]
        rows[name]["speedup"] = speedup(timing["fp32"][bs], t)
        rows[name]["drop_points"] = rows["fp32"]["top1"] - rows[name]["top1"]
    return {"depth": depth, "rows": rows, "settings": info}


def markdown(results: list[dict], args, started: str, wall_s: float) -> str:
    out = [
        f"Measured {started} on {platform.node() or 'this machine'} ({_cpu()}), ONNX Runtime "
        f"{_ort()} CPU EP, {args.threads} threads, batch {args.batch_size}, {args.rounds} "
        f"interleaved rounds; wall time {wall_s:.0f} s.",
        "",
        "| model | variant | top-1 exact 1,000 | drop vs fp32 (points; negative = better) | int8 coverage (ops ORT runs) "
        f"| p50 ms b{args.batch_size} | speed-up vs fp32 [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, row in r["rows"].items():
            sp = row["speedup"]
            drop = "—" if name == "fp32" else f"{row['drop_points']:+.1f}"
            out.append(
                f"| ResNet-{r['depth']} | {name} | {row['top1']:.1f}% | "
                f"{drop} | {row['coverage']} | "
                f"{row['p50_ms']:.2f} | {sp['estimate']:.2f}x [{sp['low']:.2f}, {sp['high']:.2f}] |"
            )
    out.append("")
    for r in results:
        for name, q in r["settings"].items():
            m = q.get("mixed_precision")
            if m is None:
                continue
            out.append(
                f"- ResNet-{r['depth']} `{name}` ({q['target']}: {q['format']}, activations "
                f"{q['activations']}, weights {q['weights']}, per-channel {q['per_channel']}, "
                f"calibration {q['calibration']}), tolerance {m['tolerance_points']} points: tuning "
                f"top-1 float {m['tuning_top1_float']:.2f}%, all-int8 {m['tuning_top1_all_int8']:.2f}%, "
                f"mixed {m['tuning_top1_mixed']:.2f}% (n={m['tuning_n']}); layers kept in float: "
                f"{', '.join(f'`{n}`' for n in m['float_layers']) or 'none'}"
                + (f"; their latency cost at batch {m['latency']['batch_size']}: "
                   f"{m['latency']['cost_ratio']:.2f}x the all-int8 model" if m.get("latency") else "")
                + ("" if m["reached"] else "; the tolerance was NOT reached")
                + "."
            )
    out.append("")
    for r in results:
        for name in ("compress", "compress-mixed"):
            if name not in r["rows"]:
                continue
            row = r["rows"][name]
            acc_ok = row["drop_points"] <= GOAL_DROP_POINTS
            sp_ok = row["speedup"]["estimate"] >= GOAL_SPEEDUP
            out.append(
                f"- Goal check ResNet-{r['depth']} {name}: accuracy within {GOAL_DROP_POINTS} points "
                f"{'MET' if acc_ok else 'NOT MET'} ({row['drop_points']:+.1f}); speed-up >= "
                f"{GOAL_SPEEDUP}x at batch {args.batch_size} {'MET' if sp_ok else 'NOT MET'} "
                f"({row['speedup']['estimate']:.2f}x)."
            )
    return "\n".join(out) + "\n"


def _cpu() -> str:
    from compress.run.environment import cpu_info

    c = cpu_info()
    return f"{c.get('model', '?')}, {c.get('logical_cores')} logical cores, {', '.join(c.get('flags', []))}"


def _ort() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _part(node_name: str, op: str) -> str:
    """Which part of a CIFAR ResNet an ORT node belongs to: a stage, the stem (the one convolution
    outside the stages; fused nodes are renamed, e.g. fp32's stem is `/Relu_output_0_nchwc`), or
    the rest (input conversion, pooling, classifier)."""
    import re

    m = re.search(r"layer(\d)", node_name)
    if m:
        return f"stage {m.group(1)}"
    return "stem" if "Conv" in op else "input/head"


def op_profile(depth: int, splits, work: Path, args) -> str:
    """fp32, compress-default int8 and int8 without its graph rewrites side by side in ORT's
    profiler at the benchmark's batch size: kernel time per part of the network (stem, stages,
    input/head) and per op kind (Conv or the rest), then per op type. Shows where int8 gains and
    where it loses."""
    import json as _json
    from collections import Counter

    import onnxruntime as ort

    from compress.artifacts import Artifact
    from compress.runtimes.onnxruntime import make_session_options
    from compress.steps.base import StepContext
    from compress.steps.export import export_onnx
    from compress.steps.quantize import QuantizeConfig, apply

    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    export_onnx(load_pretrained(depth, weights_dir(args.data_dir)), (3, 32, 32), fp32, opset=17, dynamic_batch=True)

    def quantized(workdir: Path, **settings) -> Path:
        workdir.mkdir(exist_ok=True)
        ctx = StepContext(splits=splits, model_spec=None, input_shape=(3, 32, 32), seed=0,
                          workdir=workdir, log=lambda m: None)
        return apply(Artifact(kind="onnx", digest=f"resnet{depth}", path=fp32),
                     QuantizeConfig(calibration={"samples": args.calibration_n}, **settings), ctx).path

    int8 = quantized(work)
    norewrite = quantized(work / "norewrite", pad_channels=0, channel_pads_as_convs=False)
    batch = splits["heldout"].inputs(np.arange(args.batch_size))
    runs = 50
    totals, op_totals = {}, {}
    warmup = 5
    for label, path in (("fp32", fp32), ("int8", int8), ("int8-norewrite", norewrite)):
        so = make_session_options(args.threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(work / f"profile-{label}")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(warmup + runs):
            sess.run(None, {name: batch["pixel_values"]})
        events = _json.loads(Path(sess.end_profiling()).read_text())
        starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
        t, by_op = Counter(), Counter()
        for e in events:  # kernel times of the runs after the warm-up
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= starts[warmup]:
                op = e["args"]["op_name"]
                t[(_part(e["name"], op), "Conv" if "Conv" in op else "other ops")] += e["dur"] / runs / 1000
                by_op[op] += e["dur"] / runs / 1000
        totals[label], op_totals[label] = t, by_op
    keys = sorted(set().union(*totals.values()))

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "—"

    rows = []
    for key in keys:
        f, q, n = (totals[label][key] for label in ("fp32", "int8", "int8-norewrite"))
        rows.append(f"| {key[0]} | {key[1]} | {f:.2f} | {q:.2f} | {ratio(f, q)} | {n:.2f} | {ratio(f, n)} |")
    f, q, n = (sum(totals[label].values()) for label in ("fp32", "int8", "int8-norewrite"))
    rows.append(f"| **all** | | {f:.2f} | {q:.2f} | {ratio(f, q)} | {n:.2f} | {ratio(f, n)} |")
    return "\n".join([
        f"ResNet-{depth}, batch {args.batch_size}, {args.threads} threads, ORT profiler kernel time per run "
        f"(mean of {runs} runs after 5 warm-up runs; summed node times, not wall time):", "",
        "| part | ops | fp32 ms | int8 ms | int8 speed-up | int8 without the rewrites, ms | its speed-up |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Per op type, ms per run: " + "; ".join(
            f"{label}: " + ", ".join(f"{op} {ms:.2f}" for op, ms in op_totals[label].most_common())
            for label in op_totals), ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--min-round-s", type=float, default=0.5)
    p.add_argument("--calibration-n", type=int, default=512)
    p.add_argument("--tuning-n", type=int, default=2000)
    p.add_argument("--sensitivity-n", type=int, default=500)
    p.add_argument("--max-float-layers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", action="store_true",
                   help="instead: one setting changed at a time (the evidence for the defaults table)")
    p.add_argument("--op-profile", action="store_true",
                   help="instead: ORT profiler kernel time of fp32 vs compress int8 per part of each network")
    p.add_argument("--work", help="work directory (default: a temporary one)")
    p.add_argument("--out", help="write the Markdown table here (default: print it)")
    p.add_argument("--json", help="write every number here as JSON")
    args = p.parse_args()
    args.data_dir = shared_data_dir(args.data)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    splits = make_splits(args.data_dir, args.calibration_n, args.tuning_n, args.seed)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-quant-"))
    if args.op_profile:
        text = "\n".join(op_profile(d, splits, work / f"profile{d}", args) for d in args.depths)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
        return
    results = []
    for depth in args.depths:
        print(f"ResNet-{depth} ...", flush=True)
        variants = sweep_variants(args) if args.sweep else main_variants(args)
        results.append(bench_model(depth, splits, work / f"resnet{depth}", args, variants))
    text = markdown(results, args, started, time.perf_counter() - t0)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
