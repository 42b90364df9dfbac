"""The search's plot beside its report.md: every measured trial's tuning top-1 change against its
objective, the tuning front, and the held-out result of each front member (drawn as in
compress/report/plots.py: the Agg canvas directly, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

from compress.errors import MissingDependency
from compress.report.plots import _place_labels


def render_search_plot(summary: dict, metric: str, path: Path) -> Path | None:
    """Draw the search plot to ``path`` (PNG); None when no trial was measured."""
    measured = [r for r in summary["trials"] if r["state"] == "COMPLETE" and r.get("values")]
    if not measured:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        raise MissingDependency("matplotlib", "dev", "The search plot") from None
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    feasible = [r for r in measured if max(r["constraint"]) <= 0]
    others = [r for r in measured if max(r["constraint"]) > 0]
    for rows, colour, label in ((feasible, "#2e7d32", "passes on tuning"), (others, "#c62828", "fails on tuning")):
        if rows:
            ax.scatter([r["values"][0] for r in rows], [-r["drop_points"] for r in rows], s=30, color=colour,
                       alpha=0.7, label=label, zorder=2)
    front = sorted((r for r in feasible if r["number"] in summary["front"]), key=lambda r: r["values"][0])
    if len(front) > 1:
        ax.plot([r["values"][0] for r in front], [-r["drop_points"] for r in front], "-", color="#9e9e9e",
                zorder=1, label="tuning front")
    labels = []
    key = "heldout_usd_per_1m" if metric == "usd_per_1m" else "heldout_latency_ms_p50"
    for name, m in summary["members"].items():
        if m.get(key) is not None and m.get("heldout_change_points") is not None:
            ax.scatter(m[key], m["heldout_change_points"], s=70, facecolors="none", edgecolors="#1565c0",
                       linewidths=1.5, zorder=3)
            labels.append((m[key], m["heldout_change_points"], f"{name} (held-out)"))
            tuning_key = key.replace("heldout_", "tuning_")
            if m.get(tuning_key) is not None:  # tuning estimate -> held-out result: the optimism
                ax.plot([m[tuning_key], m[key]], [m["tuning_change_points"], m["heldout_change_points"]],
                        ":", color="#1565c0", zorder=1)
    ax.scatter([], [], s=70, facecolors="none", edgecolors="#1565c0", label="front member on held-out")
    ax.set_xlabel("$ per 1M inferences" if metric == "usd_per_1m" else "p50 latency, ms per batch")
    ax.set_ylabel("top-1 change vs baseline (points)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Search trials (tuning split) and the front on held-out (up and left is better)", fontsize=10)
    fig.tight_layout()
    _place_labels(ax, labels)
    path = Path(path)
    fig.savefig(path, format="png")
    return path
