"""Does timing several ONNX Runtime sessions interleaved in one process change what each one reads?

Builds ResNet-20 fp32 / int8 / pruned (as eval/bench_profiler.py does) and, in `--passes`
alternating passes, times fp32 at batch 32 three ways, back to back:

- `three`: compress's profiler with the three sessions interleaved (what `compress run` does: each
  variant's block of calls starts with one untimed settle call);
- `three-nosettle`: the same with `settle_runs=0`, i.e. the first call after another session is timed;
- `alone`: compress's profiler with the fp32 session only;
- `timeit`: `timeit` in a separate process (eval/bench_profiler.py's independent measurement).

It prints each pass and the per-pass ratios to timeit of the three profiler readings.

    python eval/bench_profiler_interleave.py [--data DIR] [--passes 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_profiler as bench
    from cifar_data import load_exact_1000, preprocess, shared_data_dir

    from compress.measure.timing import time_sessions
    from compress.runtimes.onnxruntime import OrtSession

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    data_dir = shared_data_dir(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-interleave-") as tmp:
        work = Path(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths = bench.build_variants(20, data_dir, work)
        x = preprocess(load_exact_1000(data_dir)[0][:32])
        np.save(work / "b32.npy", x)
        res: dict[str, list[float]] = {"three": [], "three-nosettle": [], "alone": [], "timeit": []}

        def sessions(names):
            return {n: OrtSession(str(paths[n]), "cpu", bench.THREADS, "all", {}) for n in names}

        for p in range(args.passes):
            order = ("three", "three-nosettle", "alone", "timeit")
            for how in order if p % 2 == 0 else order[::-1]:
                if how == "timeit":
                    res[how].append(bench.timeit_child(paths["fp32"], work / "b32.npy", 20))
                    continue
                names = list(paths) if how.startswith("three") else ["fp32"]
                out = time_sessions(sessions(names), lambda bs: x[:bs], [32], rounds=5, min_round_s=0.2,
                                    max_extra_rounds=0, settle_runs=0 if how == "three-nosettle" else 1)
                res[how].append(out["fp32"][32]["p50_ms"])
            print(f"pass {p + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in res.items()), flush=True)
    t = np.array(res["timeit"])
    for how in ("three", "three-nosettle", "alone"):
        ratios = np.array(res[how]) / t
        print(f"{how}/timeit per pass: {', '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
