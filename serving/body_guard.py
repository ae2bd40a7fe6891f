"""An ASGI middleware that checks request bodies before the app sees them.

Two checks, each answered with a 4xx and a JSON message instead of work or a 500:

- **size**: a POST body over ``max_bytes`` is a 413, decided from the
  ``Content-Length`` header when there is one and otherwise while the body
  streams in, so an oversized body is never buffered whole. The largest valid
  requests (1000 events, 2000 candidate ids) are a fraction of the limit.
- **JSON**: BentoML validates a pydantic body (``/rank``) with pydantic's JSON
  parser, which reports malformed JSON as a 400; a body typed as a list
  (``/events``) is decoded earlier, and a decoding error there surfaced as a
  500. For ``json_paths`` the guard checks that the body parses.

A body that passes is replayed to the app unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 4 << 20
"""4 MiB: the largest valid /events batch is 1000 events with 128-character ids,
which JSON may escape to 12 bytes a character (a surrogate pair): ~1.8 MB."""


async def _reject(send: Send, status: int, message: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestBodyGuard:
    """413 for POST bodies over ``max_bytes``; 400 for non-JSON bodies to ``json_paths``."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        json_paths: tuple[str, ...] = ("/events",),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.json_paths = json_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        too_large = f"request body is larger than {self.max_bytes} bytes"
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _reject(send, 413, too_large)
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _reject(send, 413, too_large)
                return
            if not message.get("more_body", False):
                break
        if scope["path"] in self.json_paths:
            try:
                json.loads(b"".join(m.get("body", b"") for m in messages))
            except (ValueError, UnicodeDecodeError) as exc:
                await _reject(send, 400, f"request body is not valid JSON: {exc}")
                return
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)
