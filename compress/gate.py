"""Gate rules as typed data, applied to results. Pure: no I/O, no measurement.

Each rule knows its metric, whether higher is better and the kind of limit, so a verdict can say
exactly which number broke which limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Rule:
    name: str  # the recipe key
    metric: str  # what is compared, in the user's words
    higher_is_better: bool
    unit: str


RULES = {
    "max_accuracy_drop": Rule("max_accuracy_drop", "top-1 drop on held-out", False, "points"),
    "min_speedup": Rule("min_speedup", "speed-up over the reference", True, "x"),
}


@dataclass(frozen=True)
class Check:
    rule: str
    value: float | None
    limit: float
    passed: bool
    detail: str
    target: str | None = None
    batch_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _accuracy_checks(v: dict, gate: dict) -> list[Check]:
    limit = gate.get("max_accuracy_drop")
    if limit is None:
        return []
    acc = v.get("accuracy") or {}
    change = acc.get("change_points")
    if change is None:
        return [Check("max_accuracy_drop", None, limit, False, "no held-out accuracy was measured")]
    drop = -change
    ok = drop <= limit + 1e-9
    return [Check(
        "max_accuracy_drop", drop, limit, ok,
        f"top-1 drop {drop:+.2f} points {'<=' if ok else '>'} {limit:g} "
        f"(n={acc.get('heldout', {}).get('n')})",
    )]


def _speed_checks(v: dict, gate: dict, reference: str) -> list[Check]:
    limit = gate.get("min_speedup")
    if limit is None:
        return []
    sizes = gate.get("speedup_batch_sizes")
    checks = []
    for target, per_bs in (v.get("speedup") or {}).items():
        for bs_key, sp in per_bs.items():
            bs = int(bs_key)
            if sizes and bs not in sizes:
                continue
            value = sp["estimate"]
            ok = value >= limit - 1e-9
            checks.append(Check(
                "min_speedup", value, limit, ok,
                f"{value:.2f}x vs {reference} on {target}, batch {bs} {'>=' if ok else '<'} {limit:g}x",
                target, bs,
            ))
    if not checks:
        checks.append(Check("min_speedup", None, limit, False,
                            f"no speed-up against {reference} could be measured on any target"))
    return checks


def gate_variant(name: str, v: dict, gate: dict) -> dict:
    """{'verdict': pass|fail|error|not gated|reference, 'checks': [...]} for one variant's results."""
    reference = gate.get("reference", "baseline")
    if v.get("status") == "failed":
        return {"verdict": "error", "checks": []}
    if not v.get("gated", True):
        return {"verdict": "not gated", "checks": []}
    checks = _accuracy_checks(v, gate)
    if name == reference:
        return {"verdict": "reference" if all(c.passed for c in checks) else "fail",
                "checks": [c.to_dict() for c in checks]}
    checks += _speed_checks(v, gate, reference)
    verdict = "pass" if all(c.passed for c in checks) else "fail"
    return {"verdict": verdict, "checks": [c.to_dict() for c in checks]}


def apply_gate(results: dict, gate: dict | None = None) -> dict:
    """Gate every variant of a results dict; return the run verdict (also stored in results)."""
    gate = gate if gate is not None else results["recipe"].get("gate", {})
    verdicts = {}
    for name, v in results["variants"].items():
        v["gate"] = gate_variant(name, v, gate)
        verdicts[name] = v["gate"]["verdict"]
    failed = sorted(n for n, s in verdicts.items() if s == "fail")
    errors = sorted(n for n, s in verdicts.items() if s == "error")
    passing = [n for n, s in verdicts.items() if s == "pass"]
    recommended = recommend(results, passing)
    exit_code = 3 if errors else (1 if failed else 0)
    summary = {
        "passed": not failed and not errors,
        "failed": failed,
        "errors": errors,
        "passing": passing,
        "recommended": recommended,
        "exit_code": exit_code,
        "rules": {k: gate.get(k) for k in ("max_accuracy_drop", "min_speedup", "speedup_batch_sizes", "reference")},
    }
    results["verdict"] = summary
    return summary


def recommend(results: dict, passing: list[str]) -> str | None:
    """The cheapest passing variant: lowest $ per 1M (else lowest p50) at the largest batch size
    profiled on the first target."""
    best, best_key = None, None
    for name in passing:
        v = results["variants"][name]
        lat = v.get("latency") or {}
        if not lat:
            continue
        target = next(iter(lat))
        per_bs = lat[target]
        bs = max(per_bs, key=int)
        m = per_bs[bs]
        key = m.get("usd_per_1m") if m.get("usd_per_1m") is not None else m["p50_ms"] / int(bs)
        if best_key is None or key < best_key:
            best, best_key = name, key
    return best
