"""The data set: counts, cleaning and the split."""

from __future__ import annotations

import pandas as pd
import pytest

from sentiment_model.data import (
    clean_reviews,
    clean_text,
    fingerprint,
    load_reviews,
    split_reviews,
)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return load_reviews()


def test_raw_counts_match_the_published_data_sets(raw):
    counts = raw.groupby(["source", "label"]).size().to_dict()
    assert counts == {
        ("imdb", 0): 12_500,
        ("imdb", 1): 12_500,
        ("rotten_tomatoes", 0): 4_265,
        ("rotten_tomatoes", 1): 4_265,
    }
    assert list(raw.columns) == ["text", "label", "source"]


def test_raw_data_has_html_breaks_and_duplicates_that_cleaning_removes(raw):
    assert raw["text"].str.contains("<br").sum() > 10_000
    assert raw["text"].duplicated().sum() > 0
    clean = clean_reviews(raw)
    assert not clean["text"].str.contains("<br", case=False).any()
    assert not clean["text"].duplicated().any()
    assert (clean["text"].str.len() > 0).all()
    assert len(raw) - len(clean) < 200  # cleaning trims, it does not gut the data


def test_clean_text_replaces_breaks_and_collapses_whitespace():
    assert clean_text("Great.<br /><br />Loved it<BR>  really\n") == "Great. Loved it really"


def test_conflicting_duplicates_are_dropped_and_agreeing_ones_kept_once():
    df = pd.DataFrame(
        {
            "text": ["same", "same", "torn", "torn", "solo", "  "],
            "label": [1, 1, 0, 1, 0, 1],
            "source": ["imdb"] * 6,
        }
    )
    out = clean_reviews(df)
    assert sorted(out["text"]) == ["same", "solo"]


def test_split_is_deterministic_disjoint_and_stratified(splits):
    again = split_reviews(clean_reviews(load_reviews()))
    for a, b in zip(
        (splits.train, splits.validation, splits.test),
        (again.train, again.validation, again.test),
        strict=True,
    ):
        pd.testing.assert_frame_equal(a, b)
    train, val, test = (set(p["text"]) for p in (splits.train, splits.validation, splits.test))
    assert not train & val and not train & test and not val & test
    total = sum(splits.sizes().values())
    assert abs(len(splits.test) / total - 0.1) < 0.005
    whole = pd.concat([splits.train, splits.validation, splits.test])
    share = whole.groupby(["source", "label"]).size() / len(whole)
    for part in (splits.train, splits.validation, splits.test):
        part_share = part.groupby(["source", "label"]).size() / len(part)
        assert (part_share - share).abs().max() < 0.005


def test_split_refuses_data_with_duplicates():
    df = pd.DataFrame({"text": ["a", "a"] * 10, "label": [0, 1] * 10, "source": ["imdb"] * 20})
    with pytest.raises(ValueError, match="de-duplicated"):
        split_reviews(df)


def test_fingerprint_changes_with_any_row(splits):
    head = splits.train.head(50)
    assert fingerprint(head) == fingerprint(head.copy())
    changed = head.copy()
    changed.loc[changed.index[0], "label"] = 1 - changed["label"].iloc[0]
    assert fingerprint(changed) != fingerprint(head)
