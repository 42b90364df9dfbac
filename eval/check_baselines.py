"""Reproduce the pretrained CIFAR-10 ResNet baselines in plain PyTorch, outside the toolkit.

For ResNet-20/32/44/56 (akamaster weights) this script
1. measures top-1 on the exact test images 0-999 and on all 10,000 JPEG q75 test images and prints
   it beside the published numbers and the table in the shared data's PROVENANCE.md;
2. exports each model to ONNX (opset 17, dynamic batch) and checks that ONNX Runtime gives the same
   top-1, printing the largest absolute logit difference;
3. prunes 50% of ResNet-56's prunable channels with torch-pruning (`PRUNING_IGNORE` keeps the
   residual stream intact), checks that the pruned model runs and exports, and prints MACs.

    python eval/check_baselines.py [--data DIR] [--out docs/results/cifar_baselines.md]

Exit code 0 when every check passes, 1 when one fails, 2 when the data is missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cifar_data import (
    load_exact_1000,
    load_jpeg_10k,
    preprocess,
    shared_data_dir,
    weights_dir,
)
from cifar_resnet import DEPTHS, load_pretrained, pruning_ignored_layers
from torch import nn

# Published top-1 (akamaster README) and what PROVENANCE.md measured with the same preprocessing.
PUBLISHED_TOP1 = {20: 91.73, 32: 92.63, 44: 93.10, 56: 93.39}
PROVENANCE_EXACT_TOP1 = {20: 91.5, 32: 92.8, 44: 93.3, 56: 92.6}
PROVENANCE_JPEG_TOP1 = {20: 81.0, 32: 82.6, 44: 82.7, 56: 83.2}
# PROVENANCE rounds to 0.1 points; allow a few images of numerical noise on top.
TOLERANCE_EXACT_POINTS = 0.3  # 3 of 1,000 images
TOLERANCE_JPEG_POINTS = 0.2  # 20 of 10,000 images

OPSET = 17
BATCH = 500
PRUNE_DEPTH = 56
PRUNE_RATIO = 0.5


@dataclass
class Dataset:
    name: str
    inputs: np.ndarray  # float32 NCHW, preprocessed
    labels: np.ndarray


def torch_logits(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [
                model(torch.from_numpy(inputs[i : i + BATCH])).numpy()
                for i in range(0, len(inputs), BATCH)
            ]
        )


def logits_by_split(model: nn.Module, data: dict[str, Dataset]) -> dict[str, np.ndarray]:
    """PyTorch logits of `model` on every split, computed once and shared by the checks."""
    return {key: torch_logits(model, ds.inputs) for key, ds in data.items()}


def ort_logits(onnx_path: Path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: inputs[i : i + BATCH]})[0] for i in range(0, len(inputs), BATCH)]
    )


def top1_percent(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float((logits.argmax(1) == labels).mean())


def export_onnx(model: nn.Module, path: Path, mode: str) -> tuple[str, int]:
    """Export with a dynamic batch dimension; returns (exporter used, opset written).

    `auto` tries the legacy TorchScript exporter first (it writes opset 17 as asked), then the
    dynamo exporter, which in torch 2.9+ writes opset 18 or later (it cannot down-convert Pad).
    """
    import onnx

    example = torch.randn(2, 3, 32, 32)
    errors = []
    for exporter in ("legacy", "dynamo") if mode == "auto" else (mode,):
        try:
            with warnings.catch_warnings():
                # The legacy exporter warns that it is deprecated and that strided Slice is not
                # constant-folded; neither matters here.
                warnings.simplefilter("ignore")
                if exporter == "legacy":
                    torch.onnx.export(
                        model,
                        (example,),
                        str(path),
                        dynamo=False,
                        opset_version=OPSET,
                        input_names=["input"],
                        output_names=["logits"],
                        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    )
                else:
                    torch.onnx.export(
                        model,
                        (example,),
                        str(path),
                        dynamo=True,
                        opset_version=max(OPSET, 18),
                        input_names=["input"],
                        output_names=["logits"],
                        external_data=False,
                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                        verbose=False,
                    )
        except Exception as exc:  # report it and try the next exporter
            errors.append(f"{exporter}: {type(exc).__name__}: {exc}")
            continue
        opset = next(
            o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")
        )
        return exporter, opset
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))


def check_accuracy(
    depth: int, logits: dict[str, np.ndarray], data: dict[str, Dataset]
) -> tuple[dict, list[str]]:
    exact = top1_percent(logits["exact"], data["exact"].labels)
    jpeg = top1_percent(logits["jpeg"], data["jpeg"].labels)
    failures = []
    if abs(exact - PROVENANCE_EXACT_TOP1[depth]) > TOLERANCE_EXACT_POINTS:
        failures.append(
            f"ResNet-{depth} exact-1000 top-1 {exact:.1f} != {PROVENANCE_EXACT_TOP1[depth]}"
        )
    if abs(jpeg - PROVENANCE_JPEG_TOP1[depth]) > TOLERANCE_JPEG_POINTS:
        failures.append(
            f"ResNet-{depth} JPEG-10k top-1 {jpeg:.2f} != {PROVENANCE_JPEG_TOP1[depth]}"
        )
    return {"exact": exact, "jpeg": jpeg}, failures


def check_onnx(
    name: str,
    model: nn.Module,
    torch_ref: dict[str, np.ndarray],
    data: dict[str, Dataset],
    workdir: Path,
    mode: str,
) -> tuple[dict, list[str]]:
    """Export `model`, run it in ONNX Runtime, and compare with its PyTorch logits `torch_ref`."""
    path = workdir / f"{name}.onnx"
    exporter, opset = export_onnx(model, path, mode)
    row = {"exporter": exporter, "opset": opset, "max_abs_diff": 0.0, "disagree": 0}
    failures = []
    for key in ("exact", "jpeg"):
        ds = data[key]
        ref, got = torch_ref[key], ort_logits(path, ds.inputs)
        row[key] = top1_percent(got, ds.labels)
        row["max_abs_diff"] = max(row["max_abs_diff"], float(np.abs(ref - got).max()))
        row["disagree"] += int((ref.argmax(1) != got.argmax(1)).sum())
        if abs(row[key] - top1_percent(ref, ds.labels)) > 0.1:
            failures.append(f"{name}: ONNX Runtime top-1 on {ds.name} differs from PyTorch")
    if row["max_abs_diff"] > 1e-3:
        failures.append(f"{name}: ONNX Runtime logits differ by {row['max_abs_diff']:.2e}")
    return row, failures


def check_pruning(
    model: nn.Module, data: dict[str, Dataset], workdir: Path, mode: str
) -> tuple[dict, list[str]]:
    import torch_pruning as tp

    example = torch.randn(1, 3, 32, 32)
    ignored = pruning_ignored_layers(model)
    kept_widths = {
        id(m): m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in ignored
    }
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=PRUNE_RATIO,
        ignored_layers=ignored,
    )
    groups = sum(
        1 for _ in pruner.DG.get_all_groups(pruner.ignored_layers, pruner.root_module_types)
    )
    pruner.step()
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    model.eval()
    pruned_logits = logits_by_split(model, data)
    failures = []
    widths_now = {
        id(m): m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in ignored
    }
    if widths_now != kept_widths:
        failures.append("torch-pruning changed the width of a layer in PRUNING_IGNORE")
    row = {
        "groups": groups,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "params_before": params_before,
        "params_after": params_after,
        "exact": top1_percent(pruned_logits["exact"], data["exact"].labels),
    }
    onnx_row, onnx_failures = check_onnx(
        f"resnet{PRUNE_DEPTH}_pruned", model, pruned_logits, data, workdir, mode
    )
    row["onnx"] = onnx_row
    return row, failures + onnx_failures


def markdown(results: dict, onnx_rows: dict, prune: dict) -> str:
    lines = [
        "### Top-1, plain PyTorch fp32 (RGB/255, ImageNet mean/std, no resize)",
        "",
        "| model | published | PROVENANCE exact 0-999 | measured exact 0-999 "
        "| PROVENANCE JPEG q75 10k | measured JPEG q75 10k |",
        "|---|---|---|---|---|---|",
    ]
    for depth, r in results.items():
        lines.append(
            f"| ResNet-{depth} | {PUBLISHED_TOP1[depth]:.2f}% "
            f"| {PROVENANCE_EXACT_TOP1[depth]:.1f}% "
            f"| {r['exact']:.1f}% | {PROVENANCE_JPEG_TOP1[depth]:.1f}% | {r['jpeg']:.2f}% |"
        )
    lines += [
        "",
        "### ONNX export + ONNX Runtime (CPUExecutionProvider) vs PyTorch",
        "",
        "| model | exporter | opset | ORT exact 0-999 | ORT JPEG 10k | max abs logit diff "
        "| argmax disagreements |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in onnx_rows.items():
        lines.append(
            f"| {name} | {r['exporter']} | {r['opset']} | {r['exact']:.1f}% | {r['jpeg']:.2f}% "
            f"| {r['max_abs_diff']:.2e} | {r['disagree']} |"
        )
    if prune:
        lines += [
            "",
            f"### torch-pruning: ResNet-{PRUNE_DEPTH}, MetaPruner, GroupMagnitudeImportance(p=2), "
            f"pruning_ratio={PRUNE_RATIO}, no fine-tuning",
            "",
            "| | MACs | params | exact 0-999 top-1 |",
            "|---|---|---|---|",
            f"| before | {prune['macs_before'] / 1e6:.1f} M | {prune['params_before']:,} "
            f"| {results[PRUNE_DEPTH]['exact']:.1f}% |",
            f"| after ({prune['groups']} groups pruned) | {prune['macs_after'] / 1e6:.1f} M "
            f"| {prune['params_after']:,} | {prune['exact']:.1f}% |",
        ]
    return "\n".join(lines) + "\n"


def versions() -> str:
    import onnx
    import onnxruntime
    import torch_pruning

    return (
        f"torch {torch.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, "
        f"torch-pruning {torch_pruning.__version__}, {torch.get_num_threads()} threads"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)"
    )
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS), choices=DEPTHS)
    parser.add_argument(
        "--export",
        choices=["auto", "legacy", "dynamo"],
        default="auto",
        help="ONNX exporter: auto tries legacy (dynamo=False) first, then dynamo",
    )
    parser.add_argument("--no-prune", action="store_true", help="skip the torch-pruning check")
    parser.add_argument(
        "--out", type=Path, help="also write the Markdown tables here (docs/results/...)"
    )
    args = parser.parse_args()

    data_dir = shared_data_dir(args.data)
    exact_images, exact_labels, _ = load_exact_1000(data_dir)
    jpeg_images, jpeg_labels = load_jpeg_10k(data_dir)
    data = {
        "exact": Dataset("exact 0-999", preprocess(exact_images), exact_labels),
        "jpeg": Dataset("JPEG q75 10k", preprocess(jpeg_images), jpeg_labels),
    }
    print(versions(), file=sys.stderr)

    results, onnx_rows, prune, failures = {}, {}, {}, []
    with tempfile.TemporaryDirectory(prefix="compress-eval-") as tmp:
        workdir = Path(tmp)
        for depth in args.depths:
            print(f"ResNet-{depth}: accuracy, ONNX ...", file=sys.stderr)
            model = load_pretrained(depth, weights_dir(data_dir))
            logits = logits_by_split(model, data)
            results[depth], errs = check_accuracy(depth, logits, data)
            failures += errs
            onnx_rows[f"resnet{depth}"], errs = check_onnx(
                f"resnet{depth}", model, logits, data, workdir, args.export
            )
            failures += errs
        if not args.no_prune and PRUNE_DEPTH in results:
            print(f"ResNet-{PRUNE_DEPTH}: pruning ...", file=sys.stderr)
            model = load_pretrained(PRUNE_DEPTH, weights_dir(data_dir))
            prune, errs = check_pruning(model, data, workdir, args.export)
            onnx_rows[f"resnet{PRUNE_DEPTH}_pruned"] = prune["onnx"]
            failures += errs

    report = markdown(results, onnx_rows, prune)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"<!-- python eval/check_baselines.py; {versions()} -->\n\n{report}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
