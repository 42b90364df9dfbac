"""The evaluation part of report.md: paired statistics, held-out discipline, overfitting and drift.

Pure functions of the results dict. Every number names the split it came from and its sample size.
"""

from __future__ import annotations

GATE_MODE_TEXT = {
    "point": "the estimated loss must be within tolerance",
    "confident": "the upper bound of the loss's interval must be within tolerance",
}


def _ci(iv: dict | None) -> str:
    if not iv:
        return ""
    return f" [{iv['confidence']:.0%} CI {iv['low'] + 0.0:+.2f}, {iv['high'] + 0.0:+.2f}]"


def _p(p: float) -> str:
    return f"p={p:.2g}" if p >= 1e-4 else "p<1e-4"


def gate_mode_line(results: dict) -> str:
    mode = (results.get("verdict") or {}).get("mode") or results["recipe"].get("gate", {}).get("mode") or "point"
    return f"Gate mode: `{mode}` ({GATE_MODE_TEXT.get(mode, mode)})."


def _class_name(results: dict, idx: int) -> str:
    classes = (results.get("data") or {}).get("classes") or []
    return f"{classes[idx]!s}" if idx < len(classes) else str(idx)


def accuracy_lines(v: dict, results: dict) -> list[str]:
    acc = v.get("accuracy") or {}
    if "change_points" not in acc:
        return []
    n = acc.get("change_n") or acc["heldout"]["n"]
    split = acc.get("change_split", "heldout")
    parts = [f"top-1 change {acc['change_points']:+.2f} points{_ci(acc.get('change_interval'))}"]
    if "top5_change_points" in acc:
        parts.append(f"top-5 change {acc['top5_change_points']:+.2f}{_ci(acc.get('top5_change_interval'))}")
    pc = acc.get("per_class")
    if pc:
        parts.append(
            f"worst class `{_class_name(results, pc['worst_class'])}` "
            f"{-pc['worst_class_drop_points'] + 0.0:+.2f} points (n={pc['worst_class_n']})"
            + (f", largest per-class drop bound {pc['worst_class_drop_high_points'] + 0.0:.2f} "
               f"(class `{_class_name(results, pc['worst_class_drop_high_class'])}`)"
               if pc.get("worst_class_drop_high_points") is not None else "")
        )
    fid = acc.get("fidelity")
    if fid:
        parts.append(f"output fidelity: cosine {fid['cosine_mean']:.4f} (min {fid['cosine_min']:.3f}), "
                     f"KL {fid['kl_mean_nats']:.2g} nats")
    out = [f"Paired with the baseline on `{split}` (n={n}): " + "; ".join(parts) + "."]
    for c in (v.get("gate") or {}).get("checks", []):
        if c.get("rule") == "max_accuracy_drop" and "too small to decide" in c.get("detail", ""):
            needed = c.get("needed_heldout_n")
            more = (f"; about {needed} samples needed" if needed
                    else " (the estimate sits on the tolerance: no held-out size decides it)")
            out.append(f"> ⚠️ held-out (n={n}) too small to decide at this tolerance "
                       f"({c['limit']:g} points){more}.")
    return out


def discipline_lines(v: dict) -> list[str]:
    out = []
    overlap = v.get("heldout_overlap")
    if overlap is not None:
        bad = {r: c for r, c in overlap.items() if c}
        if bad:
            out.append("> ❌ held-out overlaps data the model was fitted on (content hash): "
                       + ", ".join(f"{c} samples shared with `{r}`" for r, c in bad.items())
                       + "; the gate refuses to pass it.")
        elif overlap:
            out.append("Held-out shares no sample with " + ", ".join(f"`{r}`" for r in overlap)
                       + " (content hash).")
    of = v.get("overfit") or {}
    for role, g in (of.get("by_split") or {}).items():
        if "gap_increase_points" not in g:
            continue
        out.append(
            f"Overfitting (`{role}` n={g['fit_n']} vs `heldout` n={g['heldout_n']}): top-1 "
            f"{g['variant_fit_top1']:.2f}% vs {g['variant_heldout_top1']:.2f}%, gap "
            f"{g['variant_gap_points']:+.2f} points (baseline {g['baseline_gap_points']:+.2f}); growth "
            f"{g['gap_increase_points']:+.2f}{_ci(g.get('gap_increase_interval'))}."
        )
    return out


