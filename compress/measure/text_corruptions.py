"""Synthetic text corruptions for the robustness profile: typos, case changes, dropped words.

Severities 1..5 as for images (compress.measure.corruptions): the parameter is the share of words
touched. Each sample's corruption depends only on its text, the corruption, the severity and the
seed, never on its position or the other samples, so a sentence is corrupted alike in every split
and every batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from compress.measure.corruptions import SEVERITIES, check_severity  # noqa: F401  (SEVERITIES: part of this module's API)

# Share of a sample's words that get a typo / a case change / are dropped, per severity 1..5.
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "typo": (0.05, 0.10, 0.20, 0.30, 0.50),
    "case": (0.10, 0.25, 0.50, 0.75, 1.00),
    "dropped_words": (0.05, 0.10, 0.15, 0.20, 0.30),
}
TEXT_CORRUPTIONS = frozenset(SEVERITY_PARAMS)

# Neighbours on a QWERTY keyboard: what a finger that slips hits instead.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ADJACENT: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        near = [_row[i] for i in (_c - 1, _c + 1) if 0 <= i < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_ROWS):
                near += [_ROWS[_other][i] for i in (_c - 1, _c, _c + 1) if 0 <= i < len(_ROWS[_other])]
        _ADJACENT[_key] = "".join(near)


def check_text_corruption(name: str, severity: int) -> None:
    """ValueError naming the fix for an unknown text corruption or severity (for early checks)."""
    if name not in TEXT_CORRUPTIONS:
        raise ValueError(
            f"unknown text corruption {name!r}: choose one of {', '.join(sorted(TEXT_CORRUPTIONS))}"
        )
    check_severity(severity)


def corrupt_texts(texts: Sequence[str], name: str, severity: int, *, seed: int = 0) -> list[str]:
    """Corrupted copies of ``texts`` (the input list is left untouched). A sample is keyed by its
    text, so a batch read later is corrupted exactly as the whole list would be."""
    check_text_corruption(name, severity)
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string: wrap it in a list")
    rate = SEVERITY_PARAMS[name][severity - 1]
    apply = {"typo": _typos, "case": _case, "dropped_words": _drop}[name]
    return [apply(text, rate, _sample_rng(text, name, severity, seed)) for text in texts]


def _sample_rng(text: str, name: str, severity: int, seed: int) -> np.random.Generator:
    digest = hashlib.sha1(f"{name}\x1f{severity}\x1f{text}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def _chosen(rng: np.random.Generator, candidates: list[int], rate: float) -> list[int]:
    """``rate`` of the candidates (at least one when there are any), in order."""
    if not candidates:
        return []
    k = max(1, int(round(rate * len(candidates))))
    return sorted(rng.choice(candidates, size=min(k, len(candidates)), replace=False).tolist())


def _typos(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split(" ")
    alpha = [i for i, w in enumerate(words) if any(ch.isalpha() for ch in w)]
    for i in _chosen(rng, alpha, rate):
        words[i] = _typo(words[i], rng)
    return " ".join(words)


def _typo(word: str, rng: np.random.Generator) -> str:
    letters = [i for i, ch in enumerate(word) if ch.lower() in _ADJACENT]
    swappable = [i for i in range(len(word) - 1)
                 if word[i].isalpha() and word[i + 1].isalpha() and word[i] != word[i + 1]]
    if swappable and (not letters or rng.random() < 0.5):
        i = int(rng.choice(swappable))
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if not letters:
        return word
    i = int(rng.choice(letters))
    ch = word[i]
    new = str(rng.choice(list(_ADJACENT[ch.lower()])))
    return word[:i] + (new.upper() if ch.isupper() else new) + word[i + 1:]


def _case(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split(" ")
    cased = [i for i, w in enumerate(words) if w.lower() != w.upper()]
    for i in _chosen(rng, cased, rate):
        word = words[i]
        # Upper-case a word that is not already; otherwise lower it.
        words[i] = word.upper() if word != word.upper() else word.lower()
    return " ".join(words)


def _drop(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split()
    # Punctuation tokens are not words; one word always stays, so something is left to classify.
    candidates = [i for i, w in enumerate(words) if any(ch.isalnum() for ch in w)]
    if len(candidates) < 2:
        return text
    dropped = set(_chosen(rng, candidates, rate)[: len(candidates) - 1])
    return " ".join(w for i, w in enumerate(words) if i not in dropped)
