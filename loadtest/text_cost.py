"""What a text costs the final stage, in-process: request validation and model time.

Prints, for plain, accented and expanding texts (U+FDFA becomes 18 characters under the
vectorizer's NFKD): the text's length as the model reads it, ``PredictRequest`` validation time
per request (the event loop's share; best of 7 timeit repeats), and the model's time for the
text (direct scorer, ``clean_text`` included). ``--compare DIR`` also times the request models
of another checkout's ``serving/schemas.py`` (for example main), interleaved with this one's so
the machine's noise hits both alike. Reads the default model; writes nothing.

    python -m loadtest.text_cost [--compare /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import timeit
from pathlib import Path

from sentiment_model import load_model
from sentiment_model.data import clean_text
from sentiment_model.normalise import normalised_length
from serving.schemas import request_models

TEXTS = {
    "ASCII, 68 chars": "A warm, funny film with a clever script and two lovely performances.",
    "ASCII, 10,000 chars": ("A warm, funny film with a clever script. " * 300)[:10_000],
    "accented, 70 chars": "Café crème, naïve façade: the acting is ÉPIQUE and the plot is so-so.",
    "accented, 10,000 chars": ("Café crème, naïve façade: the acting is ÉPIQUE. " * 300)[:10_000],
    "U+FDFA x 555 (largest accepted)": "\ufdfa" * 555,
    "U+FDFA x 9,000 (refused: 162,000)": "\ufdfa" * 9_000,
}


def validation_us(model: type, raw: str, repeats: int = 7, number: int = 500) -> float:
    """Best time of ``model.model_validate_json(raw)``, in microseconds (errors included)."""

    def validate() -> None:
        with contextlib.suppress(ValueError):  # a refused text costs its error too
            model.model_validate_json(raw)

    return min(timeit.repeat(validate, number=number, repeat=repeats)) / number * 1e6


def other_predict_request(checkout: Path) -> type:
    """``PredictRequest`` (default limits) from another checkout's serving/schemas.py."""
    sys.dont_write_bytecode = True  # leave the other checkout untouched
    spec = importlib.util.spec_from_file_location("other_schemas", checkout / "serving/schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.request_models(10_000, 64)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description="Validation and model cost per text.")
    parser.add_argument("--compare", type=Path, help="another checkout to time as well")
    args = parser.parse_args()
    models = {"this": request_models(10_000, 64)[0]}
    if args.compare:
        models["compare"] = other_predict_request(args.compare)
    model = load_model(None)
    model.use_scorer("direct")
    header = f"{'text':36} {'as read':>8} " + " ".join(f"{k + ' us':>11}" for k in models)
    print(header + f" {'model ms':>9}")
    for name, text in TEXTS.items():
        raw = json.dumps({"text": text})
        best = {k: float("inf") for k in models}
        for _ in range(3):  # interleaved: noise hits every checkout alike
            for label, request_model in models.items():
                best[label] = min(best[label], validation_us(request_model, raw, repeats=3))
        batch = [text]
        seconds = min(
            timeit.repeat(
                lambda b=batch: model.predict([clean_text(t) for t in b]), number=5, repeat=3
            )
        )
        cells = " ".join(f"{best[k]:11.1f}" for k in models)
        print(f"{name:36} {normalised_length(text):8d} {cells} {seconds / 5 * 1000:9.2f}")


if __name__ == "__main__":
    main()
