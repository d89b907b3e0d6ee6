"""FastAPI dependencies of the final stage: the server state, and the state only when ready."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.state import NotReadyError, ServerState


# The dependencies are `async def` although they never wait: FastAPI runs a plain `def`
# dependency in its thread pool, which costs a thread hop per request for an attribute lookup.
async def server_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (set by the lifespan)."""
    return request.app.state.server


async def ready_state(state: Annotated[ServerState, Depends(server_state)]) -> ServerState:
    """The state, or NotReadyError (503 with the reason) when the server cannot predict now."""
    return ready_now(state)


def ready_now(state: ServerState) -> ServerState:
    """``state``, or NotReadyError when the server cannot predict now."""
    reason = state.not_ready_reason()
    if reason is not None:
        raise NotReadyError(reason)
    return state


async def ready_request(request: Request) -> Request:
    """The request, once the server can predict (else NotReadyError: 503): ``Ready`` in one
    dependency instead of two, and the route reads the state and the request's context from the
    request itself (stage 10, lean). Still a dependency, so readiness is decided before the
    body is validated, as with ``Ready``."""
    ready_now(request.app.state.server)
    return request


State = Annotated[ServerState, Depends(server_state)]
Ready = Annotated[ServerState, Depends(ready_state)]  # 503 with the reason when not ready
ReadyRequest = Annotated[Request, Depends(ready_request)]  # the same 503, one dependency
