"""Wall time of a recipe in-process vs on a local two-node Ray cluster (docs/scale.md).

Runs eval/scale/four-finetuned.yaml (four independent pruned + fine-tuned variants) in `--passes`
alternating passes: once in this process, once through ``compress.run(..., executor=RayExecutor)``
on a cluster started here (a head with 1 CPU and no target, a worker with 1 CPU and
``target:cpu``; tests/ray_cluster.py), each with a fresh artifact store. Each run is split into
where its time went, from its own log lines: build (baseline + variants), evaluate, profile (and
write). Prints one Markdown table and checks that both runs gave the same accuracies and verdict.

    python eval/bench_scale.py [--passes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RECIPE = REPO / "eval" / "scale" / "four-finetuned.yaml"


class StageClock:
    """A run's log, timestamped: build ends at "evaluating on", evaluate at the first "profiling"."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}

    def __call__(self, msg: str) -> None:
        for stage, prefix in (("build", "evaluating on"), ("evaluate", "profiling")):
            if msg.startswith(prefix) and stage not in self.marks:
                self.marks[stage] = time.perf_counter() - self.t0

    def stages(self, total: float) -> dict[str, float]:
        return {"build": self.marks["build"], "evaluate": self.marks["evaluate"] - self.marks["build"],
                "profile": total - self.marks["evaluate"], "total": total}


def one_run(out: Path, executor=None) -> tuple[dict, object]:
    import compress

    clock = StageClock()
    t0 = time.perf_counter()
    results = compress.run(RECIPE, out_dir=out, log=clock, executor=executor)
    stages = clock.stages(time.perf_counter() - t0)
    raw = json.loads((Path(results.run.run_dir) / "results.json").read_text())
    stages["baseline_train"] = raw["baseline"]["info"]["train"]["seconds"]
    stages["variant_steps"] = {n: sum(s["compute_seconds"] for s in v["steps"]) for n, v in raw["variants"].items()}
    return stages, results


def answer(results) -> tuple:
    models = {"baseline": results.baseline, **results.variants}
    return (results.verdict.exit_code,
            {n: round(m.accuracy.heldout.top1, 6) for n, m in models.items() if m.accuracy})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from compress.run.ray_executor import RayExecutor
    from tests.ray_cluster import LocalCluster

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    rows: dict[str, list[dict]] = {"in-process": [], "ray, 2 nodes": []}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        cluster = LocalCluster(Path(tmp), pythonpath=REPO).start([{}, {"target:cpu": 1}])
        try:
            os.environ.update({k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
            answers = set()
            for i in range(args.passes):
                for how in (rows if i % 2 == 0 else reversed(list(rows))):
                    load = os.getloadavg()[0]
                    if how == "in-process":
                        stages, res = one_run(Path(tmp) / f"local-{i}")
                    else:
                        with RayExecutor(address=cluster.address, log=lambda _m: None) as ex:
                            stages, res = one_run(Path(tmp) / f"ray-{i}", ex)
                    rows[how].append({**stages, "load": load})
                    answers.add(repr(answer(res)))
                    print(f"pass {i} {how}: {stages} (load {load:.1f})", file=sys.stderr)
        finally:
            cluster.stop()
    print(f"Host: {model}, {os.cpu_count()} logical cores, Python {platform.python_version()}; "
          f"{args.passes} pass(es), fresh artifact store each run.\n")
    print("| executor | build s | of which baseline training s | variants' steps s (sum / longest) "
          "| evaluate s | profile + write s | total s | 1-min load at start |")
    print("|---|---|---|---|---|---|---|---|")
    for how, runs in rows.items():
        for r in runs:
            steps = r["variant_steps"].values()
            print(f"| {how} | {r['build']:.1f} | {r['baseline_train']:.1f} | {sum(steps):.1f} / {max(steps):.1f} "
                  f"| {r['evaluate']:.1f} | {r['profile']:.1f} | {r['total']:.1f} | {r['load']:.1f} |")
    print(f"\nSame accuracies and verdict in every run: {len(answers) == 1}")
    return 0 if len(answers) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
