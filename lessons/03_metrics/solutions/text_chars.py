"""Lesson 03, exercise 3: a histogram of the text length, with buckets chosen from the data.

    python lessons/03_metrics/solutions/text_chars.py     # where the test split's texts fall

Lesson 02's table: Rotten Tomatoes sentences have a median of 111 characters and none over 267;
IMDB reviews a median of 964, a 99th percentile of 5,138, and the server accepts up to 10,000.
The buckets are roughly logarithmic (each 2-2.5x the last), so both sources get several
buckets, and the top finite one is the server's limit.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

BUCKETS = (50, 100, 200, 300, 500, 1_000, 2_000, 5_000, 10_000)


def text_chars_histogram(registry: CollectorRegistry) -> Histogram:
    """``inference_text_chars``: characters per text scored, no labels (one series per bucket)."""
    return Histogram(
        "inference_text_chars",
        "Characters per text scored (after cleaning).",
        buckets=BUCKETS,
        registry=registry,
    )


def main() -> None:
    from sentiment_model.data import load_splits

    test = load_splits().test
    registry = CollectorRegistry()
    histogram = text_chars_histogram(registry)
    for text in test["text"]:
        histogram.observe(len(text))
    previous = 0.0
    [family] = registry.collect()
    for sample in family.samples:
        if sample.name.endswith("_bucket"):
            print(f"le={sample.labels['le']:>8s}: {sample.value - previous:6.0f} texts")
            previous = sample.value


if __name__ == "__main__":
    main()
