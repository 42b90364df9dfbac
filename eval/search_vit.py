"""`compress search` on the CIFAR-10 ViT of the shared data (eval/vit_cifar.py), gate 1.0 point on the exact 1,000.

Two spaces, each starting from a hand guess that is fine-tuned with distillation from the unpruned
ViT, exported, quantized by NNCF and run by OpenVINO:

- `--space ffn` (default): a quarter of every encoder layer's FFN neurons cut (L2, as eval/vit.yaml's
  `pruned-ffn`); varied: the FFN ratio (1/8, 1/4, 1/2), fine-tuning epochs and OpenVINO's hint.
- `--space layers`: one of encoder layers 1-5 removed (Taylor); varied: how many layers go (1 or 2),
  fine-tuning epochs, hidden-state distillation of each kept layer from the layer it came from, and
  OpenVINO's hint.

The objective is $ per 1M inferences at batch 32 on OpenVINO; the gate is 1.0 point of top-1 and
1.5x over ONNX Runtime fp32 at batch 32.

Splits (eval/search_resnet56.py's, no held-out image or its JPEG twin elsewhere): held-out = the
exact 1,000; calibration = 300 and tuning = 1,000 of the other 9,000 JPEG test images; train = the
next `--train-samples` of them. The recipe also carries `nncf-int8` (NNCF int8 of the unpruned ViT on
OpenVINO, the best hand-written ViT variant within 1 point in docs/results/transformers.md) so that
`compress run DIR/compare.yaml` times it against the search's result in one run.

    python eval/search_vit.py --work DIR [--data DIR] [--space ffn|layers] [--trials 10] [--minutes M]
        [--train-samples N]
    python eval/search_vit.py --work DIR --compare DIR/runs/search-*/search-result.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compress.run import passive_openmp_wait  # noqa: E402

passive_openmp_wait()  # before torch is imported (eval/search_resnet56.py: ~25x slower fine-tuning without)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cifar_data import shared_data_dir  # noqa: E402
from search_resnet56 import run_cli, run_compare, write_splits  # noqa: E402
from vit_cifar import MEAN_RGB, NEEDS, STD_RGB, WEIGHTS  # noqa: E402

FINETUNE = {"epochs": 3, "lr": 0.002, "distill": {"temperature": 4.0, "alpha": 0.7}}
PRUNE_LAYERS = {"granularity": "blocks", "blocks": ["transformer.layers.[1-5]"], "ratio": 0.2,
                "importance": "taylor", "finetune": FINETUNE}
# eval/vit.yaml's pruned-ffn: only the FFN's hidden neurons (linear1's outputs) are cut
PRUNE_FFN = {"ratio": 0.25, "importance": "l2", "finetune": FINETUNE,
             "ignore": ["patch_embed.proj", "transformer.layers.*.self_attn*", "transformer.layers.*.linear2",
                        "mlp_head*"]}
SPACES = {
    "layers": ("layers-nncf", "hand guess: 1 of encoder layers 1-5 removed (Taylor), 3 epochs of distillation, "
               "NNCF int8 on OpenVINO", PRUNE_LAYERS,
               {"prune.ratio": {"choices": [0.2, 0.4]}, "prune.finetune.epochs": {"choices": [3, 6]},
                "prune.finetune.distill.hidden_states": {"choices": [False, True]},
                "targets.openvino.options.hint": {"choices": ["LATENCY", "THROUGHPUT"]}}),
    "ffn": ("ffn-nncf", "hand guess: a quarter of every FFN's neurons removed (L2), 3 epochs of distillation, "
            "NNCF int8 on OpenVINO", PRUNE_FFN,
            {"prune.ratio": {"choices": [0.125, 0.25, 0.5]}, "prune.finetune.epochs": {"choices": [3, 6]},
             "targets.openvino.options.hint": {"choices": ["LATENCY", "THROUGHPUT"]}}),
}


def recipe(data: dict[str, Path], weights: Path, trials: int, minutes: float | None, space: str = "ffn") -> dict:
    start, description, prune, dims = SPACES[space]
    return {
        "name": "cifar-vit-search",
        "seed": 0,
        "model": {"source": f"python:{HERE / 'vit_cifar.py'}:build", "checkpoint": str(weights),
                  "input_shape": [3, 32, 32]},
        "data": {"sources": {k: f"npz:{v}" for k, v in data.items()},
                 "transform": {"normalize": [MEAN_RGB.tolist(), STD_RGB.tolist()]}},
        "evaluate": {"robustness": {"when": "never"}},
        "variants": {
            "onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
            start: {"description": description, "targets": ["openvino"],
                    "steps": [{"prune": prune}, {"export": {"format": "onnx"}}, {"quantize": {"backend": "nncf"}}]},
        },
        "search": {
            "start": start,
            "space": dims,
            "objective": {"metric": "usd_per_1m", "batch_size": 32, "target": "openvino"},
            "budget": {"trials": trials, **({"minutes": minutes} if minutes else {})},
            "front_size": 2,
            "timing_rounds": 5,
        },
        "targets": [
            {"name": "ort", "runtime": "onnxruntime", "device": "cpu", "threads": 2, "usd_per_hour": 0.17},
            {"name": "openvino", "runtime": "openvino", "device": "cpu", "threads": 2, "usd_per_hour": 0.17,
             "options": {"hint": "LATENCY"}},
        ],
        "profile": {"batch_sizes": [32], "rounds": 5, "memory": False},
        "gate": {"max_accuracy_drop": 1.0, "min_speedup": 1.5, "reference": "onnx-fp32", "reference_target": "ort"},
        "report": {"dir": str(Path(data["heldout"]).parent / "runs")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--work", required=True, help="npz files, the recipe and the runs go here")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--minutes", type=float, help="search.budget.minutes")
    parser.add_argument("--space", choices=sorted(SPACES), default="ffn",
                        help="ffn: FFN neurons cut (default); layers: encoder layers removed")
    parser.add_argument("--train-samples", type=int, default=7700,
                        help="fine-tuning images (at most 7,700: the non-twin JPEGs left after calibration and tuning)")
    parser.add_argument("--compare", metavar="SEARCH_RESULT",
                        help="instead: write DIR/compare.yaml from this search-result.yaml (plus nncf-int8) and run it")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.compare:
        run_compare(args.compare, work, "cifar-vit-search-compare")
        return
    data_dir = shared_data_dir(args.data, needs=NEEDS)
    splits = write_splits(data_dir, work, args.train_samples)
    run_cli("search", recipe(splits, data_dir / WEIGHTS, args.trials, args.minutes, args.space), work / "vit-search.yaml")


if __name__ == "__main__":
    main()
