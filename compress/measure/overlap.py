"""Held-out discipline: held-out must share no sample with any split a step consumed.

Samples are compared by a content hash of their pixels (``Split.sample_hashes``), so a duplicate
hidden under a different file name or in a different source is caught as well as a split mix-up.
"""

from __future__ import annotations

FIT_ROLES = ("train", "calibration", "tuning")


def heldout_overlap(splits, roles) -> dict[str, int]:
    """For each role in ``roles`` present in ``splits``: how many distinct held-out samples also
    appear in that split (0 = disjoint)."""
    if "heldout" not in splits:
        raise ValueError("heldout_overlap needs a heldout split")
    held = set(splits["heldout"].sample_hashes())
    out = {}
    for role in sorted(set(roles)):
        if role == "heldout" or role not in splits:
            continue
        out[role] = len(held.intersection(splits[role].sample_hashes()))
    return out


def overlap_message(overlap: dict[str, int], n_heldout: int | None = None) -> str | None:
    """A sentence naming the overlapping splits and counts, or None when held-out is clean."""
    bad = {r: c for r, c in overlap.items() if c}
    if not bad:
        return None
    of = f" of {n_heldout}" if n_heldout else ""
    parts = ", ".join(f"{c}{of} with {r}" for r, c in bad.items())
    return (
        f"held-out shares samples with data the model was fitted on ({parts}): its accuracy is "
        "not a held-out accuracy, so the gate refuses to pass it; make the splits disjoint "
        "(remove the duplicates from the sources, or split one source by data.split)"
    )
