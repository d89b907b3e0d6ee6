"""loadtest.soak's costly bodies are what the soak says they are (pure: no server)."""

from __future__ import annotations

import json

from loadtest.soak import expanding_batch, nested_flood
from sentiment_model.normalise import normalised_length
from serving.jsonbody import body_limits, shape_problem
from serving.settings import Settings

DEFAULTS = Settings()


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def test_expanding_batch_passes_every_raw_limit_and_not_the_normalised_one():
    body = body_of(expanding_batch())
    texts = json.loads(body)["texts"]
    assert len(body) <= DEFAULTS.max_body_bytes
    assert len(body) <= body_limits(DEFAULTS.max_text_chars, DEFAULTS.max_batch_items)[1]
    assert len(texts) == DEFAULTS.max_batch_items
    assert all(len(t) <= DEFAULTS.max_text_chars for t in texts)
    assert normalised_length(texts[0]) == 18 * len(texts[0]) > DEFAULTS.max_text_chars


def test_nested_flood_is_a_megabyte_that_json_would_parse():
    body = body_of(nested_flood())
    assert 1_000_000 < len(body) <= DEFAULTS.max_body_bytes
    json.loads(body)  # 900 deep: within the json module's recursion limit
    assert shape_problem(body) == "body has more than 64 arrays and objects"
