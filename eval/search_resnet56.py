"""`compress search` on the pretrained CIFAR-10 ResNet-56 (shared data), gate 0.5 points on the exact 1,000.

Two spaces: `--space quantize` varies the quantization backend and the runtime (ONNX Runtime or
OpenVINO, OpenVINO's hint); `--space prune` varies Taylor/random block pruning (MAC budget,
criterion, fine-tuning epochs with feature distillation) before NNCF int8 on OpenVINO THROUGHPUT,
starting from the hand guess (Taylor blocks to 65% of the MACs, 8 epochs, then NNCF).

Splits (no held-out image or its JPEG twin elsewhere, eval/cifar_data.py): held-out = the exact
1,000; calibration = 300 and tuning = 1,000 of the other 9,000 JPEG images; train = the next
`--train-samples` of them (fine-tuning; only the prune space uses it).

    python eval/search_resnet56.py --work DIR [--data DIR] [--space quantize|prune] [--trials 6]
        [--minutes M] [--train-samples N] [--budgets B ...] [--importance I ...] [--epochs E ...]
    python eval/search_resnet56.py --work DIR --compare DIR/runs/search-*/search-result.yaml
    # then: compress search DIR/resnet56-search.yaml   (the script runs it)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import yaml

from compress.run import passive_openmp_wait  # noqa: E402

# before cifar_resnet imports torch: with OpenMP's active wait, fine-tuning on a loaded 2-core machine
# ran ~25x slower in this script (979 s against 40 s for one 8-epoch prune step)
passive_openmp_wait()
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cifar_data import _save_npz, shared_data_dir, weights_dir, write_npz_splits  # noqa: E402
from cifar_resnet import checkpoint_path  # noqa: E402

MEAN_STD = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]


def write_splits(data_dir: Path, work: Path, train_samples: int = 0) -> dict[str, Path]:
    paths = write_npz_splits(data_dir, work, seed=0)
    with np.load(paths["jpeg_nontwin"]) as z:
        images, labels = z["images"], z["labels"]
    roles = {"heldout": paths["heldout_exact1000"], "calibration": work / "calibration.npz",
             "tuning": work / "tuning.npz"}
    _save_npz(roles["calibration"], images[:300], labels[:300])
    _save_npz(roles["tuning"], images[300:1300], labels[300:1300])
    if train_samples:
        roles["train"] = work / "train.npz"
        _save_npz(roles["train"], images[1300:1300 + train_samples], labels[1300:1300 + train_samples])
    return roles


FINETUNE = {"epochs": 8, "lr": 0.01, "batch_size": 32,
            "distill": {"temperature": 4.0, "alpha": 0.7, "features": ["layer1", "layer2", "layer3"],
                        "feature_weight": 20.0},
            "augment": {"flip": True, "crop_padding": 4}}
PRUNE_START = {"granularity": "blocks", "blocks": ["layer*.*"], "macs_budget": 0.65, "importance": "taylor",
               "taylor_batches": 4, "finetune": FINETUNE}


def prune_space(r: dict, minutes: float | None, budgets=(0.45, 0.55, 0.65), importances=("taylor", "random"),
                epochs=(4, 8), batch_size: int = 32, fidelity_samples: int | None = 300) -> dict:
    """The recipe of `recipe()` with the prune space: the hand guess as the start, pruning varied."""
    r["name"] = "cifar-resnet56-prune-search"
    r["variants"] = {
        "onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
        "taylor65-nncf": {"description": "hand guess: Taylor blocks to 65% of the MACs, 8 epochs with feature "
                                         "distillation, NNCF int8 on OpenVINO THROUGHPUT",
                          "targets": ["openvino"],
                          "steps": [{"prune": {**PRUNE_START, "finetune": {**FINETUNE, "batch_size": batch_size}}},
                                    {"export": {"format": "onnx"}},
                                    {"quantize": {"backend": "nncf"}}]},
    }
    r["search"] = {
        "start": "taylor65-nncf",
        "space": {"prune.macs_budget": {"choices": list(budgets)},
                  **({"prune.importance": {"choices": list(importances)}} if len(importances) > 1 else {}),
                  "prune.finetune.epochs": {"choices": list(epochs)}},
        "objective": {"metric": "usd_per_1m", "batch_size": 32, "target": "openvino"},
        "budget": {"trials": r["search"]["budget"]["trials"], **({"minutes": minutes} if minutes else {})},
        **({"fidelity": {"tuning_samples": fidelity_samples, "promote_margin_points": 2.0}}
           if fidelity_samples else {}),
        "front_size": 2,
        "timing_rounds": 5,
    }
    r["targets"] = [t for t in r["targets"] if t["name"] == "ort"] + [
        {"name": "openvino", "runtime": "openvino", "device": "cpu", "threads": 2, "usd_per_hour": 0.17,
         "options": {"hint": "THROUGHPUT", "requests": 2}}]
    return r


def recipe(data: dict[str, Path], weights: Path, trials: int) -> dict:
    return {
        "name": "cifar-resnet56-search",
        "seed": 0,
        "model": {"source": f"python:{HERE / 'cifar_resnet.py'}:resnet56",
                  "checkpoint": {"path": str(checkpoint_path(56, weights)), "key": "state_dict",
                                 "strip_prefix": "module."},
                  "input_shape": [3, 32, 32]},
        "data": {"sources": {k: f"npz:{v}" for k, v in data.items()}, "transform": {"normalize": MEAN_STD}},
        "evaluate": {"robustness": {"when": "never"}},
        "variants": {
            "onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
            "nncf-int8": {"description": "NNCF int8 (its defaults) on OpenVINO THROUGHPUT",
                          "from": "onnx-fp32", "targets": ["openvino"],
                          "steps": [{"quantize": {"backend": "nncf"}}]},
        },
        "search": {
            "start": "nncf-int8",
            "space": {"quantize.backend": {"choices": ["onnxruntime", "nncf"]},
                      "target": {"choices": ["ort", "openvino"]},
                      "targets.openvino.options.hint": {"choices": ["LATENCY", "THROUGHPUT"]}},
            "objective": {"metric": "usd_per_1m", "batch_size": 32},
            "budget": {"trials": trials},
            "front_size": 2,
        },
        "targets": [
            {"name": "ort", "runtime": "onnxruntime", "device": "cpu", "threads": 2, "usd_per_hour": 0.17},
            {"name": "openvino", "runtime": "openvino", "device": "cpu", "threads": 2, "usd_per_hour": 0.17,
             "options": {"hint": "THROUGHPUT", "requests": 2}},
        ],
        "profile": {"batch_sizes": [32], "rounds": 5, "memory": False},
        "gate": {"max_accuracy_drop": 0.5, "min_speedup": 1.5, "reference": "onnx-fp32", "reference_target": "ort"},
        "report": {"dir": str(Path(data["heldout"]).parent / "runs")},
    }


def compare_recipe(result: dict, name: str) -> dict:
    """A search-result.yaml, without its search, plus `nncf-int8`: NNCF int8 of the unpruned model on
    OpenVINO (the best hand-written variant without pruning in docs/results), for one interleaved run."""
    r = copy.deepcopy(result)
    r.pop("search", None)
    r["name"] = name
    r["variants"]["nncf-int8"] = {"description": "NNCF int8 of the unpruned model on OpenVINO (hand-written)",
                                  "from": "onnx-fp32", "targets": ["openvino"],
                                  "steps": [{"quantize": {"backend": "nncf"}}]}
    # the search may have picked other runtime options (a target of its own, e.g. openvino-trial4):
    # the same NNCF int8 there too, so that the hint's share of a gain is visible
    own = {t for v in result["variants"].values() for t in v.get("targets", []) if t != "openvino"}
    for target in sorted(own):
        r["variants"][f"nncf-int8-{target}"] = {**r["variants"]["nncf-int8"], "targets": [target],
                                                "description": f"nncf-int8 on {target}"}
    return r


def run_cli(command: str, recipe: dict, path: Path) -> None:
    """Write ``recipe`` to ``path`` and run `compress COMMAND path` (its exit code ends the script)."""
    from typer.main import get_command

    from compress.cli import app

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    get_command(app).main([command, str(path)], standalone_mode=True)


def run_compare(result_path: str, work: Path, name: str) -> None:
    """Write WORK/compare.yaml from ``result_path`` and run it (`compress run`)."""
    run_cli("run", compare_recipe(yaml.safe_load(Path(result_path).read_text()), name), work / "compare.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--work", required=True, help="npz files, the recipe and the runs go here")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--space", choices=["quantize", "prune"], default="quantize")
    parser.add_argument("--minutes", type=float, help="search.budget.minutes (prune space)")
    parser.add_argument("--train-samples", type=int, default=512,
                        help="fine-tuning images (prune space; at most 7,700: the non-twin JPEGs left after "
                        "calibration and tuning)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.45, 0.55, 0.65],
                        help="prune.macs_budget choices (prune space; the start's 0.65 must be one)")
    parser.add_argument("--importance", nargs="+", default=["taylor", "random"], help="prune.importance choices")
    parser.add_argument("--epochs", type=int, nargs="+", default=[4, 8],
                        help="prune.finetune.epochs choices (the start's 8 must be one)")
    parser.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size (start and space)")
    parser.add_argument("--fidelity-samples", type=int, default=300,
                        help="first stage scores this many tuning samples; 0: one stage (prune space)")
    parser.add_argument("--compare", metavar="SEARCH_RESULT",
                        help="instead: run this search-result.yaml with nncf-int8 (the unpruned model's NNCF "
                        "int8) added, as WORK/compare.yaml")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.compare:
        run_compare(args.compare, work, "cifar-resnet56-search-compare")
        return
    data_dir = shared_data_dir(args.data)
    prune = args.space == "prune"
    splits = write_splits(data_dir, work, args.train_samples if prune else 0)
    r = recipe(splits, weights_dir(data_dir), args.trials)
    if prune:
        r = prune_space(r, args.minutes, args.budgets, args.importance, args.epochs, args.batch_size,
                        args.fidelity_samples or None)
    run_cli("search", r, work / "resnet56-search.yaml")


if __name__ == "__main__":
    main()
