"""Two runs of a recipe, side by side: what changed, by how much, and whether it is a regression.

``compare_runs(a, b)`` is pure (two results dicts in, a ``Comparison`` out); ``render_comparison``
turns it into Markdown. Run A is the reference (e.g. main's last run), run B the candidate (this
branch). Tolerances come from B's recipe unless given:

- top-1 on held-out: a regression when the drop from A to B exceeds ``gate.max_accuracy_drop``
  points, judged like the gate (``gate.mode`` point: the estimate; confident: the upper bound of
  the drop's 95% interval). When both runs judged the same held-out samples (same labels, in the
  same order) the change is paired: the paired score interval (compress.measure.paired) and
  McNemar's test; otherwise the
  interval is an unpaired normal approximation.
- a variant that built in A but failed in B, or whose gate verdict went from pass to fail (so a
  speed-up that falls below ``gate.min_speedup`` is a regression).
- opt-in, because on a shared machine timings move more between runs than within one (two
  back-to-back demo runs here moved a speed-up from 4.27x [3.47, 5.08] to 2.62x [2.31, 3.13], see
  docs/reports.md): a speed-up more than ``max_speedup_loss`` (a fraction) below A's with
  non-overlapping 95% intervals; a p50 that grew by more than ``max_latency_increase``.

New and vanished variants are listed; neither is a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compress.measure import paired, stats

Z95 = 1.959963984540054


@dataclass
class Tolerances:
    max_accuracy_drop: float | None  # points; None: accuracy changes are reported, never gated
    mode: str = "point"  # point | confident, as gate.mode
    max_speedup_loss: float | None = None  # fraction of A's speed-up; off by default
    max_latency_increase: float | None = None  # fraction of A's p50; off by default

    @classmethod
    def from_results(cls, results: dict, **overrides) -> Tolerances:
        gate = results.get("recipe", {}).get("gate", {})
        tol = cls(max_accuracy_drop=gate.get("max_accuracy_drop"), mode=gate.get("mode") or "point")
        for key, value in overrides.items():
            if value is not None:
                setattr(tol, key, value)
        return tol


@dataclass
class AccuracyChange:
    variant: str
    a_top1: float
    b_top1: float
    change_points: float
    low: float | None
    high: float | None
    method: str  # paired | unpaired | point only
    n_a: int
    n_b: int
    mcnemar_p: float | None = None
    regression: str | None = None


@dataclass
class LatencyChange:
    variant: str
    target: str
    batch_size: str
    a_p50_ms: float
    b_p50_ms: float
    ratio: float  # b / a
    low: float | None
    high: float | None
    a_speedup: dict | None = None
    b_speedup: dict | None = None
    regression: str | None = None


@dataclass
class Comparison:
    a_label: str
    b_label: str
    tolerances: Tolerances
    accuracy: list[AccuracyChange] = field(default_factory=list)
    latency: list[LatencyChange] = field(default_factory=list)
    verdicts: list[tuple[str, str, str]] = field(default_factory=list)  # variant, A, B
    new: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def _models(results: dict) -> dict[str, dict]:
    return {"baseline": results["baseline"], **results["variants"]}


def _same_heldout(a: dict, b: dict) -> bool:
    la, lb = a.get("data", {}).get("heldout_labels"), b.get("data", {}).get("heldout_labels")
    return la is not None and la == lb


def _accuracy_change(name: str, va: dict, vb: dict, a: dict, b: dict) -> AccuracyChange | None:
    ha = (va.get("accuracy") or {}).get("heldout")
    hb = (vb.get("accuracy") or {}).get("heldout")
    if not ha or not hb:
        return None
    change = hb["top1"] - ha["top1"]
    pa, pb = ha.get("predictions"), hb.get("predictions")
    if _same_heldout(a, b) and pa is not None and pb is not None and len(pa) == len(pb):
        labels = np.asarray(a["data"]["heldout_labels"])
        ca, cb = np.asarray(pa) == labels, np.asarray(pb) == labels
        iv = paired.paired_diff_interval(cb, ca)
        mc = stats.mcnemar_exact(cb, ca)
        return AccuracyChange(name, ha["top1"], hb["top1"], iv.estimate, iv.low, iv.high, "paired",
                              ha["n"], hb["n"], mc.p_value)
    p1, p2, n1, n2 = ha["top1"] / 100, hb["top1"] / 100, ha["n"], hb["n"]
    if n1 > 0 and n2 > 0:
        se = 100 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        return AccuracyChange(name, ha["top1"], hb["top1"], change, change - Z95 * se, change + Z95 * se,
                              "unpaired", n1, n2)
    return AccuracyChange(name, ha["top1"], hb["top1"], change, None, None, "point only", n1, n2)


def _latency_changes(name: str, va: dict, vb: dict, seed: int) -> list[LatencyChange]:
    out = []
    la, lb = va.get("latency") or {}, vb.get("latency") or {}
    for target in la:
        if target not in lb:
            continue
        for bs in sorted(set(la[target]) & set(lb[target]), key=int):
            ma, mb = la[target][bs], lb[target][bs]
            sa, sb = ma.get("samples_ms"), mb.get("samples_ms")
            if sa and sb and len(sa) >= 2 and len(sb) >= 2 and min(sa) > 0:
                iv = stats.ratio_interval(sb, sa, seed=seed)  # median(b) / median(a)
                ratio, low, high = iv.estimate, iv.low, iv.high
            else:
                ratio, low, high = mb["p50_ms"] / ma["p50_ms"], None, None
            sp_a = (va.get("speedup") or {}).get(target, {}).get(bs)
            sp_b = (vb.get("speedup") or {}).get(target, {}).get(bs)
            out.append(LatencyChange(name, target, bs, ma["p50_ms"], mb["p50_ms"], ratio, low, high, sp_a, sp_b))
    return out


def _judge_accuracy(c: AccuracyChange, tol: Tolerances) -> str | None:
    if tol.max_accuracy_drop is None:
        return None
    drop = -c.change_points
    judged = -c.low if tol.mode == "confident" and c.low is not None else drop
    if judged > tol.max_accuracy_drop + 1e-9:
        bound = "" if judged == drop else f", upper bound of the drop {judged:.2f}"
        return (f"`{c.variant}`: held-out top-1 fell {drop:.2f} points ({c.a_top1:.2f}% → {c.b_top1:.2f}%"
                f"{bound}), beyond max_accuracy_drop = {tol.max_accuracy_drop:g}")
    return None


def _judge_latency(c: LatencyChange, tol: Tolerances) -> str | None:
    where = f"on {c.target}, batch {c.batch_size}"
    if tol.max_speedup_loss is not None and c.a_speedup and c.b_speedup:
        a_sp, b_sp = c.a_speedup, c.b_speedup
        if (b_sp["estimate"] < a_sp["estimate"] * (1 - tol.max_speedup_loss)
                and b_sp["high"] < a_sp["low"]):
            return (f"`{c.variant}`: speed-up {where} fell from {a_sp['estimate']:.2f}x "
                    f"[{a_sp['low']:.2f}, {a_sp['high']:.2f}] to {b_sp['estimate']:.2f}x "
                    f"[{b_sp['low']:.2f}, {b_sp['high']:.2f}], more than max_speedup_loss = "
                    f"{tol.max_speedup_loss:.0%}")
    if tol.max_latency_increase is not None:
        judged = c.low if c.low is not None else c.ratio
        if judged > 1 + tol.max_latency_increase:
            return (f"`{c.variant}`: p50 latency {where} rose {c.ratio - 1:+.0%} ({c.a_p50_ms:.3g} → "
                    f"{c.b_p50_ms:.3g} ms), beyond max_latency_increase = {tol.max_latency_increase:.0%}")
    return None


def _env_differences(a: dict, b: dict) -> list[str]:
    ea, eb = a.get("environment") or {}, b.get("environment") or {}
    diffs = []
    cpu_a, cpu_b = (ea.get("cpu") or {}).get("model"), (eb.get("cpu") or {}).get("model")
    if cpu_a != cpu_b:
        diffs.append(f"CPU {cpu_a} → {cpu_b}")
    pa, pb = ea.get("packages") or {}, eb.get("packages") or {}
    for pkg in sorted(set(pa) | set(pb)):
        if pa.get(pkg) != pb.get(pkg):
            diffs.append(f"{pkg} {pa.get(pkg, 'absent')} → {pb.get(pkg, 'absent')}")
    return diffs


def compare_runs(a: dict, b: dict, *, a_label: str = "A", b_label: str = "B",
                 tolerances: Tolerances | None = None, seed: int = 0) -> Comparison:
    """Compare run B against run A (the reference). Pure: results dicts in, a Comparison out."""
    tol = tolerances or Tolerances.from_results(b)
    cmp = Comparison(a_label, b_label, tol)
    ma, mb = _models(a), _models(b)
    cmp.new = [n for n in mb if n not in ma]
    cmp.vanished = [n for n in ma if n not in mb]
    if not _same_heldout(a, b):
        cmp.notes.append("The runs judged different held-out samples, so accuracy changes are unpaired "
                         "(wider intervals).")
    ref_a = a["recipe"]["gate"].get("reference", "baseline")
    ref_b = b["recipe"]["gate"].get("reference", "baseline")
    if ref_a != ref_b:
        cmp.notes.append(f"Speed-ups are against `{ref_a}` in A but `{ref_b}` in B.")
    env = _env_differences(a, b)
    if env:
        cmp.notes.append("The environments differ (" + "; ".join(env) + "): absolute latencies are "
                         "not comparable, speed-ups (ratios within each run) are.")
    for name in (n for n in mb if n in ma):
        va, vb = ma[name], mb[name]
        ga = (va.get("gate") or {}).get("verdict", "—") if name != "baseline" else "—"
        gb = (vb.get("gate") or {}).get("verdict", "—") if name != "baseline" else "—"
        if name != "baseline":
            cmp.verdicts.append((name, ga, gb))
        if va.get("status") != "failed" and vb.get("status") == "failed":
            cmp.regressions.append(f"`{name}`: built and ran in {a_label}, failed in {b_label}: {vb.get('error')}")
            continue
        if ga == "pass" and gb == "fail":
            failed = [c["detail"] for c in vb["gate"].get("checks", []) if not c["passed"]]
            cmp.regressions.append(f"`{name}`: gate verdict pass → fail ({'; '.join(failed)})")
        acc = _accuracy_change(name, va, vb, a, b)
        if acc is not None:
            acc.regression = _judge_accuracy(acc, tol)
            cmp.accuracy.append(acc)
            if acc.regression:
                cmp.regressions.append(acc.regression)
        for lat in _latency_changes(name, va, vb, seed):
            lat.regression = _judge_latency(lat, tol)
            cmp.latency.append(lat)
            if lat.regression:
                cmp.regressions.append(lat.regression)
    return cmp


def _fmt(x: float, fmt: str) -> str:
    text = format(x, fmt)
    return text.replace("-", "+", 1) if text.startswith("-") and float(text.strip("%")) == 0 else text


def _interval(low: float | None, high: float | None, fmt: str) -> str:
    return "" if low is None or high is None else f" [{_fmt(low, fmt)}, {_fmt(high, fmt)}]"


def _sp(sp: dict | None) -> str:
    return "—" if not sp else f"{sp['estimate']:.2f}x"


def render_comparison(cmp: Comparison) -> str:
    """The comparison as Markdown: verdict first, then accuracy, latency, gate verdicts, changes."""
    tol = cmp.tolerances
    rules = []
    if tol.max_accuracy_drop is not None:
        rules.append(f"max_accuracy_drop = {tol.max_accuracy_drop:g} points ({tol.mode} mode)")
    if tol.max_speedup_loss is not None:
        rules.append(f"max_speedup_loss = {tol.max_speedup_loss:.0%}")
    if tol.max_latency_increase is not None:
        rules.append(f"max_latency_increase = {tol.max_latency_increase:.0%}")
    rule_txt = ", ".join(rules) or "no tolerances set"
    out = [f"# compress compare: {cmp.b_label} against {cmp.a_label}"]
    if cmp.regressions:
        out.append(f"**❌ {len(cmp.regressions)} regression(s)** beyond the tolerances ({rule_txt}):\n\n"
                   + "\n".join(f"- {r}" for r in cmp.regressions))
    else:
        out.append(f"**✅ No regression** beyond the tolerances ({rule_txt}).")
    if cmp.new or cmp.vanished:
        out.append("\n".join(
            [f"- New in {cmp.b_label}: " + ", ".join(f"`{n}`" for n in cmp.new)] * bool(cmp.new)
            + [f"- Vanished (in {cmp.a_label}, not in {cmp.b_label}): " + ", ".join(f"`{n}`" for n in cmp.vanished)]
            * bool(cmp.vanished)))
    out.extend(f"> {n}" for n in cmp.notes)
    if cmp.accuracy:
        lines = ["## Held-out top-1", "",
                 f"| variant | {cmp.a_label} | {cmp.b_label} | change, points [95% CI] | method | |",
                 "|---|---|---|---|---|---|"]
        for c in cmp.accuracy:
            method = c.method + (f", McNemar p={c.mcnemar_p:.3g}" if c.mcnemar_p is not None else "")
            flag = "❌" if c.regression else ""
            lines.append(f"| **{c.variant}** | {c.a_top1:.2f}% (n={c.n_a}) | {c.b_top1:.2f}% (n={c.n_b}) | "
                         f"{_fmt(c.change_points, '+.2f')}{_interval(c.low, c.high, '+.2f')} | {method} | {flag} |")
        out.append("\n".join(lines))
    if cmp.latency:
        lines = ["## Latency", "",
                 f"| variant | target | batch | p50 ms {cmp.a_label} | p50 ms {cmp.b_label} | "
                 f"change [95% CI] | speed-up {cmp.a_label} → {cmp.b_label} | |",
                 "|---|---|---|---|---|---|---|---|"]
        for c in cmp.latency:
            iv = _interval(None if c.low is None else c.low - 1, None if c.high is None else c.high - 1, "+.0%")
            flag = "❌" if c.regression else ""
            lines.append(f"| **{c.variant}** | {c.target} | {c.batch_size} | {c.a_p50_ms:.3f} | {c.b_p50_ms:.3f} | "
                         f"{_fmt(c.ratio - 1, '+.0%')}{iv} | {_sp(c.a_speedup)} → {_sp(c.b_speedup)} | {flag} |")
        out.append("\n".join(lines))
    if cmp.verdicts:
        lines = ["## Gate verdicts", "", f"| variant | {cmp.a_label} | {cmp.b_label} |", "|---|---|---|"]
        lines += [f"| **{n}** | {va} | {vb} |" for n, va, vb in cmp.verdicts]
        out.append("\n".join(lines))
    out.append("Latency changes are ratios of medians of the two runs' samples, with a bootstrap "
               "interval; speed-ups are each run's own ratio against its reference, measured "
               "interleaved, and are what the comparison gates on.")
    return "\n\n".join(out) + "\n"
