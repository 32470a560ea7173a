"""The error every wire format raises from validation: a status and a ready error body.

All three formats (OpenAI, Anthropic, Gemini) nest a human-readable ``message`` under ``error``,
so one exception type carries any of them from deep inside request parsing up to the request
flow, which answers with the body as it is.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError"]


class ApiError(Exception):
    """An error response of any wire format, raised from request parsing and caught by the app."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(payload["error"]["message"])
        self.status = status
        self.payload = payload
