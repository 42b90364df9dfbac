"""The report's serving section per target: latency with its interval and stability, throughput,
peak memory, energy (or why not), dollars, and when each compression pays for itself.

Pure functions of results.json, like the rest of the report.
"""

from __future__ import annotations

from compress.report.shapes import shapes_parts


def _mb(n) -> str:
    return "—" if n is None else f"{n / 2**20:.1f} MB"


def _usd(x) -> str:
    if x is None:
        return "—"
    return f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def _entries(results: dict) -> list[tuple[str, dict]]:
    return [("baseline", results["baseline"]), *results["variants"].items()]


def _memory(v: dict, target: str) -> str:
    mem = (v.get("memory") or {}).get(target)
    if not mem:
        return "—"
    if not mem.get("measured"):
        return "not measured"
    text = _mb(mem.get("session_peak_bytes"))
    if mem.get("device_peak_bytes") is not None:
        text += f" + {_mb(mem['device_peak_bytes'])} GPU"
    return text


def _energy(m: dict) -> str:
    e = m.get("energy") or {}
    if e.get("measured"):
        return f"{e['j_per_inference'] * 1e3:.3g} mJ"
    return "not measured"


def _stability(m: dict) -> str:
    if "round_cv" not in m:  # results written before stability was measured
        return "—"
    flag = "yes" if m.get("stable", True) else "**no**"
    return f"{flag} ({m.get('round_cv', 0) * 100:.0f}%, {m.get('rounds', '?')} rounds)"


def serving_table(results: dict, target: str, entries: list[tuple[str, dict]] | None = None) -> str | None:
    """One row per (model, batch size) profiled on ``target``; ``entries`` defaults to the
    baseline and every variant of ``results``."""
    traffic = results["recipe"].get("profile", {}).get("requests_per_day")
    head = ["variant", "batch", "p50 ms [95% CI]", "p90 / p99 ms", "inferences/s",
            "stable (round CV, rounds)", "peak memory", "energy / inference", "$ / 1M"]
    if traffic is not None:
        head.append(f"$ / month at {traffic:,.0f} req/day")
    rows = []
    for name, v in entries if entries is not None else _entries(results):
        for bs, m in ((v.get("latency") or {}).get(target) or {}).items():
            row = [f"**{name}**", bs,
                   f"{m['p50_ms']:.3f} [{m['p50_low_ms']:.3f}, {m['p50_high_ms']:.3f}]",
                   f"{m['p90_ms']:.3f} / {m['p99_ms']:.3f}", f"{m['throughput_per_s']:,.0f}",
                   _stability(m), _memory(v, target), _energy(m), _usd(m.get("usd_per_1m"))]
            if traffic is not None:
                row.append(_usd(m.get("monthly_usd")))
            rows.append("| " + " | ".join(str(c) for c in row) + " |")
    if not rows:
        return None
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows])


def _notes(results: dict, target: str, entries: list[tuple[str, dict]] | None = None) -> list[str]:
    out = []
    entries = entries if entries is not None else _entries(results)
    energy_reasons = {
        m["energy"].get("reason") for _, v in entries
        for m in ((v.get("latency") or {}).get(target) or {}).values()
        if m.get("energy") and not m["energy"].get("measured")
    }
    if energy_reasons:
        out.append("Energy: not measured (no estimate is shown in its place): "
                   + "; ".join(sorted(r for r in energy_reasons if r)) + ".")
    concurrent = sorted({
        (v.get("runtime_info") or {}).get(target, {}).get("concurrent_requests") for _, v in entries
        if (v.get("runtime_info") or {}).get(target, {}).get("timing") == "concurrent"
    } - {None})
    if concurrent:
        n = "/".join(str(c) for c in concurrent)
        out.append(f"Throughput target: each timed call ran {n} infer requests at once, each on a whole "
                   f"batch; p50 is that call's wall time divided by {n} (the time per batch of a "
                   "saturated server, so inferences/s is its throughput), not the latency of one request.")
    unstable, unsettled = [], []
    for name, v in entries:
        per_bs = ((v.get("latency") or {}).get(target) or {}).items()
        bad = [f"b{bs} {m['round_cv']:.0%}" for bs, m in per_bs if not m.get("stable", True)]
        if bad:
            unstable.append(f"`{name}` ({', '.join(bad)})")
        cold = [f"b{bs}" for bs, m in per_bs if m.get("warmup_stable") is False]
        if cold:
            unsettled.append(f"`{name}` ({', '.join(cold)})")
        mem = (v.get("memory") or {}).get(target)
        if mem and not mem.get("measured"):
            out.append(f"Memory of `{name}` not measured: {mem.get('reason')}.")
        why = (v.get("not_profiled") or {}).get(target)
        if why:
            out.append(f"`{name}` was not profiled on this target: {why}.")
    if unstable:
        out.append("⚠️ Unstable (per-round medians still vary more than profile.max_cv after the extra "
                   "rounds; the machine was noisy, so trust the intervals and re-run on a quieter "
                   "machine before deciding): " + ", ".join(unstable) + ".")
    if unsettled:
        out.append("⚠️ Warm-up did not settle within profile.warmup_max_s: " + ", ".join(unsettled) + ".")
    return out


def break_even_lines(results: dict, target: str, usd_per_hour: float | None) -> list[str]:
    out = []
    for name, v in results["variants"].items():
        cost = (v.get("cost") or {}).get(target)
        if not cost:
            continue
        spent = cost["compression_seconds"] / 3600 * cost["compression_usd_per_hour"]
        parts = []
        for bs, be in cost["per_batch_size"].items():
            saving = be["saving_usd_per_1m"]
            parts.append(f"at batch {bs}, {'saves' if saving >= 0 else 'costs'} "
                         f"{_usd(abs(saving))} per 1M inferences: {be['sentence']}")
        where = f" on {'; '.join(cost['compression_machines'])}" if cost.get("compression_machines") else ""
        out.append(f"- `{name}` against `{cost['against']}`: compressing took "
                   f"{cost['compression_seconds']:.1f} s{where} ({_usd(spent)} at "
                   f"${cost['compression_usd_per_hour']}/h); " + "; ".join(parts) + ".")
    return out


def serving_section(results: dict, target: dict) -> str:
    """Markdown for one target (a results["targets"] entry); empty when nothing was profiled."""
    name = target["name"]
    table = serving_table(results, name)
    parts = []
    if table:
        parts.append(f"### Serving on `{name}`\n\n{table}")
        parts.append(
            "p50 with a bootstrap 95% interval of the median; variants were timed in interleaved "
            "rounds after warming up until two windows of calls agreed; a measurement is stable "
            f"when its per-round medians vary by at most {results['recipe'].get('profile', {}).get('max_cv', 0.1):.0%}. "
            "Peak memory: resident memory a fresh process gains by loading and running the model "
            "(measured, not estimated). $ / 1M assumes a fully busy machine."
        )
    parts += shapes_parts(results, name)
    if target.get("instance"):
        from compress.measure.cost import PRICES

        p = PRICES.get(target["instance"]) or next(
            (q for k, q in PRICES.items() if k.lower() == target["instance"].lower()), None)
        if p is not None:
            parts.append(f"Price: {p.name} at ${target.get('usd_per_hour')}/h ({p.provider} {p.region}; "
                         f"built-in table: {p.source}, {p.as_of}; verify before budgeting).")
    be = break_even_lines(results, name, target.get("usd_per_hour"))
    if be:
        parts.append("**When compression pays off** (one-time compute of the variant's steps "
                     "against the saving per inference):\n\n" + "\n".join(be))
    notes = _notes(results, name)
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts)
