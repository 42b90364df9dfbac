"""results.json -> report.md. Pure functions of the results: no measurement, no I/O."""

from __future__ import annotations

from compress.pruning.report import pruning_section, pruning_warnings
from compress.report.evaluation import baseline_details, evaluation_details, gate_mode_line
from compress.report.formatting import fmt_count as _fmt_count
from compress.report.plots import plot_filename, plotted_targets
from compress.report.serving import serving_section


def _fmt_bytes(n) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _usd(x) -> str:
    if x is None:
        return "—"
    return f"${x:.4f}" if x < 1 else f"${x:.2f}"


VERDICT_ICON = {"pass": "✅ pass", "fail": "❌ fail", "error": "💥 error", "reference": "reference",
                "not gated": "not gated"}


def _row(name: str, v: dict, target: str, sizes: list[str], baseline_top1: float | None) -> list[str]:
    if v.get("status") == "failed":
        return [f"**{name}**", "—", "—", *(["—"] * 3), "—", "—", VERDICT_ICON["error"]]
    acc = v.get("accuracy", {})
    held = acc.get("heldout", {})
    top1 = held.get("top1")
    if name == "baseline":
        change = "—"
    else:
        iv = acc.get("change_interval")
        change = f"{acc['change_points']:+.2f}" if "change_points" in acc else "—"
        if iv:
            change += f" [{iv['low']:+.2f}, {iv['high']:+.2f}]"
    lat = (v.get("latency") or {}).get(target, {})
    sp = (v.get("speedup") or {}).get(target, {})
    p50 = " / ".join(f"{lat[s]['p50_ms']:.2f}" if s in lat else "—" for s in sizes)
    speed = " / ".join(f"{sp[s]['estimate']:.2f}x" if s in sp else "—" for s in sizes)
    big = sizes[-1]
    cost = _usd(lat.get(big, {}).get("usd_per_1m")) if lat else "—"
    size = _fmt_bytes((v.get("artifact") or {}).get("size_bytes"))
    verdict = VERDICT_ICON.get((v.get("gate") or {}).get("verdict", ""), "—") if name != "baseline" else "—"
    return [f"**{name}**", f"{top1:.2f}%" if top1 is not None else "—", change, p50, speed, size, cost, verdict]


