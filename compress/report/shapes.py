"""The report's text-model shapes per target: the batch size x sequence length grid, and what a
server saves by padding each batch to its longest sample instead of to max_length.

Pure functions of results.json; nothing is shown for image models (they have no sequence axis).
"""

from __future__ import annotations


def _entries(results: dict) -> list[tuple[str, dict]]:
    return [("baseline", results["baseline"]), *results["variants"].items()]


def grid_table(results: dict, target: str, entries: list[tuple[str, dict]] | None = None) -> str | None:
    """One row per model (``entries``, default the baseline and every variant), one column per
    (batch size, sequence length): p50 ms per batch, and the speed-up over the gate's reference."""
    rows = [(name, (v.get("latency_by_seq_len") or {}).get(target), (v.get("speedup_by_seq_len") or {}).get(target) or {})
            for name, v in (entries if entries is not None else _entries(results))]
    rows = [r for r in rows if r[1]]
    if not rows:
        return None
    cells = sorted({(int(bs), int(n)) for _, grid, _ in rows for n, per_bs in grid.items() for bs in per_bs})
    head = ["variant", *(f"b{bs} × {n} tokens" for bs, n in cells)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, grid, speed in rows:
        row = [f"**{name}**"]
        for bs, n in cells:
            m = grid.get(str(n), {}).get(str(bs))
            sp = speed.get(str(n), {}).get(str(bs))
            text = "—" if m is None else f"{m['p50_ms']:.2f} ms"
            if m is not None and sp is not None and name != (results["recipe"].get("gate") or {}).get("reference", "baseline"):
                text += f" ({sp['estimate']:.2f}x)"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _usd(x) -> str:
    return "—" if x is None else (f"${x:.4f}" if x < 1 else f"${x:,.2f}")


def real_length_lines(results: dict, target: str) -> list[str]:
    """What each model gains from per-batch padding on the real lengths of a split."""
    out = []
    for name, v in _entries(results):
        real = (v.get("real_lengths") or {}).get(target)
        if not real:
            continue
        if not out:
            order = "in arrival order" if real["batching"] == "arrival" else "grouped by length"
            out.append(
                f"**At the {real['split']} split's own lengths** ({real['n_samples']:,} samples, mean "
                f"{real['mean_length']:.1f} tokens, in {real['n_batches']} batches of {real['batch_size']} "
                f"{order}, each padded to its longest sample: {real['padding_fraction']:.0%} of token "
                f"slots are padding, against {real['padding_fraction_max_length']:.0%} when every "
                f"sample is padded to {real['max_length']} tokens):"
            )
        sp, dyn, pad = real["speedup"], real["dynamic"], real["padded"]
        cost = ""
        if dyn.get("usd_per_1m") is not None:
            cost = f"; {_usd(dyn['usd_per_1m'])} against {_usd(pad.get('usd_per_1m'))} per 1M"
        flag = "" if dyn.get("stable", True) and pad.get("stable", True) else " ⚠️ unstable"
        out.append(
            f"- `{name}`: {sp['estimate']:.2f}x [{sp['low']:.2f}, {sp['high']:.2f}] faster than padding to "
            f"{real['max_length']} tokens ({dyn['throughput_per_s']:,.0f} against "
            f"{pad['throughput_per_s']:,.0f} samples/s{cost}){flag}"
        )
    return out


def shapes_parts(results: dict, target: str) -> list[str]:
    """The Markdown blocks of a target's text shapes (none for image models)."""
    parts = []
    table = grid_table(results, target)
    if table:
        ref = results["recipe"]["gate"].get("reference", "baseline")
        parts.append("**Batch size × sequence length** (p50 per batch of real samples padded or cut to "
                     f"the length; speed-up over `{ref}` in parentheses; the table above and the gate use "
                     f"the longest length):\n\n{table}")
    lines = real_length_lines(results, target)
    if lines:
        parts.append("\n".join(lines))
    return parts
