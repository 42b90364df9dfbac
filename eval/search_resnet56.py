"""`compress search` on the pretrained CIFAR-10 ResNet-56 (shared data): quantization backend and
runtime (ONNX Runtime or OpenVINO, OpenVINO's hint), with the gate at 0.5 points on the exact 1,000.

Splits (no held-out image or its JPEG twin elsewhere, eval/cifar_data.py): held-out = the exact
1,000; calibration = 300 and tuning = 1,000 of the other 9,000 JPEG images; train = the rest
(unused: this space does not fine-tune).

    python eval/search_resnet56.py --work DIR [--data DIR] [--trials 6]
    # then: compress search DIR/resnet56-search.yaml   (the script runs it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cifar_data import _save_npz, shared_data_dir, weights_dir, write_npz_splits  # noqa: E402
from cifar_resnet import checkpoint_path  # noqa: E402

MEAN_STD = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]


def write_splits(data_dir: Path, work: Path) -> dict[str, Path]:
    paths = write_npz_splits(data_dir, work, seed=0)
    with np.load(paths["jpeg_nontwin"]) as z:
        images, labels = z["images"], z["labels"]
    roles = {"heldout": paths["heldout_exact1000"], "calibration": work / "calibration.npz",
             "tuning": work / "tuning.npz"}
    _save_npz(roles["calibration"], images[:300], labels[:300])
    _save_npz(roles["tuning"], images[300:1300], labels[300:1300])
    return roles


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--work", required=True, help="npz files, the recipe and the runs go here")
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    data_dir = shared_data_dir(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "resnet56-search.yaml"
    path.write_text(yaml.safe_dump(recipe(write_splits(data_dir, work), weights_dir(data_dir), args.trials),
                                   sort_keys=False))
    from typer.main import get_command

    from compress.cli import app

    get_command(app).main(["search", str(path)], standalone_mode=True)


if __name__ == "__main__":
    main()
