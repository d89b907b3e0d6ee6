"""serving.jsonbody: a JSON body's nesting and container count, judged before parsing."""

from __future__ import annotations

import json

import pytest

from serving.jsonbody import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, shape_problem


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": "a fine film"}',
        b'{"texts": ["a", "b"]}',
        b"",
        json.dumps({"text": "[[[[{{{{" * 500}).encode(),  # brackets inside a text
        json.dumps({"text": 'quote \\" then [[[[[[[[[[[[[['}).encode(),  # escaped quote
        nested(MAX_JSON_DEPTH),
        b"[" + b",".join([b"[]"] * (MAX_JSON_CONTAINERS - 1)) + b"]",
        b'{"text": "[[[[[[[[[[[[[[[[[[[[[',  # a string that never ends: json.loads says so
        b"]" * 100_000,  # closing brackets only: json.loads stops at the first
    ],
)
def test_bodies_any_request_could_be_pass(body):
    assert shape_problem(body) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (nested(MAX_JSON_DEPTH + 1), "nested more than 8 levels"),
        (b'{"a": ' * 9 + b"1" + b"}" * 9, "nested more than 8 levels"),
        (b"[" + b",".join([b"[]"] * MAX_JSON_CONTAINERS) + b"]", "more than 64 arrays"),
        (nested(500_000), "more than 64 arrays"),
        (b"[" * 1_000_000, "more than 64 arrays"),
        (b'["x"' + b",[]" * 300_000 + b"]", "more than 64 arrays"),
        (b"[" + b",".join([b"[]"] * 300_000) + b',"never closed', "more than 64 arrays"),
        (b'["a\\\\"' + b",{}" * 100 + b"]", "more than 64 arrays"),  # an escaped backslash
    ],
)
def test_bodies_no_request_needs_are_refused(body, problem):
    assert problem in shape_problem(body)


def test_the_limits_are_parameters():
    assert shape_problem(nested(3), max_depth=2) == "body is nested more than 2 levels deep"
    assert (
        shape_problem(b"[[],[],[]]", max_containers=3) == "body has more than 3 arrays and objects"
    )
