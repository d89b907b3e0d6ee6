"""Lesson 02's answers: a 2,000-character limit against IMDB reviews (a settings change), and
a three-letter rule against every Rotten Tomatoes sentence (a validation change)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import pandas as pd
import pytest
from answers import solution
from pydantic import AfterValidator, BaseModel, ValidationError

load = partial(solution, "02_validated")


def test_exercise_1_about_one_in_six_imdb_reviews_is_refused(start_stage, splits):
    solution = load("refused_at_2000")
    texts = solution.sample_imdb(splits.test)
    with start_stage("validated", max_text_chars=2000) as client:
        refused = solution.count_refused(client, texts)
    assert refused == sum(len(t) > 2000 for t in texts)  # exactly the long ones
    assert 20 <= refused <= 46  # the answer's range: 16.5 % of 200, +- 2.5 standard deviations


def test_exercise_2_three_letters_refuse_one_sentence(splits):
    solution = load("enough_letters")
    every = pd.concat([splits.train, splits.validation, splits.test])
    by_source = dict(tuple(every.groupby("source")["text"]))
    assert solution.refused(by_source["rotten_tomatoes"]) == ["eh ."]
    assert solution.refused(by_source["imdb"]) == []

    class Review(BaseModel):
        text: Annotated[str, AfterValidator(solution._enough_letters)]

    assert Review(text="bad").text == "bad"
    with pytest.raises(ValidationError, match="at least 3 letters"):
        Review(text="ok!")  # a real, if short, review: the rule is a product decision
