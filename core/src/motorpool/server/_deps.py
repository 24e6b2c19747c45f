"""FastAPI dependencies: the typed accessors routes use to reach the application state.

They are coroutines although nothing in them waits: FastAPI runs a plain function
dependency on its thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Header, Request
from starlette.requests import HTTPConnection

from motorpool.server._handler import AppHandler
from motorpool.server._security import bearer_token, check_key


async def get_handler(connection: HTTPConnection) -> AppHandler:
    """The application handler of the app serving this request or socket."""
    return cast("AppHandler", connection.app.state.handler)


async def get_request_id(request: Request) -> str:
    """The id the request-log middleware gave this request (``X-Request-ID``)."""
    return cast("str", request.state.request_id)


async def require_key(
    handler: Annotated[AppHandler, Depends(get_handler)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Bearer-token auth, when an API key is set."""
    check_key(handler.settings, bearer_token(authorization))


Handler = Annotated[AppHandler, Depends(get_handler)]
RequestId = Annotated[str, Depends(get_request_id)]
