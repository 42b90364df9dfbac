"""Does the evaluator's drift check flag a real shift, and stay quiet on no shift?

Real data: pretrained CIFAR-10 ResNet-20 (akamaster weights), the exact CIFAR-10 test images 0-999
as the held-out reference, and the 9,000 JPEG (q75) test images that are not twins of them as the
production data: a natural shift that costs the model about 10 points. Both checks of
``compress.measure.drift`` run on the model's per-sample outputs:

- labelled: accuracy on the production images against held-out (``labelled_shift``, Fisher's test);
- unlabelled: shift of confidence and predicted classes (``prediction_shift``: PSI, KS + chi-square,
  Bonferroni at alpha 0.05).

No-shift control: two random halves of the same set, over many seeds; the false-alarm rate must be
at most the nominal 5%. The model runs once per image (logits are cached); every seed resamples.

    python eval/bench_evaluator.py [--data DIR] [--seeds 200] [--power-seeds N] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ALPHA = 0.05


class _TorchSession:
    def __init__(self, module):
        self.module = module

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(batch)).numpy()


def _split(role: str, images_nhwc: np.ndarray, labels: np.ndarray, source: str):
    from cifar_data import MEAN_RGB, STD_RGB

    from compress.sources.data import Split

    x = np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return Split.from_arrays(role, x, labels.astype(np.int64), MEAN_RGB.reshape(1, 3, 1, 1),
                 STD_RGB.reshape(1, 3, 1, 1), source)


def model_outputs(data_dir: Path, cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """ResNet-20 predictions, confidence and correctness on the exact 1,000 and the 9,000 JPEG
    non-twins, through ``compress.measure.accuracy.evaluate``; cached in ``cache``."""
    if cache.is_file():
        with np.load(cache) as z:
            return {s: {k: z[f"{s}/{k}"] for k in ("predictions", "confidence", "correct")}
                    for s in ("exact", "jpeg")}
    import torch
    from cifar_data import load_exact_1000, load_jpeg_10k, non_twin_jpeg_rows, weights_dir
    from cifar_resnet import load_pretrained

    from compress.measure.accuracy import evaluate

    torch.set_num_threads(2)
    session = _TorchSession(load_pretrained(20, weights_dir(data_dir)))
    exact_images, exact_labels, _ = load_exact_1000(data_dir)
    jpeg_images, jpeg_labels = load_jpeg_10k(data_dir)
    rows = non_twin_jpeg_rows(data_dir)
    out = {}
    for name, split in (
        ("exact", _split("heldout", exact_images, exact_labels, "exact 0-999")),
        ("jpeg", _split("production", jpeg_images[rows], jpeg_labels[rows], "jpeg non-twins")),
    ):
        t0 = time.perf_counter()
        r = evaluate(session, split, batch_size=250, keep_logits=False)
        print(f"ResNet-20 on {split.source}: top-1 {r.top1:.2f}% (n={r.n}, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
        out[name] = {"predictions": r.predictions, "confidence": r.confidence, "correct": r.correct}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"{s}/{k}": v for s, d in out.items() for k, v in d.items()})
    return out


def _checks(ref: dict, cur: dict, idx_ref, idx_cur) -> tuple[dict, dict]:
    from compress.measure.drift import labelled_shift, prediction_shift

    lab = labelled_shift(ref["correct"][idx_ref], cur["correct"][idx_cur], paired=False,
                         alpha=ALPHA, n_resamples=200)
    unl = prediction_shift(ref["predictions"][idx_ref], ref["confidence"][idx_ref],
                           cur["predictions"][idx_cur], cur["confidence"][idx_cur], 10, alpha=ALPHA)
    return lab, unl


def _rates(ref: dict, cur: dict, draw, seeds: int, seed_offset: int = 0) -> dict:
    """Fraction of seeds each check flags, for index pairs drawn by ``draw(rng)``."""
    flags = {"labelled": 0, "unlabelled": 0, "ks": 0, "chi2": 0}
    psi = []
    for seed in range(seed_offset, seed_offset + seeds):
        idx_ref, idx_cur = draw(np.random.default_rng(seed))
        lab, unl = _checks(ref, cur, idx_ref, idx_cur)
        flags["labelled"] += lab["flagged"]
        flags["unlabelled"] += unl["flagged"]
        flags["ks"] += unl["ks"]["p_value"] < ALPHA / 2
        flags["chi2"] += unl["chi2"]["p_value"] < ALPHA / 2
        psi.append(unl["psi_confidence"])
    out = {k: v / seeds for k, v in flags.items()}
    out["psi_confidence_median"] = float(np.median(psi))
    return out


def _binomial_upper(rate: float, seeds: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a rate observed over ``seeds`` trials."""
    from scipy.stats import beta

    k = round(rate * seeds)
    return 1.0 if k == seeds else float(beta.ppf(0.95, k + 1, seeds - k))


