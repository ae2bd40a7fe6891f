"""An ASGI middleware that checks request bodies before the app sees them.

Checks, each answered with a 4xx and a JSON message instead of work or a 500:

- **size**: a POST body over ``max_bytes`` is a 413, decided from the
  ``Content-Length`` header when there is one and otherwise while the body
  streams in, so an oversized body is never buffered whole. The largest valid
  requests (1000 events, 2000 candidate ids) are a fraction of the limit.
- **JSON**: BentoML validates a pydantic body (``/rank``) with pydantic's JSON
  parser, which reports malformed JSON as a 400; a body typed as a list
  (``/events``) is decoded earlier, and a decoding error there surfaced as a
  500. For ``json_paths`` the guard checks that the body parses and nests
  at most ``max_depth`` deep: 5,000 nested ``[`` made Python's parser
  recurse into a 500.
- **multipart**: a ``multipart/form-data`` body without a boundary made
  Starlette's form parser fail with a 500; it is a 400.

A body that passes is replayed to the app unchanged. On the way out, a 4xx
JSON answer of the app is shortened: any string in it longer than
``ECHO_CHARS`` keeps a prefix (pydantic's error list names a rejected field,
and a field name can be a megabyte long), and BentoML's one-element list
around an exception's ``{"error": ...}`` is unwrapped to the object.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from python_multipart.multipart import parse_options_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 4 << 20
"""4 MiB: the largest valid /events batch is 1000 events with 128-character ids,
which JSON may escape to 12 bytes a character (a surrogate pair): ~1.8 MB."""

MAX_JSON_DEPTH = 32
"""Nesting limit of a JSON body: valid requests nest two deep (a list of objects)."""
ECHO_CHARS = 64
"""The longest string a 4xx answer repeats whole; longer ones keep this prefix."""


def json_depth(value: Any) -> int:
    """How deep a parsed JSON value nests lists and objects (a scalar: 0), without recursion."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def shorten(value: Any, limit: int = ECHO_CHARS) -> Any:
    """``value`` with every string longer than ``limit`` cut to a prefix and a marker."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} chars)"
    if isinstance(value, list):
        return [shorten(v, limit) for v in value]
    if isinstance(value, dict):
        return {shorten(k, limit): shorten(v, limit) for k, v in value.items()}
    return value


async def _reject(send: Send, status: int, message: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})


def _headers(scope: Scope) -> tuple[int | None, bytes]:
    """The declared ``Content-Length`` (None: absent or not a number) and ``Content-Type``."""
    length, content_type = None, b""
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"content-type":
            content_type = value
    return length, content_type


def _multipart_problem(content_type: bytes) -> str | None:
    """Why a ``multipart/form-data`` content type cannot be parsed (None: it can or is not one)."""
    if b"multipart" not in content_type.lower():
        return None
    kind, params = parse_options_header(content_type)
    if kind.lower() == b"multipart/form-data" and not params.get(b"boundary"):
        return "multipart/form-data without a boundary"
    return None


def _shortened_errors(send: Send) -> Send:
    """``send`` with 4xx JSON bodies shortened (:func:`shorten`); other answers pass as they are."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        try:
            answer = json.loads(body)
            if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict):
                answer = answer[0]  # BentoML wraps an exception's {"error": ...} in a list
            body = json.dumps(shorten(answer)).encode()
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = body[: ECHO_CHARS * 16]
        headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


class RequestBodyGuard:
    """413 for POST bodies over ``max_bytes``; 400 for non-JSON or too deeply nested
    bodies to ``json_paths`` and for multipart bodies without a boundary."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = MAX_BODY_BYTES,
        json_paths: tuple[str, ...] = ("/events",),
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.json_paths = json_paths
        self.max_depth = max_depth

    def _json_problem(self, body: bytes) -> str | None:
        """Why ``body`` is not acceptable JSON (None: it is)."""
        try:
            parsed = json.loads(body)
        except RecursionError:
            return f"request body nests deeper than {self.max_depth}"
        except (ValueError, UnicodeDecodeError) as exc:
            return f"request body is not valid JSON: {exc}"[:200]
        if json_depth(parsed) > self.max_depth:
            return f"request body nests deeper than {self.max_depth}"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        too_large = f"request body is larger than {self.max_bytes} bytes"
        declared, content_type = _headers(scope)
        if declared is not None and declared > self.max_bytes:
            await _reject(send, 413, too_large)
            return
        problem = _multipart_problem(content_type)
        if problem is not None:
            await _reject(send, 400, problem)
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
            problem = self._json_problem(b"".join(m.get("body", b"") for m in messages))
            if problem is not None:
                await _reject(send, 400, problem)
                return
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, _shortened_errors(send))
