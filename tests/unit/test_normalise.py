"""sentiment_model.normalise: the length a text has once the vectorizer has normalised it."""

from __future__ import annotations

import random
import sys

import pytest

from sentiment_model.normalise import (
    COMPUTED_BELOW,
    MAX_EXPANSION,
    _normalised,
    lengths_table,
    normalised_length,
    within,
)
from sentiment_model.train import build_pipeline

# What the shipped pipeline's tokenizer reads: its own preprocessor (lower-case, strip accents).
PREPROCESS = build_pipeline().steps[0][1].build_preprocessor()

# Characters that grow, vanish or change under lower() + NFKD, and plain ones.
SPECIAL = (
    "\ufdfa\ufdfb\u3250\u33af\u3316\ufb03\u2474\u00bd\u2153"  # ligatures, squares, fractions
    "\u0301\u0344\u0f73\u0308"  # combining marks (dropped), some that decompose into several
    "\u00e9\u00c9\u0130\u01c4\u1e9e\u03a3"  # accents, dotted capital I, DZ caron, final sigma
    "\ud55c\uae00"  # Hangul syllables (three jamo each, none dropped)
    "\U0001d400\U0001f600\U0002f800"  # mathematical bold A, an emoji, a CJK compatibility form
    "ab Z.!"
)


@pytest.mark.parametrize(
    "text",
    [
        "plain ASCII text",
        "",
        "\ufdfa" * 10,
        "Café crème, naïve façade: ÉPIQUE",
        "e\u0301\u0302\u0303" * 500,
        "\u0130STANBUL \u03a3\u039f\u03a6\u039f\u03a3",
        "\ud800 lone surrogate",
    ],
)
def test_length_is_what_the_vectorizer_reads(text):
    assert normalised_length(text) == len(PREPROCESS(text))


def test_random_texts_match_the_vectorizer():
    rng = random.Random(0)
    for size in (1, 10, 1_000, 5_000):
        text = "".join(rng.choice(SPECIAL) for _ in range(size))
        assert normalised_length(text) == len(PREPROCESS(text)), size


def test_every_tabulated_character_matches_the_vectorizer():
    table = lengths_table()
    differ = [code for code in range(COMPUTED_BELOW) if table[code] != 1]
    assert len(differ) > 10_000  # marks, compatibility forms, Hangul, capitals that grow
    for code in differ + random.Random(1).sample(range(COMPUTED_BELOW), 2_000):
        assert table[code] == len(PREPROCESS(chr(code))), hex(code)


def test_nothing_above_the_computed_range_differs_from_one():
    """Only code points below COMPUTED_BELOW are computed; the rest must all be 1."""
    above = (code for code in range(COMPUTED_BELOW, sys.maxunicode + 1))
    assert [hex(c) for c in above if _normalised(chr(c)) != 1] == []


def test_max_expansion_is_this_pythons_largest():
    """The short-text shortcut in ``within`` relies on it (UAX #15: 18 for NFKD)."""
    assert int(lengths_table().max()) == MAX_EXPANSION


def test_within_decides_at_the_limit():
    assert within("\ufdfa" * 555, 10_000)  # 9,990 characters as the model reads it
    assert not within("\ufdfa" * 556, 10_000)  # 10,008
    assert within("x" * 10_000, 10_000) and not within("x" * 10_001, 10_000)
    assert within("é" * 10_000, 10_000)  # an accent is dropped, not counted
    assert not within("\ud55c" * 3_334, 10_000)  # Hangul: three jamo per syllable
    assert within("\u0301" * 5_000, 10_000)  # marks alone: nothing left
