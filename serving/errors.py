"""Error answers that carry the request id, and note the error in the access-log line."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


def note_error(request: Request, error_type: str, message: str) -> None:
    """Add the error to this request's access-log line (see ObservabilityMiddleware)."""
    fields = getattr(request.state, "log", None)
    if fields is not None:
        fields.update(error_type=error_type, error=message)


def summarize(errors: list[dict]) -> str:
    """``body.text: String should have at least 1 character; ...`` for a log line."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)


def with_request_id(request: Request, body: dict) -> dict:
    """Add the request id (set by ObservabilityMiddleware, when present) to an error body."""
    request_id = getattr(request.state, "request_id", None)
    return body if request_id is None else body | {"request_id": request_id}


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Like FastAPI's default, plus ``request_id``."""
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI answers 400 when a JSON body cannot even be decoded (e.g. b"\x00\x00\x00\x00"
        # is taken for UTF-32); to the client that is malformed JSON like any other: 422.
        problem = f"body is not valid JSON ({type(exc.__cause__).__name__})"
        note_error(request, "RequestValidationError", problem)
        detail = [{"type": "json_invalid", "loc": ["body"], "msg": problem}]
        return JSONResponse(with_request_id(request, {"detail": detail}), 422)
    note_error(request, type(exc).__name__, str(exc.detail))
    body = with_request_id(request, {"detail": exc.detail})
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with pydantic's list of problems (each names its field), plus ``request_id``.

    Unlike FastAPI's default handler it survives a body that is not valid UTF-8 (found by
    tests/test_fuzz.py: the default answers 500 when it echoes such bytes back).
    """
    errors = [dict(e) for e in exc.errors()]
    if "json" not in request.headers.get("content-type", ""):
        for error in errors:  # e.g. curl -d without -H: a form body, not a JSON object
            if tuple(error.get("loc", ())) == ("body",):
                error["msg"] += "; send the header Content-Type: application/json"
    note_error(request, "RequestValidationError", summarize(errors))
    detail = jsonable_encoder(errors, custom_encoder={bytes: _decode_lossy, Exception: str})
    return JSONResponse(with_request_id(request, {"detail": detail}), 422)


def _decode_lossy(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def install_error_handlers(app: FastAPI) -> None:
    """Use the handlers above for HTTP errors and request validation errors."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