def drift_lines(v: dict) -> list[str]:
    drift = v.get("drift") or {}
    out = []
    lab = drift.get("labelled")
    if lab:
        flag = "**shift detected**" if lab["flagged"] else "no significant shift"
        line = (f"Drift (`drift` = {lab.get('drift_source', 'drift set')}, n={lab['drift_n']}): "
                f"top-1 {lab['drift_top1']:.2f}% vs held-out {lab['heldout_top1']:.2f}% "
                f"(n={lab['heldout_n']}), change {lab['change_points']:+.2f}"
                f"{_ci(lab['change_interval'])}, {lab['test']} {_p(lab['p_value'])}: {flag}")
        deg = lab.get("degradation")
        if deg:
            line += (f"; extra drop beyond the baseline's under this shift "
                     f"{deg['drop_increase_points'] + 0.0:+.2f} points{_ci(deg['drop_increase_interval'])}")
        out.append(line + ".")
    prod = drift.get("production")
    if prod:
        flag = "**shift detected**" if prod["flagged"] else "no significant shift"
        out.append(
            f"Production sample ({prod.get('production_source', 'production')}, n={prod['current_n']}, "
            f"against held-out n={prod['reference_n']}): confidence mean "
            f"{prod['confidence_mean_current']:.3f} vs {prod['confidence_mean_reference']:.3f}, PSI "
            f"{prod['psi_confidence']:.3f} ({prod['psi_confidence_reading']}), KS {_p(prod['ks']['p_value'])}; "
            f"predicted classes PSI {prod['psi_classes']:.3f} ({prod['psi_classes_reading']}), "
            f"chi-square {_p(prod['chi2']['p_value'])}; {flag} (alpha {prod['alpha']:g}, Bonferroni)."
        )
    rb = drift.get("robustness")
    if rb and rb.get("cells"):
        out.append(robustness_table(rb))
    return out


def robustness_table(rb: dict) -> str:
    """Top-1 per corruption (rows) and severity (columns), with the change vs the baseline."""
    grid: dict[str, dict[str, dict]] = {}
    for key, cell in rb["cells"].items():
        name, _, severity = key.partition("@")
        grid.setdefault(name, {})[severity] = cell
    severities = sorted({s for row in grid.values() for s in row}, key=int)
    n = next(iter(rb["cells"].values()))["n"]
    head = [f"corruption of held-out (n={n})", *(f"severity {s}" for s in severities)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in grid.items():
        cells = []
        for s in severities:
            c = row.get(s)
            if c is None:
                cells.append("—")
                continue
            change = f" ({c['change_points']:+.1f})" if "change_points" in c else ""
            cells.append(f"{c['top1']:.1f}%{change}")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    mean = f"Robustness profile: mean top-1 over corruptions {rb['mean_top1']:.2f}%"
    if "mean_change_points" in rb:
        mean += f" ({rb['mean_change_points']:+.2f} points vs the baseline on the same corrupted images)"
    return mean + ".\n\n" + "\n".join(lines)


def evaluation_details(v: dict, results: dict) -> list[str]:
    """Paragraphs for one variant's section of the report."""
    return accuracy_lines(v, results) + discipline_lines(v) + drift_lines(v)


def baseline_details(b: dict) -> list[str]:
    out = []
    overlap = b.get("heldout_overlap")
    if overlap:
        bad = {r: c for r, c in overlap.items() if c}
        if bad:
            out.append("> ❌ held-out overlaps the baseline's training data (content hash): "
                       + ", ".join(f"{c} samples shared with `{r}`" for r, c in bad.items()) + ".")
    for role, g in ((b.get("overfit") or {}).get("by_split") or {}).items():
        out.append(f"Baseline gap `{role}` (n={g['fit_n']}) - `heldout`: {g['gap_points']:+.2f} points.")
    return out + drift_lines(b)
