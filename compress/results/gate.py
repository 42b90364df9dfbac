"""Gate rules as typed data, applied to results. Pure: no I/O, no measurement.

Each rule knows its metric, whether higher is better and the kind of limit, so a verdict can say
exactly which number broke which limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Rule:
    """One gate rule: the recipe key, what it compares, the direction and unit. The checks, the
    CLI's ``gate`` overrides and the tests all read these (``RULES``), never a copy."""

    name: str  # the recipe key (gate.<name>)
    metric: str  # what is compared, in the user's words
    higher_is_better: bool
    unit: str

    def passes(self, value: float, limit: float) -> bool:
        """Whether ``value`` keeps within ``limit`` (a 1e-9 slack absorbs float rounding)."""
        return value >= limit - 1e-9 if self.higher_is_better else value <= limit + 1e-9

    def relation(self, passed: bool) -> str:
        """The comparison a check prints: value ``>=``/``<`` limit, or ``<=``/``>`` limit."""
        if self.higher_is_better:
            return ">=" if passed else "<"
        return "<=" if passed else ">"

    def looser(self, old: float | None, new: float | None) -> bool:
        """Whether limit ``new`` lets through more than ``old`` (dropping a rule is looser)."""
        if old is None:
            return False
        return new is None or (new < old if self.higher_is_better else new > old)


RULES = {
    "max_accuracy_drop": Rule("max_accuracy_drop", "top-1 drop on held-out", False, "points"),
    "min_speedup": Rule("min_speedup", "speed-up over the reference", True, "x"),
    "max_worst_class_drop": Rule(
        "max_worst_class_drop", "top-1 drop of the worst class on held-out", False, "points"
    ),
    "max_overfit_gap_increase": Rule(
        "max_overfit_gap_increase", "growth of the (fit split - held-out) gap over the baseline's",
        False, "points",
    ),
    "max_drift_drop_increase": Rule(
        "max_drift_drop_increase", "extra top-1 lost on drift data beyond the baseline's loss",
        False, "points",
    ),
    # Always applied when the overlap was measured: held-out must be disjoint from fitted data.
    "heldout_disjoint": Rule(
        "heldout_disjoint", "held-out samples shared with data a step consumed", False, "samples"
    ),
}
#: the rules a recipe sets a limit for (gate.<name>); heldout_disjoint is always on
LIMIT_RULES = tuple(name for name in RULES if name != "heldout_disjoint")


def looser_rules(old: dict, new: dict) -> list[str]:
    """One line per rule whose limit in ``new`` is looser than in ``old`` (a gate override)."""
    return [f"{name} = {new.get(name)} is looser than the recipe's {old.get(name)}"
            for name in LIMIT_RULES if RULES[name].looser(old.get(name), new.get(name))]


GATE_MODES = ("point", "confident")


@dataclass(frozen=True)
class Check:
    rule: str
    value: float | None
    limit: float
    passed: bool
    detail: str
    target: str | None = None
    batch_size: int | None = None
    mode: str | None = None  # point | confident, for rules with an interval
    needed_heldout_n: int | None = None  # held-out too small to decide: about this many needed
    decisive: bool | None = None  # speed checks: on a target that decides the verdict

    def to_dict(self) -> dict:
        return asdict(self)


def _mode(gate: dict) -> str:
    mode = gate.get("mode") or "point"
    if mode not in GATE_MODES:
        raise ValueError(f"gate.mode must be one of {', '.join(GATE_MODES)}, got {mode!r}")
    return mode


def _tolerance(gate: dict, key: str) -> float | None:
    limit = gate.get(key)
    if limit is not None and limit < 0:
        raise ValueError(f"gate.{key} is a tolerance in points and must be >= 0, got {limit}")
    return limit


def _loss_check(rule: str, what: str, estimate: float, upper: float | None, limit: float,
                mode: str, n_text: str) -> Check:
    """A 'loss must stay within tolerance' check: the estimate (point) or the upper bound of its
    interval (confident) against the limit."""
    spec = RULES[rule]
    use_upper = mode == "confident" and upper is not None
    estimate = estimate + 0.0  # -0.0 (no change) reads as +0.00
    upper = None if upper is None else upper + 0.0
    value = (upper if use_upper else estimate) + 0.0
    ok = spec.passes(value, limit)
    bound = f", upper bound {upper:+.2f}" if upper is not None else ""
    judged = "upper bound" if use_upper else "estimate"
    return Check(
        rule, value, limit, ok,
        f"{what} {estimate:+.2f} {spec.unit}{bound} ({mode} mode: {judged} "
        f"{spec.relation(ok)} {limit:g}; {n_text})",
        mode=mode,
    )