def run(data_dir: Path, seeds: int, cache: Path, power_seeds: int | None = None,
        seed_offset: int = 0) -> str:
    out = model_outputs(data_dir, cache)
    exact, jpeg = out["exact"], out["jpeg"]
    n_exact, n_jpeg = len(exact["correct"]), len(jpeg["correct"])
    all_exact, all_jpeg = np.arange(n_exact), np.arange(n_jpeg)

    lab, unl = _checks(exact, jpeg, all_exact, all_jpeg)
    lines = [
        "### Real shift: exact images (held-out reference) vs JPEG non-twins (production)",
        "",
        "| check | reference (n) | production (n) | result | p-value | flagged |",
        "|---|---|---|---|---|---|",
        f"| labelled: top-1 | {lab['heldout_top1']:.2f}% ({n_exact}) | {lab['drift_top1']:.2f}% "
        f"({n_jpeg}) | change {lab['change_points']:+.2f} points [95% CI "
        f"{lab['change_interval']['low']:+.2f}, {lab['change_interval']['high']:+.2f}] | "
        f"{lab['p_value']:.2g} (Fisher) | **{'yes' if lab['flagged'] else 'no'}** |",
        f"| unlabelled: confidence | mean {unl['confidence_mean_reference']:.3f} ({n_exact}) | "
        f"mean {unl['confidence_mean_current']:.3f} ({n_jpeg}) | PSI {unl['psi_confidence']:.3f} "
        f"({unl['psi_confidence_reading']}), KS D={unl['ks']['statistic']:.3f} | "
        f"{unl['ks']['p_value']:.2g} (KS) | **{'yes' if unl['flagged'] else 'no'}** "
        f"(combined p={unl['p_value']:.2g}) |",
        f"| unlabelled: predicted classes | ({n_exact}) | ({n_jpeg}) | PSI {unl['psi_classes']:.3f} "
        f"({unl['psi_classes_reading']}), chi2={unl['chi2']['statistic']:.1f} | "
        f"{unl['chi2']['p_value']:.2g} (chi-square) | (part of the line above) |",
        "",
    ]

    def halves(n):
        def draw(rng):
            order = rng.permutation(n)
            return order[: n // 2], order[n // 2 :]
        return draw

    def subsample(size):
        def draw(rng):
            return all_exact, rng.choice(n_jpeg, size=size, replace=False)
        return draw

    rows = [
        ("no shift: two random halves of the exact 1,000", exact, exact, halves(n_exact), "500 vs 500", True),
        ("no shift: two random halves of the 9,000 JPEG", jpeg, jpeg, halves(n_jpeg), "4500 vs 4500", True),
        ("JPEG shift: exact 1,000 vs 1,000 random JPEG", exact, jpeg, subsample(1000), "1000 vs 1000", False),
        ("JPEG shift: exact 1,000 vs 250 random JPEG", exact, jpeg, subsample(250), "1000 vs 250", False),
        ("JPEG shift: exact 1,000 vs 100 random JPEG", exact, jpeg, subsample(100), "1000 vs 100", False),
    ]
    power_seeds = power_seeds or seeds
    lines += [
        f"### How often each check flags (alpha = {ALPHA}): {seeds} seeds per no-shift row, "
        f"{power_seeds} per shift row (seeds from {seed_offset})",
        "",
        "False-alarm rate on the no-shift rows (must be <= 5%; the 95% upper bound is a one-sided "
        "Clopper-Pearson bound over the seeds), detection rate (power) on the shift rows.",
        "",
        "| case | samples | labelled (Fisher) | unlabelled (KS + chi2, Bonferroni) | KS alone at 2.5% "
        "| chi2 alone at 2.5% | median PSI of confidence |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ref, cur, draw, sizes, null in rows:
        t0 = time.perf_counter()
        n_seeds = seeds if null else power_seeds
        r = _rates(ref, cur, draw, n_seeds, seed_offset)

        def cell(rate, null=null, n_seeds=n_seeds):
            return f"{rate:.2%} (<= {_binomial_upper(rate, n_seeds):.2%})" if null else f"{rate:.1%}"

        lines.append(
            f"| {name} | {sizes} | {cell(r['labelled'])} | {cell(r['unlabelled'])} | "
            f"{r['ks']:.1%} | {r['chi2']:.1%} | {r['psi_confidence_median']:.3f} |"
        )
        print(f"{name}: {r} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return "\n".join(lines)


PIPELINE_RECIPE = """\
# Written by eval/bench_evaluator.py --pipeline: the evaluator inside a whole run on real data.
name: evaluator-cifar-resnet20
seed: 0
model:
  source: python:{model_file}:resnet20
  checkpoint: {{path: {checkpoint}, key: state_dict, strip_prefix: "module."}}
  input_shape: [3, 32, 32]
data:
  sources: {{heldout: npz:heldout_exact1000.npz, calibration: npz:calibration_jpeg500.npz}}
  transform: {{normalize: [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]}}
  drift: {{source: npz:drift_jpeg2000.npz}}
  production: {{source: npz:production_jpeg2000_unlabelled.npz}}
variants:
  onnx-fp32:
    steps:
      - export: {{format: onnx}}
  int8:
    from: onnx-fp32
    steps:
      - quantize: {{mode: static}}
targets:
  - {{name: cpu, runtime: onnxruntime, device: cpu, threads: 2}}
profile: {{batch_sizes: [32], rounds: 3, warmup: 2}}
gate:
  mode: confident
  max_accuracy_drop: 1.0
  max_drift_drop_increase: 2.0
  reference: onnx-fp32
"""


def pipeline_check(data_dir: Path, workdir: Path) -> str:
    """A whole `compress run` with the exact 1,000 as held-out, 500 JPEG non-twins as calibration,
    2,000 others as the labelled drift set and 2,000 more, labels removed, as production data."""
    from cifar_data import load_exact_1000, load_jpeg_10k, non_twin_jpeg_rows, weights_dir
    from cifar_resnet import checkpoint_path

    from compress.recipe import load_recipe
    from compress.run.pipeline import run_recipe

    workdir.mkdir(parents=True, exist_ok=True)
    exact_images, exact_labels, _ = load_exact_1000(data_dir)
    jpeg_images, jpeg_labels = load_jpeg_10k(data_dir)
    rows = non_twin_jpeg_rows(data_dir)
    rows = rows[np.random.default_rng(0).permutation(len(rows))]  # the file is sorted by class
    np.savez(workdir / "heldout_exact1000.npz", images=exact_images, labels=exact_labels)
    for name, part in (("calibration_jpeg500", rows[:500]), ("drift_jpeg2000", rows[500:2500])):
        np.savez(workdir / f"{name}.npz", images=jpeg_images[part], labels=jpeg_labels[part])
    np.savez(workdir / "production_jpeg2000_unlabelled.npz", images=jpeg_images[rows[2500:4500]])
    recipe_path = workdir / "recipe.yaml"
    recipe_path.write_text(PIPELINE_RECIPE.format(
        model_file=Path(__file__).resolve().parent / "cifar_resnet.py",
        checkpoint=checkpoint_path(20, weights_dir(data_dir)),
    ))
    outcome = run_recipe(load_recipe(recipe_path), recipe_path, out_dir=workdir / "runs",
                         use_cache=False)
    res = outcome.results
    lines = [
        "### A whole run: `compress run` with the exact 1,000 as held-out, JPEG as drift and production",
        "",
        "| model | held-out top-1 (n) | change vs baseline [95% CI] | drift top-1 (n) | drift flagged "
        "(Fisher p) | extra drop on drift vs baseline [95% CI] | production: PSI conf. / KS p / "
        "chi2 p (n) | production flagged | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in [("baseline", res["baseline"]), *res["variants"].items()]:
        acc, drift = v["accuracy"], v["drift"]
        lab, prod = drift["labelled"], drift["production"]
        change = (f"{acc['change_points']:+.2f} [{acc['change_interval']['low']:+.2f}, "
                  f"{acc['change_interval']['high']:+.2f}]" if "change_points" in acc else "—")
        deg = lab.get("degradation")
        extra = (f"{deg['drop_increase_points']:+.2f} [{deg['drop_increase_interval']['low']:+.2f}, "
                 f"{deg['drop_increase_interval']['high']:+.2f}]" if deg else "—")
        lines.append(
            f"| {name} | {acc['heldout']['top1']:.2f}% ({acc['heldout']['n']}) | {change} | "
            f"{lab['drift_top1']:.2f}% ({lab['drift_n']}) | {'yes' if lab['flagged'] else 'no'} "
            f"({lab['p_value']:.2g}) | {extra} | {prod['psi_confidence']:.3f} / "
            f"{prod['ks']['p_value']:.2g} / {prod['chi2']['p_value']:.2g} ({prod['current_n']}) | "
            f"{'yes' if prod['flagged'] else 'no'} | {(v.get('gate') or {}).get('verdict', '—')} |"
        )
    lines += ["", f"Run directory: `{outcome.run_dir}` (exit code {outcome.exit_code})."]
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                import os

                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    from cifar_data import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--seeds", type=int, default=200, help="random splits per no-shift row")
    parser.add_argument("--power-seeds", type=int, default=None,
                        help="random subsamples per shift row (default: --seeds)")
    parser.add_argument("--cache", default="/tmp/compress-bench-evaluator/resnet20-outputs.npz",
                        help="where the model's per-sample outputs are cached")
    parser.add_argument("--seed-offset", type=int, default=0, help="first seed (an independent replication)")
    parser.add_argument("--out", help="write the tables (Markdown) to this file as well")
    parser.add_argument("--pipeline", metavar="WORKDIR",
                        help="also run a whole `compress run` on the real data in WORKDIR")
    args = parser.parse_args()
    data_dir = shared_data_dir(args.data)
    started = dt.datetime.now(dt.timezone.utc)
    tables = run(data_dir, args.seeds, Path(args.cache), args.power_seeds, args.seed_offset)
    if args.pipeline:
        tables += "\n\n" + pipeline_check(data_dir, Path(args.pipeline))
    stamp = (f"Measured {started:%Y-%m-%d %H:%M} UTC on {_cpu_name()}, "
             f"Python {platform.python_version()}.")
    print(tables)
    print(stamp)
    if args.out:
        Path(args.out).write_text(tables + "\n\n" + stamp + "\n")


if __name__ == "__main__":
    main()
