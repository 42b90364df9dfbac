"""Measured throughput -> dollars per million inferences, and when a compression pays for itself.

The built-in ``PRICES`` are on-demand list prices as recalled from the providers' pricing pages,
without internet access when this table was written: list price as recalled; verify before
budgeting. Pass your own ``usd_per_hour`` (the recipe's ``targets[].usd_per_hour``) for real numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SECONDS_PER_HOUR = 3600.0


def usd_per_1m(throughput_per_s: float, usd_per_hour: float) -> float:
    """Dollars per million inferences on an instance kept fully busy at ``throughput_per_s``.

    Idle time is not counted: a half-idle instance costs twice as much per inference.
    """
    _check_throughput(throughput_per_s)
    _check_price(usd_per_hour, "usd_per_hour")
    return usd_per_hour / SECONDS_PER_HOUR / throughput_per_s * 1e6


def monthly_cost_usd(
    requests_per_day: float,
    throughput_per_s: float,
    usd_per_hour: float,
    *,
    days: float = 30,
) -> float:
    """Cost of serving ``requests_per_day`` for ``days``, billing only the busy time.

    This is the floor (autoscaling to zero, perfect batching); an always-on instance costs
    ``usd_per_hour * 24 * days`` whatever the traffic.
    """
    _check_non_negative(requests_per_day, "requests_per_day")
    if not (math.isfinite(days) and days > 0):
        raise ValueError(f"days must be a positive number, got {days}")
    return requests_per_day * days / 1e6 * usd_per_1m(throughput_per_s, usd_per_hour)


@dataclass(frozen=True)
class BreakEven:
    """What compressing cost, what it saves per million inferences, and when the two meet."""

    compression_cost_usd: float
    saving_usd_per_1m: float
    break_even_inferences: float | None  # None when the variant saves nothing per inference
    days_at_traffic: float | None  # None without traffic, or when it never breaks even
    requests_per_day: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def break_even(
    compression_seconds: float,
    compression_usd_per_hour: float,
    baseline_usd_per_1m: float,
    variant_usd_per_1m: float,
    requests_per_day: float | None = None,
) -> BreakEven:
    """How many inferences (and days at ``requests_per_day``) repay the compute spent compressing."""
    _check_non_negative(compression_seconds, "compression_seconds")
    _check_price(compression_usd_per_hour, "compression_usd_per_hour")
    _check_price(baseline_usd_per_1m, "baseline_usd_per_1m")
    _check_price(variant_usd_per_1m, "variant_usd_per_1m")
    if requests_per_day is not None:
        _check_non_negative(requests_per_day, "requests_per_day")
    cost_usd = compression_seconds / SECONDS_PER_HOUR * compression_usd_per_hour
    saving = baseline_usd_per_1m - variant_usd_per_1m
    inferences = cost_usd / saving * 1e6 if saving > 0 else None
    days = None
    if inferences is not None and requests_per_day:
        days = inferences / requests_per_day
    return BreakEven(cost_usd, saving, inferences, days, requests_per_day)


def describe(be: BreakEven) -> str:
    """One sentence for the report, e.g. "pays for itself after 1.3 M inferences, about 4 days at
    300 k requests/day"."""
    if be.break_even_inferences is None:
        if be.saving_usd_per_1m < 0:
            return (
                "never pays off: no saving per inference "
                f"(the variant costs ${-be.saving_usd_per_1m:.4g} more per 1M)"
            )
        return "never pays off: no saving per inference"
    if be.compression_cost_usd == 0:
        return "pays for itself immediately: compressing cost nothing"
    text = f"pays for itself after {_count(be.break_even_inferences)} inferences"
    if be.days_at_traffic is not None and be.requests_per_day:
        text += f", {_duration(be.days_at_traffic)} at {_count(be.requests_per_day)} requests/day"
    return text