def _accuracy_checks(v: dict, gate: dict) -> list[Check]:
    limit = _tolerance(gate, "max_accuracy_drop")
    if limit is None:
        return []
    mode = _mode(gate)
    acc = v.get("accuracy") or {}
    change = acc.get("change_points")
    if change is None:
        return [Check("max_accuracy_drop", None, limit, False, "no held-out accuracy was measured")]
    iv = acc.get("change_interval")
    n = acc.get("heldout", {}).get("n")
    check = _loss_check("max_accuracy_drop", "top-1 drop", -change, -iv["low"] if iv else None,
                        limit, mode, f"held-out n={n}")
    if iv:
        from compress.measure.accuracy import drop_decision

        decision = drop_decision(acc, limit)
        if decision["state"] == "undecided":
            needed = decision["needed_n"]
            more = (f"; about {needed} samples needed" if needed
                    else " (the estimate sits on the tolerance: no held-out size decides it)")
            check = Check(
                check.rule, check.value, check.limit, check.passed,
                check.detail + f"; held-out too small to decide at this tolerance{more}",
                mode=mode, needed_heldout_n=needed,
            )
    return [check]


def _discipline_checks(v: dict, gate: dict) -> list[Check]:
    """Held-out overlap, worst class, overfitting and drift degradation."""
    from compress.measure.overlap import overlap_message

    checks: list[Check] = []
    mode = _mode(gate)
    overlap = v.get("heldout_overlap")
    if overlap is not None:
        shared = sum(overlap.values())
        n = (v.get("accuracy") or {}).get("heldout", {}).get("n")
        msg = overlap_message(overlap, n)
        checks.append(Check(
            "heldout_disjoint", float(shared), 0.0, RULES["heldout_disjoint"].passes(shared, 0.0),
            msg or f"held-out shares no sample with {', '.join(overlap) or 'any consumed split'}",
        ))
    limit = _tolerance(gate, "max_worst_class_drop")
    if limit is not None:
        pc = (v.get("accuracy") or {}).get("per_class")
        if pc is None:
            checks.append(Check("max_worst_class_drop", None, limit, False,
                                "no per-class accuracy was measured"))
        else:
            drop = pc["worst_class_drop_points"] + 0.0
            rule = RULES["max_worst_class_drop"]
            high = pc.get("worst_class_drop_high_points")
            if mode == "confident" and high is not None:
                # The largest per-class upper limit bounds the largest true per-class drop.
                ok = rule.passes(high, limit)
                checks.append(Check(
                    "max_worst_class_drop", high + 0.0, limit, ok,
                    f"worst class ({pc['worst_class']}) drop {drop:+.2f} {rule.unit}, largest per-class "
                    f"upper bound {high + 0.0:+.2f} (class {pc['worst_class_drop_high_class']}) "
                    f"(confident mode: upper bound {rule.relation(ok)} {limit:g}; "
                    f"held-out n={pc['worst_class_n']} in the worst class)",
                    mode=mode,
                ))
            else:
                ok = rule.passes(drop, limit)
                checks.append(Check(
                    "max_worst_class_drop", drop, limit, ok,
                    f"worst class ({pc['worst_class']}) drop {drop:+.2f} {rule.unit} "
                    f"{rule.relation(ok)} {limit:g} (point estimate, held-out n={pc['worst_class_n']})",
                    mode="point",
                ))
    limit = _tolerance(gate, "max_overfit_gap_increase")
    if limit is not None:
        of = v.get("overfit") or {}
        if of.get("gap_increase_points") is None:
            checks.append(Check("max_overfit_gap_increase", None, limit, False,
                                "no overfitting gap could be measured (no train/tuning split)"))
        else:
            iv = of.get("gap_increase_interval") or {}
            checks.append(_loss_check(
                "max_overfit_gap_increase", f"overfit gap ({of['fit_split']} - held-out) growth",
                of["gap_increase_points"], iv.get("high"), limit, mode,
                f"{of['fit_split']} n={of['fit_n']}, held-out n={of['heldout_n']}",
            ))
    limit = _tolerance(gate, "max_drift_drop_increase")
    if limit is not None:
        deg = ((v.get("drift") or {}).get("labelled") or {}).get("degradation")
        if deg is None:
            checks.append(Check("max_drift_drop_increase", None, limit, False,
                                "no labelled drift set was evaluated (set data.drift)"))
        else:
            iv = deg.get("drop_increase_interval") or {}
            lab = v["drift"]["labelled"]
            checks.append(_loss_check(
                "max_drift_drop_increase", "extra drop on drift vs baseline",
                deg["drop_increase_points"], iv.get("high"), limit, mode,
                f"drift n={lab['drift_n']}, held-out n={lab['heldout_n']}",
            ))
    return checks


