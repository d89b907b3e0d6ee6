"""Lesson 02, exercise 1: how many IMDB reviews a 2,000-character limit refuses.

Start the validated stage with the lower limit, then run this against it:

    INFERENCE_MAX_TEXT_CHARS=2000 python3 tasks.py serve validated
    .venv/bin/python lessons/02_validated/solutions/refused_at_2000.py [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse

import httpx
import pandas as pd


def sample_imdb(test: pd.DataFrame, n: int = 200, seed: int = 0) -> list[str]:
    """``n`` IMDB reviews of the test split, drawn at random (reproducibly)."""
    return test[test["source"] == "imdb"].sample(n, random_state=seed)["text"].tolist()


def count_refused(client: httpx.Client, texts: list[str]) -> int:
    """POST each text to /predict; how many were refused with 422 (any other answer but 200
    is an error here)."""
    refused = 0
    for text in texts:
        status = client.post("/predict", json={"text": text}).status_code
        assert status in (200, 422), status
        refused += status == 422
    return refused


def main() -> None:
    from sentiment_model.data import load_splits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    texts = sample_imdb(load_splits().test, args.n)
    with httpx.Client(base_url=args.url, timeout=10) as client:
        refused = count_refused(client, texts)
    over = sum(len(t) > 2000 for t in texts)
    print(f"{refused} of {len(texts)} refused ({refused / len(texts):.1%}); {over} are over 2,000")


if __name__ == "__main__":
    main()
