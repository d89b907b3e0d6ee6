"""sentiment_model.normalise: the length a text has once the vectorizer has normalised it."""

from __future__ import annotations

import random
import sys
import unicodedata

import pytest

from sentiment_model.normalise import (
    CHUNK_CHARS,
    MAX_EXPANSION,
    TABLE_SIZE,
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
    "\U0001d400\U0001f600"  # mathematical bold A, an emoji
    "ab Z.!"
)


@pytest.mark.parametrize(
    "text",
    [
        "plain ASCII text",
        "",
        "\ufdfa" * 10,
        "Café crème, naïve façade: ÉPIQUE",
        "e\u0301\u0302\u0303" * 500,  # marks across chunk boundaries
        "\u0130STANBUL \u03a3\u039f\u03a6\u039f\u03a3",
        "\ud800 lone surrogate",
    ],
)
def test_length_is_what_the_vectorizer_reads(text):
    assert normalised_length(text) == len(PREPROCESS(text))


def test_random_texts_across_chunks_match_the_vectorizer():
    rng = random.Random(0)
    for size in (10, CHUNK_CHARS - 1, CHUNK_CHARS + 1, 3 * CHUNK_CHARS + 7):
        text = "".join(rng.choice(SPECIAL) for _ in range(size))
        assert normalised_length(text) == len(PREPROCESS(text)), size


def test_stop_after_stops_early_and_is_already_over():
    text = "\ufdfa" * 10_000  # 180,000 characters once normalised
    partial = normalised_length(text, stop_after=10_000)
    assert 10_000 < partial <= 10_000 + CHUNK_CHARS * MAX_EXPANSION
    assert normalised_length(text) == 180_000


def test_within_decides_at_the_limit():
    assert within("\ufdfa" * 555, 10_000)  # 9,990 characters as the model reads it
    assert not within("\ufdfa" * 556, 10_000)  # 10,008
    assert within("x" * 10_000, 10_000) and not within("x" * 10_001, 10_000)
    assert within("é" * 10_000, 10_000)  # an accent is dropped, not counted
    assert not within("\ud55c" * 3_334, 10_000)  # Hangul: three jamo per syllable
    assert within("\u0301" * 5_000, 10_000)  # marks alone: nothing left


def test_max_expansion_is_this_pythons_largest():
    """The short-text shortcut in ``within`` relies on it (UAX #15: 18 for NFKD)."""
    largest = max(
        len(unicodedata.normalize("NFKD", chr(code).lower()))
        for code in range(sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF
    )
    assert largest == MAX_EXPANSION


def test_every_combining_mark_is_in_the_table():
    beyond = [
        code for code in range(TABLE_SIZE, sys.maxunicode + 1) if unicodedata.combining(chr(code))
    ]
    assert beyond == []
