"""The pruning facts of a run, as Markdown: MACs and parameters before/after, the MAC ratio beside
the measured latency ratio, and top-1 before and after recovery. Pure functions of results.json."""

from __future__ import annotations

from compress.report.formatting import fmt_count as _count

# Unless a 2:4 variant's speed-up interval lies wholly above this at some batch size, the report
# says "no speed-up on this runtime".
SPARSE_NO_GAIN = 1.1


def _pct(x) -> str:
    return "—" if x is None else f"{x:.1f}%"


def _target(pr: dict) -> str:
    kind = pr.get("target")
    if pr.get("sparsity") and kind in (None, "2:4"):
        return "2:4 sparsity"
    if kind == "macs_budget":
        return f"MACs ≤ {pr['macs_budget']:.0%}"
    if kind == "latency_budget":
        lb = pr.get("latency_budget") or {}
        limit = f"{lb['max_fraction']:.2f}x unpruned" if lb.get("max_fraction") else f"{lb.get('max_ms')} ms"
        return f"latency ≤ {limit} on {lb.get('target')} (b{lb.get('batch_size')})"
    return "ratio"


def pruning_table(results: dict, target: str) -> str | None:
    """One row per variant whose artifact was pruned or sparsified; None when there is none."""
    rows = []
    for name, v in results.get("variants", {}).items():
        pr = ((v.get("artifact") or {}).get("facts") or {}).get("pruning")
        if not pr or v.get("status") != "ok":
            continue
        speed = (v.get("speedup") or {}).get(target, {})
        measured = " / ".join(f"{m['estimate']:.2f}x (b{bs})" for bs, m in speed.items()) or "not profiled"
        mac_ratio = pr.get("mac_ratio")
        ratio = pr.get("ratio")
        cut = "—" if ratio is None else f"{ratio:.3g}"
        if pr.get("granularity") == "blocks" and ratio is not None:
            cut = f"{len(pr.get('removed_blocks', []))} of {len(pr.get('block_candidates', []))} blocks"
        if pr.get("granularity") == "heads" and ratio is not None:
            cut = f"heads {pr['head_ratio']:.2g}, FFN {pr['ffn_ratio']:.2g}"
        shapes = pr.get("transformer")
        if shapes and ratio is not None:  # what a transformer lost, whichever granularity
            b, a = shapes["before"], shapes["after"]
            cut += (f" (heads {b['heads']} → {a['heads']}, FFN {_count(b['ffn_neurons'])} → "
                    f"{_count(a['ffn_neurons'])}, layers {b['layers']} → {a['layers']})")
        sp = pr.get("sparsity")
        crit = pr.get("importance", "—")
        if sp:
            crit = f"{crit} + 2:4" if pr.get("importance") else "2:4"
        before_after = "—"
        if "top1_unpruned" in pr:
            before_after = (f"{_pct(pr['top1_unpruned'])} → {_pct(pr.get('top1_pruned'))} → "
                            f"{_pct(pr.get('top1_recovered')) if 'top1_recovered' in pr else 'not fine-tuned'}"
                            f" ({pr.get('top1_split')})")
        rows.append(
            f"| {name} | {crit} | {_target(pr)} | {cut} | "
            f"{pr.get('round_to') or '—'} | {_count(pr.get('macs_before'))} → {_count(pr.get('macs_after'))} | "
            f"{_count(pr.get('params_before'))} → {_count(pr.get('params_after'))} | "
            f"{(1 / mac_ratio):.2f}x | {measured} | {before_after} |"
        )
    if not rows:
        return None
    ref = results.get("recipe", {}).get("gate", {}).get("reference", "baseline")
    head = ("| variant | criterion | target | channel ratio or blocks removed | round_to | MACs before → after | "
            "params before → after | MAC speed-up | measured speed-up vs " + ref + " | "
            "top-1 unpruned → pruned → recovered |")
    return "\n".join([head, "|" + "---|" * 10, *rows])


def pruning_section(results: dict) -> list[str]:
    """The report's pruning section (empty when no variant prunes)."""
    out = []
    for t in results.get("targets", []):
        table = pruning_table(results, t["name"])
        if table:
            out += [f"## Pruning on `{t['name']}`", table]
    if out:
        out.append(
            "MAC speed-up is what the MAC count promises (MACs before / after); the measured speed-up is "
            "the latency ratio on the target, from the same interleaved run. Top-1 before and after "
            "recovery is measured inside the step on the calibration split (not trained on, not held-out)."
        )
    return out


def pruning_warnings(v: dict) -> list[str]:
    """Plain statements for pruning results a user could misread."""
    out = []
    pr = ((v.get("artifact") or {}).get("facts") or {}).get("pruning") or {}
    sp = pr.get("sparsity")
    if sp:
        for target, per_bs in (v.get("speedup") or {}).items():
            # a gain counts only when its whole interval clears the threshold at some batch size
            if per_bs and max(m.get("low", m["estimate"]) for m in per_bs.values()) < SPARSE_NO_GAIN:
                out.append(
                    f"2:4 sparsity: no speed-up on this runtime ({target}): its kernels run the zeros as "
                    f"dense arithmetic ({sp['zero_fraction']:.0%} of the weights of {sp['layers']} layers are "
                    "zero, MACs unchanged). 2:4 pays off only where sparse kernels exist (e.g. NVIDIA "
                    "Ampere+ sparse tensor cores)."
                )
    return out
