"""The helpers behind the notebooks' tables and measurements."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentiment_model import load_model
from sentiment_model.artifact import compact_for_export
from sentiment_model.data import clean_reviews
from sentiment_model.evaluate import evaluate
from sentiment_model.explore import (
    cleaning_report,
    length_summary,
    load_footprint,
    metrics_table,
    pruned_terms,
    skops_roundtrip,
    top_ngrams,
)
from sentiment_model.train import build_pipeline, fit

RAW = pd.DataFrame(
    {
        "text": ["Good.<br /><br />Fun", "Good. Fun", "torn", "torn", "solo", "<br />", "a", "a"],
        "label": [1, 1, 0, 1, 0, 1, 1, 1],
        "source": ["imdb"] * 6 + ["rotten_tomatoes"] * 2,
    }
)


def test_cleaning_report_counts_what_clean_reviews_removes():
    table = cleaning_report(RAW)
    assert table.loc["imdb"].to_dict() == {
        "raw_rows": 6,
        "with_br_tags": 2,
        "empty": 1,
        "conflicting_labels": 2,
        "duplicates": 1,  # "Good. Fun" once its <br /> tags are gone
        "kept": 2,
    }
    assert table.loc["rotten_tomatoes", "duplicates"] == 1
    assert table.loc["total", "kept"] == len(clean_reviews(RAW)) == 3
    assert table.loc["total", "raw_rows"] == len(RAW)


def test_length_summary_percentiles_and_share_of_long_texts():
    df = pd.DataFrame(
        {
            "text": ["x" * n for n in (10, 20, 30, 3_000)] + ["y" * 5] * 2,
            "source": ["imdb"] * 4 + ["rotten_tomatoes"] * 2,
        }
    )
    table = length_summary(df, percentiles=(0.5,), long_chars=2_000)
    assert list(table.columns) == ["p50", "max", "share_over_2000"]
    assert table.loc["imdb", "p50"] == 25
    assert table.loc["imdb", "max"] == 3_000
    assert table.loc["imdb", "share_over_2000"] == 0.25
    assert table.loc["rotten_tomatoes", "share_over_2000"] == 0
    assert "p99.9" in length_summary(df).columns


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_metrics_table_has_a_row_per_part_of_the_report(sample, splits):
    report = evaluate(fit(sample), splits.validation.head(400))
    table = metrics_table(report)
    assert list(table.index) == ["overall", "imdb", "rotten_tomatoes"]
    assert table.loc["imdb", "accuracy"] == report["by_source"]["imdb"]["accuracy"]
    assert table.loc["overall", "f1_positive"] == report["overall"]["per_class"]["positive"]["f1"]
    assert table["n"].iloc[1:].sum() == table.loc["overall", "n"] == 400


def test_top_ngrams_are_the_extreme_weights_before_and_after_compaction():
    texts = ["great fun", "great film", "dull film", "dull plot", "great plot", "dull fun"]
    pipeline = build_pipeline(C=10.0)
    pipeline.set_params(tfidf__min_df=1).fit(texts, [1, 1, 0, 0, 1, 0])
    negative, positive = top_ngrams(pipeline, n=2)
    assert negative.index[0] == "dull" and (negative < 0).all()
    assert positive.index[0] == "great" and (positive > 0).all()
    compact_for_export(pipeline)
    after_negative, after_positive = top_ngrams(pipeline, n=2)
    pd.testing.assert_series_equal(after_negative, negative)
    pd.testing.assert_series_equal(after_positive, positive)


def test_pruned_terms_are_exactly_the_rare_ngrams():
    texts = ["good film", "good plot", "odd film"]
    tfidf = build_pipeline().named_steps["tfidf"].fit(texts)  # min_df=2
    assert set(tfidf.vocabulary_) == {"good", "film"}
    assert pruned_terms(tfidf, texts) == {"plot", "odd", "good film", "good plot", "odd film"}


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_skops_roundtrip_reports_size_and_times(sample, tmp_path):
    pipeline = fit(sample)
    result = skops_roundtrip(pipeline, tmp_path / "m.skops")
    assert result["size_bytes"] == (tmp_path / "m.skops").stat().st_size > 0
    assert result["dump_s"] > 0 and result["load_s"] > 0
    assert "load_s" not in skops_roundtrip(pipeline, tmp_path / "n.skops", load=False)


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_load_footprint_measures_a_fresh_process(small_model_dir: Path):
    result = load_footprint(small_model_dir)
    assert result["version"] == load_model(small_model_dir).version
    assert result["load_s"] > 0
    assert 0 < result["rss_before_load_bytes"] < result["rss_after_load_bytes"]
    assert result["peak_rss_bytes"] >= result["rss_after_load_bytes"]


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_load_footprint_reports_a_failed_load(tmp_path: Path):
    with pytest.raises(RuntimeError, match="model directory does not exist"):
        load_footprint(tmp_path / "missing")


def test_top_ngrams_of_a_loaded_artifact(small_model_dir: Path):
    model = load_model(small_model_dir)
    negative, positive = top_ngrams(model.pipeline, n=5)
    assert len(negative) == len(positive) == 5
    assert np.all(np.diff(negative.to_numpy()) >= 0) and np.all(np.diff(positive.to_numpy()) <= 0)