def comparison_table(results: dict, target: str) -> str:
    sizes = sorted({bs for v in [results["baseline"], *results["variants"].values()]
                    for bs in (v.get("latency") or {}).get(target, {})}, key=int)
    if not sizes:
        sizes = [str(b) for b in results["recipe"]["profile"]["batch_sizes"]]
    bs_label = " / ".join(f"b{s}" for s in sizes)
    n = results["baseline"]["accuracy"]["heldout"]["n"]
    ref = results["recipe"]["gate"].get("reference", "baseline")
    ref_target = results["recipe"]["gate"].get("reference_target")
    ref_label = f"{ref} on {ref_target}" if ref_target and ref_target != target else ref
    head = [
        "variant", f"top-1 (held-out, n={n})", "change vs baseline, points [95% CI]",
        f"p50 ms ({bs_label})", f"speed-up vs {ref_label} ({bs_label})", "size", f"$ / 1M (b{sizes[-1]})", "gate",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_top1 = results["baseline"]["accuracy"]["heldout"]["top1"]
    first = results["targets"][0]["name"] if results.get("targets") else target
    rows = [("baseline", results["baseline"])]
    for name, v in results["variants"].items():
        # a variant appears under each target that timed it; one timed nowhere (failed, or no
        # target could run it) under the first target, so that it is never silently dropped
        timed = v.get("latency") or {}
        if target in timed or (not timed and target == first):
            rows.append((name, v))
    for name, v in rows:
        lines.append("| " + " | ".join(_row(name, v, target, sizes, base_top1)) + " |")
    return "\n".join(lines)


def verdict_section(results: dict) -> str:
    ver = results["verdict"]
    rules = ver["rules"]
    rule_txt = ", ".join(
        f"{k} = {v}" for k, v in rules.items() if v is not None and k != "reference"
    ) or "no gate rules set"
    out = []
    if ver["errors"]:
        out.append(f"**💥 {len(ver['errors'])} variant(s) failed to build or run:** {', '.join(ver['errors'])}.")
    if ver["failed"]:
        out.append(f"**❌ Gate failed** for {', '.join(ver['failed'])} ({rule_txt}).")
    if ver["passed"]:
        out.append(f"**✅ Every gated variant passes** ({rule_txt}).")
    rec = ver.get("recommended")
    if rec:
        target = ver.get("recommended_target")
        basis = {"usd_per_1m": ", by $ per 1M inferences", "latency": ", by latency per sample"}.get(
            ver.get("recommended_by") or "", "")
        where = f" on `{target}`" if target else ""
        out.append(f"**Recommended: `{rec}`{where}**, the cheapest variant that passes every gate"
                   f"{basis} ({_why(results, rec, target)}).")
    elif not ver["passing"]:
        out.append("No variant passes every gate: keep the baseline.")
    return "\n\n".join(out)


def _why(results: dict, name: str, target: str | None = None) -> str:
    v = results["variants"][name]
    parts = []
    acc = v.get("accuracy", {})
    if "change_points" in acc:
        parts.append(f"top-1 {acc['change_points']:+.2f} points")
    speedups = v.get("speedup") or {}
    for t in ([target] if target in speedups else list(speedups)[:1]):
        per_bs = speedups[t]
        speeds = " / ".join(f"{m['estimate']:.2f}x" for m in per_bs.values())
        parts.append(f"{speeds} faster on {t} (batch {' / '.join(per_bs)})")
    return ", ".join(parts)


def _verification_facts(art: dict) -> list[str]:
    """How the steps checked their output, and the precision an engine was built in."""
    out = []
    if art.get("export_max_rel_error") is not None:
        out.append(f"ONNX export matches torch within {art['export_max_rel_error']:.1e} (opset {art.get('opset', '?')})")
    if art.get("transformer_fusions"):
        from compress.steps.export import describe_fusions

        out.append(f"ONNX Runtime transformer fusions: {describe_fusions(art['transformer_fusions'])}")
    if art.get("fp16_max_rel_error") is not None:
        out.append(f"fp16 differs from fp32 by {art['fp16_max_rel_error']:.1e} of the logits' range")
    if art.get("tensorrt"):
        out.append(f"TensorRT engine: {art['tensorrt'].get('precision')}")
    return out


def warnings_for(name: str, v: dict, reference: str) -> list[str]:
    """Plain-language explanations of results a user would otherwise misread."""
    out = []
    art = (v.get("artifact") or {}).get("facts") or {}
    cov = art.get("int8_coverage")
    if cov and cov.get("compute_fraction") is not None and cov["compute_fraction"] < 0.8:
        out.append(
            f"only {cov['compute_fraction']:.0%} of the compute ops run in int8 ({cov['summary']}): "
            "the rest pay quantize/dequantize overhead; " + _coverage_cause(art.get("quantization") or {}, cov)
        )
    for target, per_bs in (v.get("speedup") or {}).items():
        slow = [bs for bs, m in per_bs.items() if m["estimate"] < 1.0]
        if slow and name != reference:
            reason = ""
            if art.get("quantization"):
                reason = (": int8 saves arithmetic, but at this size the model is dominated by "
                          "quantize/dequantize and memory traffic, so int8 may not pay off at every batch size")
                if cov and cov.get("compute_fraction") is not None and cov["compute_fraction"] < 0.8:
                    reason = ": most compute ops do not run in int8 (see the coverage warning)"
            out.append(f"slower than {reference} on {target} at batch {', '.join(slow)}{reason}")
    tf = art.get("transformer_fusions")
    if tf and tf.get("attention_layers") and not (tf["fused"].get("Attention") or tf["fused"].get("MultiHeadAttention")):
        how = tf.get("attention_implementation")
        out.append(f"ONNX Runtime fused no Attention (0 of {tf['attention_layers']} layers"
                   + (f", {how} attention" if how else "") + "): attention runs as separate MatMul/"
                   "Softmax ops; load the model with attn_implementation=\"eager\", whose export "
                   "pattern ONNX Runtime's optimizer recognises")
    pr = art.get("pruning")
    if pr and v.get("speedup"):
        mac_x = 1 / pr["mac_ratio"] if pr.get("mac_ratio") else None
        for target, per_bs in v["speedup"].items():
            measured = max(m["estimate"] for m in per_bs.values())
            if mac_x and measured < 0.5 * mac_x:
                out.append(f"MACs fell {mac_x:.1f}x but the measured speed-up on {target} is at most "
                           f"{measured:.2f}x: pruning pays less than its MAC count on this runtime")
            break
    return out


def _rewrites_fact(q: dict) -> str:
    """The graph rewrites the quantize step applied before int8 (docs/steps/quantize.md)."""
    parts = [f"{p['conv']} input {p['channels']} → {p['padded_to']} channels" for p in q.get("padded_channels", [])]
    pads = q.get("channel_pads_as_convs", [])
    if pads:
        parts.append(f"{len(pads)} channel Pad(s) run as 1x1 Conv")
    return "rewritten for int8: " + ", ".join(parts) if parts else ""


def _coverage_cause(q: dict, cov: dict | None = None) -> str:
    """The likely reason for low int8 coverage, from the quantization settings that ran."""
    attention = (cov or {}).get("total", {}).get("Attention", 0)
    if attention and q.get("mode") == "static" and not (cov or {}).get("int8", {}).get("Attention"):
        return ("static QDQ leaves ONNX Runtime's fused Attention ops, and the Q/K/V projections "
                "inside them, float: export with optimize: none for static int8, or use mode: dynamic "
                "(QAttention)")
    if q.get("transformer") and q.get("activation_matmuls") is False:
        return "activation_matmuls: false leaves attention's MatMuls (scores, probabilities x values) float"
    if q.get("mode") == "dynamic":
        return "dynamic quantization covers MatMul/Gemm only; convolutional models need mode: static"
    if q.get("activations") == "int8" and str(q.get("target", "")).startswith("x86"):
        return ("int8 activations: ONNX Runtime on x86 fuses only some convolutions with them; "
                "activation_type: uint8 (the x86 default) lets every Conv fuse")
    mp = q.get("mixed_precision") or {}
    if mp.get("float_layers"):
        return f"mixed precision kept {len(mp['float_layers'])} layer(s) in float on purpose"
    return ("layers excluded by exclude_nodes/exclude_op_types, or ops ONNX Runtime has no int8 "
            "kernel for on this target, stay float")


def _mixed_precision_fact(mp: dict) -> str:
    acc = (f"tuning top-1 float {mp['tuning_top1_float']:.2f}%, all-int8 "
           f"{mp['tuning_top1_all_int8']:.2f}%, mixed {mp['tuning_top1_mixed']:.2f}% (n={mp['tuning_n']})")
    if not mp["float_layers"]:
        return f"Mixed precision: no layer kept in float ({acc})."
    txt = (f"Mixed precision: {len(mp['float_layers'])} layer(s) kept in float "
           f"({', '.join(f'`{n}`' for n in mp['float_layers'])}); {acc}")
    lat = mp.get("latency")
    if lat:
        txt += (f"; latency cost of the float layers at batch {lat['batch_size']} on the build "
                f"machine: {lat['cost_ratio']:.2f}x the all-int8 model ({lat['mixed_p50_ms']:.2f} "
                f"vs {lat['all_int8_p50_ms']:.2f} ms)")
    if not mp["reached"]:
        txt += f"; the tolerance of {mp['tolerance_points']} points was NOT reached"
    return txt + "."


def variant_details(name: str, v: dict, reference: str, results: dict | None = None) -> str:
    lines = [f"### {name}"]
    if v.get("description"):
        lines.append(v["description"])
    if v.get("status") == "failed":
        lines.append(f"**Failed:** {v.get('error')}")
        return "\n\n".join(lines)
    artifact = v.get("artifact") or {}
    art = artifact.get("facts") or {}
    lines.append("Lineage: " + " → ".join(artifact.get("lineage", [])))
    facts = [f"size {_fmt_bytes(artifact.get('size_bytes'))}", f"params {_fmt_count(art.get('params'))}",
             f"MACs {_fmt_count(art.get('macs'))}"]
    facts += _verification_facts(art)
    if art.get("pruning"):
        pr = art["pruning"]
        facts.append(f"MACs {_fmt_count(pr['macs_before'])} → {_fmt_count(pr['macs_after'])} "
                     f"({pr['mac_ratio']:.0%} kept)")
        if pr.get("params_before") is not None:
            facts.append(f"params {_fmt_count(pr['params_before'])} → {_fmt_count(pr['params_after'])}")
    if art.get("int8_coverage"):
        facts.append(f"int8 coverage: {art['int8_coverage']['summary']}")
    rewrites = _rewrites_fact(art.get("quantization") or {})
    if rewrites:
        facts.append(rewrites)
    lines.append("; ".join(facts))
    if (art.get("quantization") or {}).get("mixed_precision"):
        lines.append(_mixed_precision_fact(art["quantization"]["mixed_precision"]))
    acc = v.get("accuracy", {})
    if acc:
        held = acc["heldout"]
        mc = acc.get("mcnemar", {})
        txt = (f"Held-out top-1 {held['top1']:.2f}% (n={held['n']}), agreement with baseline "
               f"{acc['agreement']:.1f}%")
        if mc:
            txt += f", McNemar p={mc['p_value']:.3g} ({mc['n_variant_only']} fixed / {mc['n_baseline_only']} broken)"
        if "train" in acc:
            txt += f"; train top-1 {acc['train']['top1']:.2f}%"
        if "drift" in acc:
            txt += f"; drift top-1 {acc['drift']['top1']:.2f}% ({acc.get('drift_change_points', 0):+.2f} vs baseline)"
        lines.append(txt + f". Evaluated with target `{v.get('evaluated_on')}`.")
        lines += evaluation_details(v, results or {})
    steps = [s for s in v.get("steps", []) if not s.get("inherited")]
    if steps:
        lines.append("Steps: " + ", ".join(
            f"{s['step']} {s['compute_seconds']:.1f} s" + (" (cached)" if s["cached"] else "") for s in steps))
    for target, why in (v.get("not_profiled") or {}).items():
        lines.append(f"Not profiled on `{target}`: {why}.")
    for w in warnings_for(name, v, reference) + pruning_warnings(v) + list(v.get("notes", [])):
        lines.append(f"> ⚠️ {w}")
    checks = (v.get("gate") or {}).get("checks", [])
    if checks:
        def mark(c: dict) -> str:
            if c["passed"]:
                return "✅ "
            return "❌ " if c.get("decisive") is not False else "➖ (other target) "

        lines.append("Gate: " + "; ".join(mark(c) + c["detail"] for c in checks))
        deploy = (v.get("gate") or {}).get("passing_targets")
        if deploy:
            lines.append(f"Meets the speed rule on: {', '.join(f'`{t}`' for t in deploy)}.")
    return "\n\n".join(lines)


def render_report(results: dict) -> str:
    recipe = results["recipe"]
    ref = recipe["gate"].get("reference", "baseline")
    out = [f"# compress report: {recipe['name']}", verdict_section(results), gate_mode_line(results)]
    plotted = plotted_targets(results)  # plots.write_plots draws exactly these, beside report.md
    for t in results["targets"]:
        threads = f", {t['threads']} threads" if t.get("threads") else ""
        price = f", ${t['usd_per_hour']}/h" if t.get("usd_per_hour") is not None else ""
        out.append(f"## Target `{t['name']}` ({t['runtime']} on {t['device']}{threads}{price})")
        out.append(comparison_table(results, t["name"]))
        if t["name"] in plotted:
            out.append(f"![Pareto plot on {t['name']}: held-out top-1 against p50 latency and $ per 1M]"
                       f"({plot_filename(t['name'])})")
        serving = serving_section(results, t)
        if serving:
            out.append(serving)
    out.append(
        "Top-1 is measured on the held-out split, which no step ever saw, with the runtime each "
        "variant is deployed on; the interval is a paired score interval over the same samples "
        "(Tango's, with skewness and continuity corrections: its coverage is checked in "
        "docs/evaluator.md), honest even when few predictions change. "
        "Latencies are medians of interleaved rounds; speed-ups are ratios of medians from the "
        "same run. $ / 1M assumes a fully busy machine at the target's price."
    )
    out += pruning_section(results)
    out.append("## Variants")
    base = results["baseline"]
    binfo = base.get("info", {})
    how = "trained on the train split" if binfo.get("trained") else (binfo.get("checkpoint") or binfo.get("source"))
    b_acc = base["accuracy"]
    b_line = f"### baseline\n\n{binfo.get('source')} ({how}); held-out top-1 {b_acc['heldout']['top1']:.2f}%"
    if "train" in b_acc:
        b_line += f", train {b_acc['train']['top1']:.2f}%"
    if "drift" in b_acc:
        b_line += f", drift {b_acc['drift']['top1']:.2f}%"
    art = base.get("artifact", {}).get("facts") or {}
    out.append(b_line + f"; params {_fmt_count(art.get('params'))}, MACs {_fmt_count(art.get('macs'))}.")
    out += baseline_details(base)
    for name, v in results["variants"].items():
        out.append(variant_details(name, v, ref, results))
    splits = results["data"]["splits"]
    data_lines = [f"- `{role}`: {s['n']} samples from `{s['source']}`" for role, s in splits.items()]
    tok = results["data"].get("tokenizer")
    if tok:  # text data: the vocabulary every model of the run reads
        saved = f"; saved in `{tok['path']}`" if tok.get("path") else ""
        data_lines.append(f"- tokenizer: {tok['origin']} ({tok['vocab_size']:,} tokens, sha256 "
                          f"{tok['sha256_20']}), up to {tok['max_length']} tokens per sample, inputs "
                          f"{', '.join(tok['inputs'])}{saved}")
    out.append("## Data\n\n" + "\n".join(data_lines))
    env = results.get("environment", {})
    if env:
        cpu = env.get("cpu", {})
        pk = env.get("packages", {})
        out.append(
            "## Environment\n\n"
            f"- CPU: {cpu.get('model', '?')} ({cpu.get('logical_cores')} logical cores; "
            f"{', '.join(cpu.get('flags', [])) or 'no AVX-512/AMX flags'})\n"
            f"- GPU: {', '.join(g['name'] for g in env.get('gpus', [])) or 'none'}\n"
            f"- " + ", ".join(f"{k} {v}" for k, v in pk.items()) + "\n"
            f"- Python {env.get('python')}, {env.get('platform')}"
        )
    run = results["run"]
    out.append(
        f"## Reproduce\n\n```\ncompress run {run['recipe_path']}\n```\n\n"
        f"Started {run['started']}, wall time {run['wall_s']:.0f} s."
    )
    return "\n\n".join(out) + "\n"
