"""How long a text is once the vectorizer has normalised it: what the model really processes.

The shipped pipeline's ``TfidfVectorizer`` lower-cases each text and strips accents with
``strip_accents="unicode"`` (see ``train.build_pipeline``): Unicode NFKD, then every combining
mark dropped. NFKD expands compatibility characters, up to 18 times for one code point
(U+FDFA, an Arabic ligature, becomes 18 characters; UAX #15 gives 18 as NFKD's largest
expansion), so a text within a character limit can cost the tokenizer far more than its raw
length says. :func:`normalised_length` gives the length the tokenizer sees, so a server can bound
*that* (serving/schemas.py).

It is exact for ``strip_accents="unicode"`` and an upper bound for ``"ascii"`` (which also
drops every non-ASCII character) and, with the raw length limit, for ``None``.

How it stays cheap: lower-casing and NFKD act on each code point on its own (canonical
reordering moves marks, never adds or drops one), so a text's normalised length is the sum of
its characters' normalised lengths. Those are tabulated once (:func:`lengths_table`, about
0.15 s), and a text is then one table look-up per character in numpy (15-30 us for 10,000
characters) instead of a normalisation (scikit-learn's own ``strip_accents_unicode`` drops the
marks in a Python loop: 30 ms for 10,000 characters of U+FDFA). ASCII text is its own length:
``str.isascii`` is a flag test in CPython.
"""

from __future__ import annotations

import functools
import unicodedata

import numpy as np

# Largest number of characters one code point becomes (U+FDFA); a unit test checks it against
# this Python's Unicode database. A text of n characters becomes at most n * MAX_EXPANSION, so
# a short one is known to be within a limit without a look-up.
MAX_EXPANSION = 18
# Every code point whose normalised length is not 1 lies below U+20000 (a unit test checks it):
# only those are computed, every other one stays 1.
COMPUTED_BELOW = 0x20000


def _normalised(char: str) -> int:
    """Normalised length of one code point, computed the vectorizer's way."""
    decomposed = unicodedata.normalize("NFKD", char.lower())
    return sum(1 for c in decomposed if not unicodedata.combining(c))


@functools.cache
def lengths_table() -> np.ndarray:
    """``table[code point]``: that character's length once normalised (0 for a combining
    mark, 18 for U+FDFA, 1 for most). Built once per process; call it at start-up."""
    table = np.ones(0x110000, dtype=np.uint8)
    for code in range(COMPUTED_BELOW):
        char = chr(code)
        # (Hangul syllables decompose by rule, so is_normalized, not decomposition(), finds them)
        if (
            unicodedata.combining(char)
            or char.lower() != char
            or not unicodedata.is_normalized("NFKD", char)
        ):
            table[code] = _normalised(char)
    return table


def normalised_length(text: str) -> int:
    """Length of ``text`` after lower-casing, NFKD and dropping combining marks: what the
    vectorizer's tokenizer reads (``len(vectorizer.build_preprocessor()(text))``)."""
    if text.isascii():  # ASCII: lower() and NFKD change no length
        return len(text)
    # surrogatepass: a lone surrogate is one character (the JSON layer refuses them anyway).
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return int(lengths_table().take(codes).sum(dtype=np.int64))


def within(text: str, limit: int) -> bool:
    """True when ``text`` is at most ``limit`` characters once normalised, decided without a
    look-up for ASCII and short texts."""
    if text.isascii() or len(text) * MAX_EXPANSION <= limit:
        return len(text) <= limit
    return normalised_length(text) <= limit
