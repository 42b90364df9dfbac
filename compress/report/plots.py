"""Pareto plots beside report.md: held-out top-1 against latency and against $ per 1M inferences.

One PNG per target that timed at least one model, named by ``plot_filename``; the report embeds
the same names (``plotted_targets`` decides for both, so an embed never points at a missing file).
matplotlib is imported inside ``write_plots`` and drawn with the Agg canvas directly, so no GUI
backend or global pyplot state is involved.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from compress.errors import CompressError, MissingDependency


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
        if not all(math.isfinite(x) for x in (top1, m["p50_ms"])):
            continue
        usd = m.get("usd_per_1m")
        verdict = (v.get("gate") or {}).get("verdict", "reference" if name == "baseline" else "")
        out.append({"name": name, "top1": top1, "p50_ms": m["p50_ms"], "batch_size": int(bs),
                    "usd_per_1m": usd if usd is not None and math.isfinite(usd) else None, "verdict": verdict})
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


def _panel(ax, points: list[dict], cost_key: str, xlabel: str, recommended: str | None) -> list[tuple]:
    """Draw one panel's points and front; return (x, y, label) for ``_place_labels``."""
    pts = [p for p in points if p.get(cost_key) is not None]
    front = pareto_front(pts, cost_key)
    if len(front) > 1:
        ax.plot([p[cost_key] for p in front], [p["top1"] for p in front], "-", color="#9e9e9e", zorder=1)
    labels = []
    for p in sorted(pts, key=lambda p: p[cost_key]):
        ax.scatter(p[cost_key], p["top1"], s=70 if p in front else 40, zorder=2,
                   color=_COLOURS.get(p["verdict"], "#424242"),
                   edgecolors="black" if p["name"] == recommended else "none", linewidths=1.5)
        labels.append((p[cost_key], p["top1"], p["name"] + (" (recommended)" if p["name"] == recommended else "")))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    return labels


# Label positions tried in turn, in pixels from the point: right/left of it, above/below.
_OFFSETS = [(6, 4), (6, -14), (-6, 4), (-6, -14), (6, 16), (6, -26), (-6, 16), (-6, -26)]


def _place_labels(ax, labels: list[tuple], fontsize: int = 8) -> None:
    """Label each point where its text overlaps no earlier label and no other point, so close
    variants (e.g. pruned and pruned-int8) stay legible. Call after the layout is final."""
    xy = [tuple(ax.transData.transform((x, y))) for x, y, _ in labels]
    taken = []
    char_px = 0.62 * fontsize * ax.figure.dpi / 72
    height = fontsize * ax.figure.dpi / 72 + 2

    def free(box, own):
        x0, y0, x1, y1 = box
        hits_label = any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in taken)
        hits_point = any(x0 - 5 < px < x1 + 5 and y0 - 5 < py < y1 + 5 for i, (px, py) in enumerate(xy) if i != own)
        return not hits_label and not hits_point

    for i, ((x, y, text), (px, py)) in enumerate(zip(labels, xy, strict=True)):
        width = char_px * len(text)
        boxes = [((px + dx if dx > 0 else px + dx - width), py + dy, dx, dy) for dx, dy in _OFFSETS]
        chosen = next((b for b in boxes if free((b[0], b[1], b[0] + width, b[1] + height), i)), boxes[0])
        left, bottom, dx, dy = chosen
        taken.append((left, bottom, left + width, bottom + height))
        ax.annotate(text, (x, y), textcoords="offset pixels", xytext=(dx, dy), fontsize=fontsize,
                    ha="left" if dx > 0 else "right", va="bottom")


def render_plot(results: dict, target: str, path: Path) -> Path:
    """Draw the Pareto plot of ``target`` to ``path`` (PNG)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
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
    panels = [(axes[0], _panel(axes[0], points, "p50_ms", f"p50 latency, ms per batch ({bs_txt})", recommended))]
    if has_cost:
        panels.append((axes[1], _panel(axes[1], points, "usd_per_1m", f"$ per 1M inferences ({bs_txt})",
                                       recommended)))
    present = sorted({p["verdict"] for p in points if p["verdict"] in _COLOURS})
    handles = [Line2D([], [], marker="o", linestyle="", color=_COLOURS[v], label=v) for v in present]
    handles.append(Line2D([], [], color="#9e9e9e", label="Pareto front"))
    axes[-1].legend(handles=handles, fontsize=8, loc="best", title="gate verdict", title_fontsize=8)
    fig.suptitle(f"{results['recipe']['name']} on {target}: held-out accuracy against cost "
                 "(up and left is better)", fontsize=10)
    fig.tight_layout()
    for ax, labels in panels:
        _place_labels(ax, labels)
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """Write one Pareto PNG per plotted target into ``out_dir``; return the paths.

    A drawing failure is a CompressError (exit 3) naming the target, never a bare traceback whose
    exit code 1 would read as a failed gate."""
    paths = []
    for target in plotted_targets(results):
        try:
            paths.append(render_plot(results, target, Path(out_dir) / plot_filename(target)))
        except CompressError:
            raise
        except Exception as err:
            raise CompressError(f"drawing the Pareto plot of target {target!r} failed: {err!r}") from err
    return paths
