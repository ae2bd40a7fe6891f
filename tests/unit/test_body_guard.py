"""The request body guard: size limit (413) and JSON check (400), before the app runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from serving.body_guard import MAX_BODY_BYTES, RequestBodyGuard
from serving.schemas import MAX_CANDIDATES, MAX_EVENTS


class _App:
    """The wrapped app: records the body it was given and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(
    path: str, chunks: list[bytes], *, declared: int | None = None, max_bytes: int = 64
) -> tuple[int, bytes, _App, int]:
    """POST ``chunks`` through the guard; (status, body, app, chunks read)."""
    app = _App()
    guard = RequestBodyGuard(app, max_bytes=max_bytes)
    headers = [(b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return pending.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], app, read


def test_a_body_within_the_limit_reaches_the_app_unchanged() -> None:
    status, body, app, _ = _call("/events", [b'[{"a":', b" 1}]"], declared=10)
    assert (status, body) == (200, b"ok")
    assert app.bodies == [b'[{"a": 1}]']


def test_a_declared_oversized_body_is_refused_before_it_is_read() -> None:
    status, body, app, read = _call("/rank", [b"{}"], declared=65)
    assert status == 413
    assert "larger than 64 bytes" in json.loads(body)["error"]
    assert read == 0 and not app.bodies


def test_a_chunked_oversized_body_is_refused_once_it_passes_the_limit() -> None:
    chunks = [b"[" + b" " * 40, b" " * 40, b" " * 40, b"]"]
    status, body, app, read = _call("/rank", chunks)
    assert status == 413 and json.loads(body)["error"]
    assert read == 2 and not app.bodies  # stopped at the chunk that crossed the limit


def test_a_body_of_exactly_the_limit_passes() -> None:
    status, _, app, _ = _call("/rank", [b"[" + b" " * 62 + b"]"], declared=64)
    assert status == 200 and len(app.bodies[0]) == 64


def test_only_json_paths_are_parsed() -> None:
    status, _, app, _ = _call("/rank", [b"\x00"])  # /rank: pydantic's own parser answers
    assert status == 200 and app.bodies == [b"\x00"]


def test_a_non_json_body_to_a_json_path_is_a_400_with_the_parse_error() -> None:
    status, body, app, _ = _call("/events", [b"\x00"])
    assert status == 400
    assert json.loads(body)["error"].startswith("request body is not valid JSON")
    assert not app.bodies


def test_the_largest_valid_requests_fit_within_the_limit() -> None:
    events = [
        {
            "event_id": "\U0001f600" * 128,  # JSON escapes each as a 12-byte surrogate pair
            "user_id": 2**63 - 1,
            "tweet_id": 2**63 - 1,
            "action": "long_dwell",
            "dwell_seconds": 12345.678901234,
            "timestamp": "2026-11-22T11:19:49.123456+00:00",
        }
    ] * MAX_EVENTS
    rank = {"user_id": 2**63 - 1, "candidate_tweet_ids": [2**63 - 1] * MAX_CANDIDATES}
    for request in (events, rank):
        assert len(json.dumps(request, indent=2).encode()) < MAX_BODY_BYTES


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_other_methods_pass_through(method: str) -> None:
    app = _App()
    guard = RequestBodyGuard(app, max_bytes=1)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"too long", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/rank", "headers": []}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 200