def _speed_checks(v: dict, gate: dict, reference: str) -> list[Check]:
    limit = gate.get("min_speedup")
    if limit is None:
        return []
    sizes = gate.get("speedup_batch_sizes")
    rule = RULES["min_speedup"]
    checks = []
    for target, per_bs in (v.get("speedup") or {}).items():
        for bs_key, sp in per_bs.items():
            bs = int(bs_key)
            if sizes and bs not in sizes:
                continue
            value = sp["estimate"]
            ok = rule.passes(value, limit)
            checks.append(Check(
                "min_speedup", value, limit, ok,
                f"{value:.2f}{rule.unit} vs {reference} on {target}, batch {bs} {rule.relation(ok)} "
                f"{limit:g}{rule.unit}",
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
    checks = _accuracy_checks(v, gate) + _discipline_checks(v, gate)
    if name == reference:
        return {"verdict": "reference" if all(c.passed for c in checks) else "fail",
                "checks": [c.to_dict() for c in checks]}
    speed = _speed_checks(v, gate, reference)
    # A variant is deployed on one target: the speed rule holds when some target meets it at every
    # gated batch size. Checks on the other targets are reported, not decisive.
    by_target: dict = {}
    for c in speed:
        by_target.setdefault(c.target, []).append(c)
    passing_targets = [t for t, cs in by_target.items() if t is not None and all(c.passed for c in cs)]
    speed = [replace(c, decisive=not passing_targets or c.target in passing_targets) for c in speed]
    verdict = "pass" if all(c.passed for c in checks + speed if c.decisive is not False) else "fail"
    out = [c.to_dict() for c in checks + speed]
    return {"verdict": verdict, "checks": out, "passing_targets": passing_targets}


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
    rec = recommend(results, passing)
    exit_code = 3 if errors else (1 if failed else 0)
    summary = {
        "passed": not failed and not errors,
        "failed": failed,
        "errors": errors,
        "passing": passing,
        "recommended": rec[0] if rec else None,
        "recommended_target": rec[1] if rec else None,
        "recommended_by": ("usd_per_1m" if rec[2] == "usd" else "latency") if rec else None,
        "exit_code": exit_code,
        "rules": {k: gate.get(k) for k in (*LIMIT_RULES, "speedup_batch_sizes", "reference")},
        "mode": gate.get("mode") or "point",
    }
    results["verdict"] = summary
    return summary


def _per_sample(v: dict, target: str) -> tuple[float, float | None] | None:
    """(latency ms per sample, $ per 1M or None) of a variant on a target, at the largest batch
    size profiled there."""
    per_bs = (v.get("latency") or {}).get(target) or {}
    if not per_bs:
        return None
    m = per_bs[max(per_bs, key=int)]
    return m["p50_ms"] / int(m.get("batch_size", 1)), m.get("usd_per_1m")


def cheapest_target(v: dict, basis: str = "latency") -> tuple[str, float] | None:
    """(target, cost) where a variant is cheapest to serve: lowest $ per 1M (``basis="usd"``) or
    lowest latency per sample (``basis="latency"``), at the largest batch size profiled on each."""
    best = None
    for target in v.get("latency") or {}:
        found = _per_sample(v, target)
        if found is None:
            continue
        key = found[1] if basis == "usd" else found[0]
        if key is not None and (best is None or key < best[1]):
            best = (target, key)
    return best


def recommend(results: dict, passing: list[str]) -> tuple[str, str, str] | None:
    """(variant, target, basis) of the cheapest passing variant on the target that serves it
    cheapest. Ranked by $ per 1M when every timed target of every passing variant has a price,
    else by measured latency per sample: a price on one target only must not make a variant on
    an unpriced (maybe faster) target look free or expensive."""
    priced = all(
        found[1] is not None
        for name in passing for t in (results["variants"][name].get("latency") or {})
        if (found := _per_sample(results["variants"][name], t)) is not None
    )
    basis = "usd" if priced else "latency"
    best = None
    for name in passing:
        found = cheapest_target(results["variants"][name], basis)
        if found is not None and (best is None or found[1] < best[2]):
            best = (name, found[0], found[1])
    return None if best is None else (best[0], best[1], basis)


def override_gate(gate: dict, overrides: dict) -> dict:
    """The recipe's gate with ``overrides`` (rule name -> value; None = keep) applied, validated
    like the recipe's gate section. The reference cannot change: speed-ups were measured against it.

    Raises RecipeError naming each bad rule or value (exit 2)."""
    from pydantic import ValidationError

    from compress.errors import RecipeError
    from compress.recipe import GateConfig

    changes = {k: v for k, v in overrides.items() if v is not None}
    for key, default in (("reference", "baseline"), ("reference_target", None)):
        if key in changes and changes[key] != gate.get(key, default):
            raise RecipeError(
                f"gate.{key} cannot be changed after a run (speed-ups were measured against "
                f"{gate.get(key, default)!r}): rerun the recipe with the new {key}"
            )
    known = set(GateConfig.model_fields)
    unknown = sorted(set(changes) - known)
    if unknown:
        raise RecipeError(f"unknown gate rule(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    merged = {k: v for k, v in gate.items() if k in known}
    merged.update(changes)
    try:
        return GateConfig.model_validate(merged).model_dump()
    except ValidationError as err:
        problems = [f"gate.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise RecipeError("invalid gate override: " + "; ".join(problems), problems) from None
