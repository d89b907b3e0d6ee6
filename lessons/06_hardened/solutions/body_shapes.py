"""Lesson 6, exercise 1: which bodies does the shape check refuse before ``json.loads``?

    .venv/bin/python lessons/06_hardened/solutions/body_shapes.py

``serving.jsonbody.shape_problem`` counts a body's brackets (strings skipped) and refuses more
than 8 levels or more than 64 arrays and objects; everything else goes on to ``json.loads`` and
pydantic as before.
"""

from __future__ import annotations

from serving.jsonbody import shape_problem

BODIES: dict[str, bytes] = {
    "brackets inside the text": b'{"text": "great [film] {really} [[[[[[[[[[[[ :)"}',
    "a list inside the list": b'{"texts": [["a"]]}',
    "nine levels deep": b'{"texts": [[[[[[[["a"]]]]]]]]}',
    "seventy empty lists": b'{"texts": [' + b", ".join([b"[]"] * 70) + b"]}",
}


def answers() -> dict[str, str | None]:
    """Each body's refusal reason, or None when it goes on to be parsed."""
    return {name: shape_problem(body) for name, body in BODIES.items()}


if __name__ == "__main__":
    for name, problem in answers().items():
        print(f"{name:26} -> {problem or 'parsed (then pydantic decides)'}")
