"""Error answers that carry the request id, and note the error in the access-log line."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from serving.context import context_of, with_request_id

# Error bodies and log lines never echo the input: each problem is its location and pydantic's
# message, clipped, and at most MAX_ERRORS of them, whatever the body holds (a 1 MB body of
# 90,000 unknown keys gets one small answer, cheap to build).
MAX_ERRORS = 10
MAX_PART_CHARS = 64
MAX_MSG_CHARS = 200
# Every repetition starts with a separator, so a text is matched one way only: the earlier
# form, ``(?:[\\/]?[\w.~-]+)*[\\/]``, split a long word without a slash after it in
# exponentially many ways (80 s for "...: probe 'An absolutely wonderful film' got negative");
# and a match starts only where a word starts, so a long word is scanned once, not per letter.
PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[\w.~-]*(?:[\\/][\w.~-]*)+")


class InvalidBodyError(HTTPException):
    """A body refused as invalid JSON, with the ``problem`` to report: answered 422 like any
    malformed JSON (serving/jsonbody.py refuses bodies of the wrong shape with a subclass)."""

    def __init__(self, problem: str) -> None:
        super().__init__(422, problem)
        self.problem = problem


def note_error(request: Request, error_type: str, message: str) -> None:
    """Add the error to this request's access-log line (see ObservabilityMiddleware)."""
    context = context_of(request.scope)
    if context is not None:
        context.log.update(error_type=error_type, error=message)


def clip(part: object, limit: int = MAX_PART_CHARS) -> object:
    """A location part or message as safe to return and log: short, valid UTF-8."""
    if isinstance(part, int):
        return part
    text = str(part)
    if len(text) > limit:
        text = text[:limit] + "..."
    # A lone surrogate ("\\ud800" in the JSON) cannot be encoded: escape it instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def public_errors(errors: list[dict]) -> list[dict]:
    """The first MAX_ERRORS problems as ``{type, loc, msg}``, without the input."""
    return [
        {
            "type": e["type"],
            "loc": [clip(p) for p in e["loc"]],
            "msg": clip(e["msg"], MAX_MSG_CHARS),
        }
        for e in errors[:MAX_ERRORS]
    ]


def summarize(errors: list[dict]) -> str:
    """``body.text: String should have at least 1 character; ...`` for a log line (bounded)."""
    shown = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in public_errors(errors))
    more = len(errors) - MAX_ERRORS
    return f"{shown}; and {more} more" if more > 0 else shown


def without_paths(message: str) -> str:
    """``message`` with file-system paths replaced by ``<path>`` (for public error bodies)."""
    return PATH.sub("<path>", message)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Like FastAPI's default, plus ``request_id``."""
    if isinstance(exc.__cause__, ClientDisconnect):  # nobody left to answer
        return JSONResponse({"detail": "client disconnected"}, 400)
    if isinstance(exc, InvalidBodyError) or (
        exc.status_code == 400 and isinstance(exc.__cause__, RecursionError)
    ):
        # Refused before parsing (serving/jsonbody.py), or json.loads gave up near 1,000 levels
        problem = exc.problem if isinstance(exc, InvalidBodyError) else "body is nested too deeply"
        note_error(request, "RequestValidationError", problem)
        detail = [{"type": "json_invalid", "loc": ["body"], "msg": problem}]
        return JSONResponse(with_request_id(request.scope, {"detail": detail}), 422)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI answers 400 when a JSON body cannot even be decoded (e.g. b"\x00\x00\x00\x00"
        # is taken for UTF-32); to the client that is malformed JSON like any other: 422.
        problem = f"body is not valid JSON ({type(exc.__cause__).__name__})"
        note_error(request, "RequestValidationError", problem)
        detail = [{"type": "json_invalid", "loc": ["body"], "msg": problem}]
        return JSONResponse(with_request_id(request.scope, {"detail": detail}), 422)
    note_error(request, type(exc).__name__, str(exc.detail))
    body = with_request_id(request.scope, {"detail": exc.detail})
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with the location and message of each problem (at most MAX_ERRORS), plus
    ``request_id``; never the rejected input (FastAPI's default echoes it, and answers 500 when
    it holds NaN, bytes or a lone surrogate)."""
    errors = [dict(e) for e in exc.errors()]
    if "json" not in request.headers.get("content-type", ""):
        for error in errors:  # e.g. curl -d without -H: a form body, not a JSON object
            if tuple(error.get("loc", ())) == ("body",):
                error["msg"] += "; send the header Content-Type: application/json"
    note_error(request, "RequestValidationError", summarize(errors))
    body: dict = {"detail": public_errors(errors)}
    if len(errors) > MAX_ERRORS:
        body["error_count"] = len(errors)
    return JSONResponse(with_request_id(request.scope, body), 422)


def install_error_handlers(app: FastAPI) -> None:
    """Use the handlers above for HTTP errors and request validation errors."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
