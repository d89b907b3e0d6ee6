"""JSON bodies checked for shape before they are parsed: nesting depth and container count.

What a body costs to parse is not its size but what it builds: 1 MB of ``[[[...]]]`` or of
``[[],[],...]`` makes Python's ``json`` module build half a million lists (and the garbage
collector walk them), 100-500 ms of event loop, where 1 MB of texts costs about 1 ms. A
request of this app needs at most two containers (``{"texts": [...]}``), two levels deep, so
the body's brackets are counted first, at C speed, and a body with more nesting or containers
than any request could need is refused (422) before ``json.loads`` sees it.

Used through :class:`CheckedJSONRoute` (FastAPI's documented way to change how a route reads
its request): FastAPI calls ``request.json()``, which checks, then parses as before.

Before any of that, :func:`body_limits` sizes each prediction route's body limit (enforced by
``serving.limits.RouteBodyLimitMiddleware``) to what its largest valid request can need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from serving.errors import InvalidBodyError

# Generous next to what a request needs (2 and 2), so a client's mistake such as
# {"texts": [["a"]]} still gets pydantic's message naming the field.
MAX_JSON_DEPTH = 8
MAX_JSON_CONTAINERS = 64

# A JSON string, escapes included (the unrolled form runs without backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


# The most bytes one character can take in a JSON string: a character outside the BMP escaped
# as a surrogate pair, "\ud83d\ude00" (what json.dumps sends by default, ensure_ascii).
JSON_BYTES_PER_CHAR = 12
JSON_ITEM_OVERHEAD = 16  # quotes, a comma, white space around one text
JSON_BODY_OVERHEAD = 1_024  # braces, the key, generous white space


def body_limits(max_text_chars: int, max_batch_items: int) -> tuple[int, int]:
    """``(predict, batch)``: the largest body a valid ``/predict`` and ``/predict/batch``
    request can need, every character at its worst JSON escape (10,000 characters: 121,040
    bytes, about an eighth of the default 1 MB). Anything larger cannot be valid, so it is
    refused (413) before it costs any parsing."""
    text = max_text_chars * JSON_BYTES_PER_CHAR + JSON_ITEM_OVERHEAD
    return text + JSON_BODY_OVERHEAD, text * max_batch_items + JSON_BODY_OVERHEAD


class BodyShapeError(InvalidBodyError):
    """A JSON body nested or branched beyond what any request needs; answered as 422
    (serving/errors.py, the same answer as a body too deep for ``json.loads`` itself)."""


def shape_problem(
    body: bytes, max_depth: int = MAX_JSON_DEPTH, max_containers: int = MAX_JSON_CONTAINERS
) -> str | None:
    """Why ``body`` is refused before parsing, or None.

    Brackets inside strings do not count. The answer is exact for valid JSON; for a malformed
    body it only has to be safe: what it lets through, ``json.loads`` rejects after building
    at most ``max_containers`` containers.
    """
    containers = body.count(b"[") + body.count(b"{")  # an upper bound: strings count too
    if containers <= min(max_depth, max_containers):
        return None  # every request of this app: two brackets, decided in two passes
    outside = body
    if b'"' in body:  # brackets inside strings do not count: drop the strings
        outside = _STRING.sub(b"", body)
        # A quote left over opens a string that never ends: the JSON is invalid from there
        # on, and only what comes before it can cost anything to parse.
        outside = outside.partition(b'"')[0]
        containers = outside.count(b"[") + outside.count(b"{")
    if containers > max_containers:
        return f"body has more than {max_containers} arrays and objects"
    brackets = outside.translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:  # at most 2 * max_containers + 1 steps: it stops below 0
        depth += 1 if byte in b"[{" else -1
        if depth > max_depth:
            return f"body is nested more than {max_depth} levels deep"
        if depth < 0:  # a closing bracket too many: json.loads rejects it cheaply
            break
    return None


class CheckedJSONRequest(Request):
    """A request whose ``json()`` refuses a body of the wrong shape before parsing it."""

    async def json(self) -> Any:
        """The parsed body, or :class:`BodyShapeError`."""
        if not hasattr(self, "_json"):
            body = await self.body()
            problem = shape_problem(body)
            if problem is not None:
                raise BodyShapeError(problem)
            self._json = json.loads(body)
        return self._json


class CheckedJSONRoute(APIRoute):
    """An ``APIRoute`` whose handler reads JSON through :class:`CheckedJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`CheckedJSONRequest`."""
        handler = super().get_route_handler()
        if self.body_field is None:  # GET /health and the like: no body to check
            return handler

        async def checked(request: Request) -> Response:
            return await handler(CheckedJSONRequest(request.scope, request.receive))

        return checked
