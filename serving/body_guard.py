"""An ASGI middleware: a JSON endpoint given a body that is not JSON answers 400, not 500.

BentoML validates a pydantic body (``/rank``) with pydantic's JSON parser,
which reports malformed JSON as a 400; a body typed as a list (``/events``)
is decoded earlier, and a decoding error there surfaced as a 500. This
guard buffers the body of JSON requests to the given paths, checks it parses,
and replays it to the app unchanged.
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


class JsonBodyGuard:
    """Reject POST bodies to ``paths`` that are not valid JSON, with a 400 and a message."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...] = ("/events",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            error = json.dumps({"error": f"request body is not valid JSON: {exc}"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": error})
            return
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)
