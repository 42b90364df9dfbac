"""How far to cut: find the channel ratio that meets a MACs budget (bisection on copies) or a
latency budget measured on the target's runtime (a ratio schedule, stopping at the first that meets
it). Both return the ratio; the caller makes the real cut (and fine-tunes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from compress.errors import StepError
from compress.pruning.channels import ChannelPlan, copy_with_grads, count_macs_params, prune_once


@dataclass
class BudgetSearch:
    """The ratio chosen and every candidate tried on the way (for the report)."""

    ratio: float
    trace: list[dict] = field(default_factory=list)


def macs_after(module, plan: ChannelPlan, input_spec, num_classes: int, ratio: float, seed: int,
               cut: Callable[[object, float], None] | None = None) -> int:
    """MACs of a copy of ``module`` cut to ``ratio`` (the module itself is untouched): channels by
    ``plan``, or by ``cut(copy, ratio)`` (e.g. heads and FFN neurons)."""
    trial = copy_with_grads(module)  # Taylor scores the copy as it would the original
    if cut is None:
        prune_once(trial, plan, input_spec, num_classes, ratio, seed=seed)
    else:
        cut(trial, ratio)
    return count_macs_params(trial, input_spec)[0]


def ratio_upper_bound(plan: ChannelPlan) -> float:
    """The largest ratio worth trying: the per-layer cap, short of removing whole layers."""
    return min(0.95, plan.max_layer_ratio)


def search_macs_budget(module, plan: ChannelPlan, input_spec, num_classes: int, *,
                       budget_macs: int, reference_macs: int, seed: int = 0,
                       iterations: int = 8, cut: Callable[[object, float], None] | None = None,
                       top: float | None = None) -> BudgetSearch:
    """The smallest ratio whose cut keeps at most ``budget_macs`` MACs (bisection: MACs fall as
    the ratio grows). Raises when even the largest ratio cannot get there. ``cut`` and ``top``
    replace channel pruning and its largest ratio (heads and FFN neurons)."""
    # Torch-Pruning skips a layer that a ratio would empty, so MACs are not monotone near the top:
    # the floor is the least MACs over a coarse grid, and the bisection runs below its ratio.
    top = ratio_upper_bound(plan) if top is None else top
    grid = [r for r in ratio_schedule(0.05, top)]

    def macs_at(r: float) -> int:
        return macs_after(module, plan, input_spec, num_classes, r, seed, cut)

    trace = [{"ratio": r, "macs": macs_at(r)} for r in grid]
    floor = min(trace, key=lambda t: (t["macs"], t["ratio"]))
    hi, macs_hi = floor["ratio"], floor["macs"]
    if macs_hi > budget_macs:
        raise StepError(
            f"prune.macs_budget {budget_macs / reference_macs:.0%} is below what this model allows: "
            f"with the classifier and the ignored layers kept, the deepest cut (ratio "
            f"{hi:.2f}) still leaves {macs_hi / reference_macs:.1%} of the baseline's MACs. Raise "
            f"macs_budget to at least {macs_hi / reference_macs:.2f}, or ignore fewer layers"
        )
    lo = max([t["ratio"] for t in trace if t["ratio"] < hi and t["macs"] > budget_macs], default=0.0)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        macs = macs_at(mid)
        trace.append({"ratio": mid, "macs": macs})
        if macs <= budget_macs:
            hi = mid
        else:
            lo = mid
    return BudgetSearch(ratio=hi, trace=trace)


def ratio_schedule(step: float, max_ratio: float) -> list[float]:
    """step, 2*step, ... up to max_ratio (inclusive)."""
    n = int(round(max_ratio / step + 1e-9))
    ratios = [round(step * k, 6) for k in range(1, n + 1)]
    if not ratios or ratios[-1] < max_ratio - 1e-9:
        ratios.append(max_ratio)
    return ratios


def search_latency_budget(module, cut: Callable[[object, float], None], input_spec, *,
                          ratios: list[float], meets: Callable[[object], dict]) -> BudgetSearch:
    """Cut copies of ``module`` to each ratio in turn with ``cut(copy, ratio)`` (channels or blocks),
    measure each with ``meets(candidate)`` (a dict with at least ``ok``), and stop at the first that
    meets the budget."""
    trace = []
    for ratio in ratios:
        trial = copy_with_grads(module)
        cut(trial, ratio)
        macs = count_macs_params(trial, input_spec)[0]
        measured = meets(trial)
        trace.append({"ratio": ratio, "macs": macs, **measured})
        if measured["ok"]:
            return BudgetSearch(ratio=ratio, trace=trace)
    last = trace[-1] if trace else {}
    raise StepError(
        f"prune.latency_budget is not reachable: even at ratio {ratios[-1]:g} the model measures "
        f"{last.get('latency_ms', float('nan')):.3g} ms ({last.get('fraction', float('nan')):.2f}x the "
        "unpruned model) on its target; the kept layers or per-call overhead dominate. Loosen the "
        "budget, raise latency_budget.max_ratio, or keep fewer layers (ignore, blocks)"
    )
