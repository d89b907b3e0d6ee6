"""Lesson 02, exercise 2: refuse texts with fewer than 3 letters, and see whom that refuses.

    .venv/bin/python lessons/02_validated/solutions/enough_letters.py

In `serving/schemas.py` the rule would replace ``_not_blank`` in the ``AfterValidator`` of
``Text``; here it is a plain function, applied to every text of the data set.
"""

from __future__ import annotations

MIN_LETTERS = 3


def _enough_letters(text: str) -> str:
    """An after-validator: at least ``MIN_LETTERS`` letters (any script), else a 422."""
    if sum(char.isalpha() for char in text) < MIN_LETTERS:
        raise ValueError(f"text must contain at least {MIN_LETTERS} letters")
    return text


def refused(texts) -> list[str]:
    """The texts the rule would refuse."""
    out = []
    for text in texts:
        try:
            _enough_letters(text)
        except ValueError:
            out.append(text)
    return out


def main() -> None:
    import pandas as pd

    from sentiment_model.data import load_splits

    splits = load_splits()
    every = pd.concat([splits.train, splits.validation, splits.test])
    for source, texts in every.groupby("source")["text"]:
        lost = refused(texts)
        print(f"{source}: {len(lost)} of {len(texts):,} refused: {lost[:10]}")


if __name__ == "__main__":
    main()
