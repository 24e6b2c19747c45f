"""The one error envelope every route answers with, OpenAI-compatible in shape."""

from __future__ import annotations

from typing import Literal

from motorpool.types._base import Frozen


class ErrorBody(Frozen):
    """What went wrong: a stable ``code``, a human ``message`` and, when known, the fix."""

    code: str
    message: str
    type: Literal["invalid_request_error", "server_error"]
    """``invalid_request_error`` for 4xx (change the request), ``server_error`` for 5xx."""
    hint: str | None = None
    param: str | None = None
    """The request field at fault, for validation errors."""


class ErrorEnvelope(Frozen):
    """The body of every 4xx and 5xx response."""

    error: ErrorBody
