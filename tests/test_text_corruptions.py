"""Text corruptions: what each one changes, severities, and determinism per sample."""

from __future__ import annotations

import pytest

from compress.measure.text_corruptions import (
    _ADJACENT,
    SEVERITIES,
    TEXT_CORRUPTIONS,
    check_text_corruption,
    corrupt_texts,
)

LONG = ("the acting , costumes , music , cinematography and sound are all astounding given the "
        "production 's austere locales and a story that never once loses its nerve")
TEXTS = [LONG, "A gorgeous , witty , seductive movie .", "bad", "It is Fine", ""]


def one_typo_apart(before: str, after: str) -> bool:
    """True when ``after`` is ``before`` with one adjacent-key substitution or one adjacent swap."""
    if len(before) != len(after):
        return False
    diff = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    if len(diff) == 1:
        i = diff[0]
        return after[i].lower() in _ADJACENT[before[i].lower()]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and before[diff[0]] == after[diff[1]] \
        and before[diff[1]] == after[diff[0]]


@pytest.mark.parametrize("name", sorted(TEXT_CORRUPTIONS))
@pytest.mark.parametrize("severity", SEVERITIES)
def test_deterministic_per_sample_and_input_untouched(name, severity):
    texts = list(TEXTS)
    out = corrupt_texts(texts, name, severity, seed=7)
    assert texts == TEXTS and len(out) == len(texts)
    assert out == corrupt_texts(texts, name, severity, seed=7)
    # A sample's corruption depends on its text only, not on its neighbours or position.
    assert corrupt_texts(texts[::-1], name, severity, seed=7) == out[::-1]
    assert corrupt_texts([texts[1]], name, severity, seed=7) == [out[1]]
    assert out[4] == ""


@pytest.mark.parametrize("name", sorted(TEXT_CORRUPTIONS))
def test_corruptions_change_text_and_seed_matters(name):
    out = corrupt_texts([LONG], name, 3, seed=0)[0]
    assert out != LONG
    others = {corrupt_texts([LONG], name, 3, seed=s)[0] for s in range(1, 6)}
    assert len(others | {out}) > 1


def test_typos_are_adjacent_keys_or_swaps():
    for severity in SEVERITIES:
        out = corrupt_texts([LONG], "typo", severity, seed=1)[0]
        before, after = LONG.split(" "), out.split(" ")
        assert len(before) == len(after)
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert changed and all(one_typo_apart(a, b) for a, b in changed)


def test_case_changes_only_case():
    for severity in SEVERITIES:
        out = corrupt_texts(TEXTS, "case", severity, seed=2)
        assert [o.lower() for o in out] == [t.lower() for t in TEXTS]
    assert corrupt_texts([LONG], "case", 5)[0] == LONG.upper()


def test_dropped_words_keep_order_and_a_word():
    for severity in SEVERITIES:
        out = corrupt_texts([LONG], "dropped_words", severity, seed=3)[0].split()
        rest = iter(LONG.split())
        assert all(word in rest for word in out)  # a subsequence: order kept, nothing added
        assert out.count(",") == LONG.split().count(",")  # punctuation is not a word: kept
    assert corrupt_texts(["bad"], "dropped_words", 5) == ["bad"]


@pytest.mark.parametrize("name", sorted(TEXT_CORRUPTIONS))
def test_severity_touches_more_words(name):
    def changed(severity):
        out = corrupt_texts([LONG], name, severity, seed=0)[0].split()
        if name == "dropped_words":
            return len(LONG.split()) - len(out)
        return sum(a != b for a, b in zip(LONG.split(), out, strict=True))

    counts = [changed(s) for s in SEVERITIES]
    assert counts == sorted(counts) and counts[-1] > counts[0]


@pytest.mark.parametrize(("args", "message"), [
    (("blur", 1), "unknown text corruption 'blur': choose one of case, dropped_words, typo"),
    (("typo", 0), r"severity must be one of \[1, 2, 3, 4, 5\], got 0"),
    (("typo", True), "severity must be one of"),
    (("typo", 2.0), "severity must be one of"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        check_text_corruption(*args)
    with pytest.raises(ValueError, match=message):
        corrupt_texts(["a b"], *args)


def test_a_single_string_is_refused():
    with pytest.raises(ValueError, match="wrap it in a list"):
        corrupt_texts("a sentence", "typo", 1)
