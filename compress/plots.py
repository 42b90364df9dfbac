"""Pareto plots beside report.md: held-out top-1 against latency and against $ per 1M inferences.

One PNG per target that timed at least one model, named by ``plot_filename``; the report embeds
the same names (``plotted_targets`` decides for both, so an embed never points at a missing file).
matplotlib is imported inside ``write_plots`` and drawn with the Agg canvas directly, so no GUI
backend or global pyplot state is involved.
"""

from __future__ import annotations

import re
from pathlib import Path

from compress.errors import MissingDependency


def plot_filename(target: str) -> str:
    return "pareto-" + re.sub(r"[^A-Za-z0-9._-]+", "_", target) + ".png"


def _points(results: dict, target: str) -> list[dict]:
    """One point per model timed on ``target``: top-1 and, at the largest batch size, p50 ms
    per batch and $ per 1M."""
    out = []
    for name, v in {"baseline": results["baseline"], **results["variants"]}.items():
        if v.get("status") == "failed":
            continue
        lat = (v.get("latency") or {}).get(target)
        top1 = ((v.get("accuracy") or {}).get("heldout") or {}).get("top1")
        if not lat or top1 is None:
            continue
        bs = max(lat, key=int)
        m = lat[bs]
        verdict = (v.get("gate") or {}).get("verdict", "reference" if name == "baseline" else "")
        out.append({"name": name, "top1": top1, "p50_ms": m["p50_ms"], "batch_size": int(bs),
                    "usd_per_1m": m.get("usd_per_1m"), "verdict": verdict})
    return out


def plotted_targets(results: dict) -> list[str]:
    """Targets that get a Pareto plot: those where at least one model was timed."""
    return [t["name"] for t in results["targets"] if _points(results, t["name"])]


def pareto_front(points: list[dict], cost_key: str) -> list[dict]:
    """Points no other point beats on both cost (lower) and top-1 (higher), cheapest first."""
    pts = [p for p in points if p.get(cost_key) is not None]
    front = [p for p in pts if not any(
        q is not p and q[cost_key] <= p[cost_key] and q["top1"] >= p["top1"]
        and (q[cost_key] < p[cost_key] or q["top1"] > p["top1"]) for q in pts)]
    return sorted(front, key=lambda p: p[cost_key])


_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "reference": "#1565c0", "not gated": "#757575"}


def _panel(ax, points: list[dict], cost_key: str, xlabel: str, recommended: str | None) -> None:
    pts = [p for p in points if p.get(cost_key) is not None]
    front = pareto_front(pts, cost_key)
    if len(front) > 1:
        ax.plot([p[cost_key] for p in front], [p["top1"] for p in front], "-", color="#9e9e9e",
                zorder=1, label="Pareto front")
    # neighbours in cost alternate above and below their point, so close points keep legible labels
    for i, p in enumerate(sorted(pts, key=lambda p: p[cost_key])):
        on_front = p in front
        ax.scatter(p[cost_key], p["top1"], s=70 if on_front else 40, zorder=2,
                   color=_COLOURS.get(p["verdict"], "#424242"),
                   edgecolors="black" if p["name"] == recommended else "none", linewidths=1.5)
        label = p["name"] + (" (recommended)" if p["name"] == recommended else "")
        ax.annotate(label, (p[cost_key], p["top1"]), textcoords="offset points",
                    xytext=(6, 6 if i % 2 == 0 else -13), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.15)


def render_plot(results: dict, target: str, path: Path) -> Path:
    """Draw the Pareto plot of ``target`` to ``path`` (PNG)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        raise MissingDependency("matplotlib", "dev", "The report's Pareto plot") from None
    points = _points(results, target)
    has_cost = any(p["usd_per_1m"] is not None for p in points)
    fig = Figure(figsize=(11 if has_cost else 6, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    recommended = (results.get("verdict") or {}).get("recommended")
    bs = {p["batch_size"] for p in points}
    bs_txt = f"batch {bs.pop()}" if len(bs) == 1 else "largest batch profiled"
    axes = fig.subplots(1, 2 if has_cost else 1, squeeze=False)[0]
    _panel(axes[0], points, "p50_ms", f"p50 latency, ms per batch ({bs_txt})", recommended)
    if has_cost:
        _panel(axes[1], points, "usd_per_1m", f"$ per 1M inferences ({bs_txt})", recommended)
    fig.suptitle(f"{results['recipe']['name']} on {target}: accuracy against cost "
                 "(up and left is better; colour = gate verdict)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """Write one Pareto PNG per plotted target into ``out_dir``; return the paths."""
    return [render_plot(results, t, Path(out_dir) / plot_filename(t)) for t in plotted_targets(results)]
