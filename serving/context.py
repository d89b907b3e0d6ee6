"""The per-request context: the request id and the extra fields of its access-log line.

``ObservabilityMiddleware`` creates one :class:`RequestContext` per request and stores it once
in the ASGI scope; everything else reads it through :func:`context_of` (or the ``RequestCtx``
dependency in a route), never through unnamed keys.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

SCOPE_KEY = "inference.request_context"  # an extension key of the ASGI scope


@dataclass(slots=True)
class RequestContext:
    """What one request carries from the middleware to the routes and error handlers."""

    request_id: str
    log: dict[str, Any] = field(default_factory=dict)  # extra fields of the access-log line

    def attach(self, scope: MutableMapping[str, Any]) -> RequestContext:
        """Store this context in ``scope`` (once, by the middleware) and return it."""
        scope[SCOPE_KEY] = self
        return self


def context_of(scope: MutableMapping[str, Any]) -> RequestContext | None:
    """The request's context, or None when no ObservabilityMiddleware runs (stage 2)."""
    return scope.get(SCOPE_KEY)


def with_request_id(scope: MutableMapping[str, Any], body: dict) -> dict:
    """The one place an error body gets the request id (when the request has one)."""
    context = context_of(scope)
    if context is None or not context.request_id:
        return body
    return body | {"request_id": context.request_id}


# `async def`: FastAPI runs a plain `def` dependency in its thread pool (a hop per request).
async def request_context(request: Request) -> RequestContext:
    """FastAPI dependency: this request's context (set by ObservabilityMiddleware)."""
    context = context_of(request.scope)
    if context is None:
        raise RuntimeError("no RequestContext: is ObservabilityMiddleware installed?")
    return context


RequestCtx = Annotated[RequestContext, Depends(request_context)]
