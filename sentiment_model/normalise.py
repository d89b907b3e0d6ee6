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

Cheap on the hot path: an ASCII text is its own length (``str.isascii`` is a flag test in
CPython); otherwise the text is normalised in chunks, which gives the same total because NFKD
and lower-casing act on each code point separately (canonical reordering moves marks, never
adds or drops one), and the count stops as soon as it passes ``stop_after``. scikit-learn's
own ``strip_accents_unicode`` drops the marks in a Python loop (30 ms for a 10,000-character
text of U+FDFA); here the marks are counted with one table look-up per character in numpy.
"""

from __future__ import annotations

import functools
import unicodedata

import numpy as np

# Largest number of characters one code point becomes under lower() + NFKD (U+FDFA); a unit
# test checks it against this Python's Unicode database. A text of n characters becomes at
# most n * MAX_EXPANSION, so a short one needs no normalising at all to be known within a limit.
MAX_EXPANSION = 18
CHUNK_CHARS = 1024  # normalised at a time: a text far over the limit stops after one chunk
# Every combining mark (canonical combining class > 0) lies below U+20000 (a unit test checks
# it), so the table stops there; higher code points map to its last entry, which is False.
TABLE_SIZE = 0x20000


@functools.cache
def _combining_table() -> np.ndarray:
    """``table[code point]`` is True for a combining mark (built once, about 7 ms)."""
    table = np.zeros(TABLE_SIZE + 1, dtype=bool)
    for code in range(TABLE_SIZE):
        if unicodedata.combining(chr(code)):
            table[code] = True
    return table


def _combining_marks(normalised: str) -> int:
    """How many characters of ``normalised`` are combining marks."""
    # surrogatepass: a lone surrogate is not a mark and must not raise here.
    codes = np.frombuffer(normalised.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return int(np.count_nonzero(_combining_table()[np.minimum(codes, TABLE_SIZE)]))


def normalised_length(text: str, stop_after: int | None = None) -> int:
    """Length of ``text`` after lower-casing, NFKD and dropping combining marks: what the
    vectorizer's tokenizer reads (``len(vectorizer.build_preprocessor()(text))``).

    With ``stop_after``, counting stops once the length passes it, and the partial count
    (already over ``stop_after``) is returned: a text far over a limit costs one chunk.
    """
    if text.isascii():  # ASCII: lower() and NFKD change no length
        return len(text)
    total = 0
    for start in range(0, len(text), CHUNK_CHARS):
        chunk = text[start : start + CHUNK_CHARS]
        if chunk.isascii():
            total += len(chunk)
        else:
            decomposed = unicodedata.normalize("NFKD", chunk.lower())
            total += len(decomposed) - _combining_marks(decomposed)
        if stop_after is not None and total > stop_after:
            break
    return total


def within(text: str, limit: int) -> bool:
    """True when ``text`` is at most ``limit`` characters once normalised, computed as cheaply
    as possible: ASCII and short texts are decided without normalising."""
    if text.isascii() or len(text) * MAX_EXPANSION <= limit:
        return len(text) <= limit
    return normalised_length(text, stop_after=limit) <= limit