def serving_costs(
    entries: dict[str, dict],
    target: str,
    usd_per_hour: float,
    *,
    reference: str,
    requests_per_day: float | None = None,
    compression_usd_per_hour: float | None = None,
) -> None:
    """Add cost numbers to results entries profiled on ``target`` (in place).

    Per batch size: ``usd_per_1m`` and, with traffic, ``monthly_usd`` go into
    ``entry["latency"][target][bs]``. Each variant with recorded steps also gets
    ``entry["cost"][target]``: its one-time compression cost (the sum of its steps' compute
    seconds, inherited steps included, priced at ``compression_usd_per_hour``, default the target's
    price), the saving per million inferences against ``reference`` (the baseline when the reference
    was not profiled here) and the break-even volume per batch size.
    """
    for entry in entries.values():
        for m in (entry.get("latency") or {}).get(target, {}).values():
            m["usd_per_1m"] = usd_per_1m(m["throughput_per_s"], usd_per_hour)
            if requests_per_day is not None:
                m["monthly_usd"] = monthly_cost_usd(requests_per_day, m["throughput_per_s"], usd_per_hour)
    against = next((n for n in (reference, "baseline") if target in (entries.get(n, {}).get("latency") or {})), None)
    if against is None:
        return
    ref_latency = entries[against]["latency"][target]
    price = usd_per_hour if compression_usd_per_hour is None else compression_usd_per_hour
    for name, entry in entries.items():
        latency = (entry.get("latency") or {}).get(target)
        if name == against or not latency or "steps" not in entry:
            continue
        seconds = float(sum(s.get("compute_seconds", s.get("seconds", 0.0)) for s in entry["steps"]))
        per_bs = {}
        for bs, m in latency.items():
            if bs not in ref_latency:
                continue
            be = break_even(seconds, price, ref_latency[bs]["usd_per_1m"], m["usd_per_1m"], requests_per_day)
            per_bs[bs] = {**be.to_dict(), "sentence": describe(be)}
        entry.setdefault("cost", {})[target] = {
            "against": against, "compression_seconds": seconds, "compression_usd_per_hour": price,
            "compression_machines": sorted({s["machine"] for s in entry["steps"] if s.get("machine")}),
            "per_batch_size": per_bs,
        }


@dataclass(frozen=True)
class InstancePrice:
    """An instance's on-demand list price (Linux), with where and when the price was read."""

    name: str
    usd_per_hour: float
    vcpus: int
    accelerator: str | None
    provider: str
    region: str
    source: str
    as_of: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_AS_OF = "2024 (recalled, not fetched)"
_AWS = "AWS EC2 On-Demand Pricing page"
_GCP = "Google Cloud Compute Engine VM instance pricing page"
_AZURE = "Azure Linux Virtual Machines pricing page"

# List price as recalled; verify before budgeting.
PRICES: dict[str, InstancePrice] = {
    p.name: p
    for p in [
        InstancePrice("c7i.large", 0.08925, 2, None, "aws", "us-east-1", _AWS, _AS_OF),
        InstancePrice("c7i.xlarge", 0.1785, 4, None, "aws", "us-east-1", _AWS, _AS_OF),
        InstancePrice("m7i.large", 0.1008, 2, None, "aws", "us-east-1", _AWS, _AS_OF),
        InstancePrice("m7i.xlarge", 0.2016, 4, None, "aws", "us-east-1", _AWS, _AS_OF),
        InstancePrice("g4dn.xlarge", 0.526, 4, "NVIDIA T4", "aws", "us-east-1", _AWS, _AS_OF),
        InstancePrice("g5.xlarge", 1.006, 4, "NVIDIA A10G", "aws", "us-east-1", _AWS, _AS_OF),
        InstancePrice("g6.xlarge", 0.8048, 4, "NVIDIA L4", "aws", "us-east-1", _AWS, _AS_OF),
        InstancePrice("n2-standard-2", 0.0971, 2, None, "gcp", "us-central1", _GCP, _AS_OF),
        InstancePrice("Standard_D2s_v5", 0.096, 2, None, "azure", "eastus", _AZURE, _AS_OF),
    ]
}


def lookup_price(name: str) -> InstancePrice:
    """The built-in list price of an instance type (case-insensitive name)."""
    by_lower = {key.lower(): price for key, price in PRICES.items()}
    price = by_lower.get(name.strip().lower())
    if price is None:
        raise ValueError(
            f"no built-in price for instance {name!r}; valid names: {', '.join(sorted(PRICES))}. "
            "For another instance, set usd_per_hour on the target instead."
        )
    return price


def _count(n: float) -> str:
    for factor, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n / factor:.2g} {unit}" if n < 10 * factor else f"{n / factor:.0f} {unit}"
    return f"{n:.0f}"


def _duration(days: float) -> str:
    hours = days * 24
    if hours < 1:
        return "within an hour"
    if hours < 1.5:
        return "about an hour"
    if hours < 48:
        return f"about {hours:.0f} hours"
    if days < 730:
        return f"about {days:.0f} days"
    return f"about {days / 365:.0f} years"


def _check_throughput(throughput_per_s: float) -> None:
    if not (math.isfinite(throughput_per_s) and throughput_per_s > 0):
        raise ValueError(
            f"throughput_per_s must be a positive number, got {throughput_per_s}: "
            "measure at least one inference in a timed window"
        )


def _check_price(value: float, field: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{field} must be a non-negative number of dollars, got {value}")


def _check_non_negative(value: float, field: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{field} must be a non-negative number, got {value}")
