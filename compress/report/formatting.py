"""Number formatting shared by the report sections (pure)."""

from __future__ import annotations


def fmt_count(n) -> str:
    """12_345_678 -> '12.35 M'; None -> '—'."""
    if n is None:
        return "—"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return str(n)
