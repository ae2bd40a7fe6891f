"""Issue 17 (items 2 and 5) below HTTP: the event window, conflicting resends,
the JSON nesting limit, multipart without a boundary, short error bodies and
one WARNING line per refused request."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from pydantic import TypeAdapter, ValidationError

from core.actions import load_actions
from serving.body_guard import RequestBodyGuard, json_depth, shorten
from serving.events import EventConflict, EventLog, EventRecord
from serving.refusals import ClientErrorLogFilter, EventWindow
from serving.schemas import EventBatch
from serving.service import ServingConfig

pytestmark = pytest.mark.unit

ADAPTER = TypeAdapter(EventBatch)
WORLD_END = datetime(2026, 1, 15, tzinfo=UTC)


def _events(*times: str) -> list[Any]:
    return ADAPTER.validate_python(
        [
            {"event_id": f"e{i}", "user_id": 1, "tweet_id": 2, "action": "like", "timestamp": t}
            for i, t in enumerate(times)
        ]
    )


def _window() -> EventWindow:
    return EventWindow(timedelta(minutes=5), timedelta(days=7), [WORLD_END])


def test_times_near_the_wall_clock_or_the_world_clock_pass() -> None:
    now = datetime.now(UTC)
    _window().check(
        _events(
            now.isoformat(),
            (now + timedelta(minutes=4)).isoformat(),
            (now - timedelta(days=6)).isoformat(),
            WORLD_END.isoformat(),
            (WORLD_END - timedelta(days=6)).isoformat(),
        )
    )


@pytest.mark.parametrize(
    ("timestamp", "words"),
    [
        ("2200-01-01T00:00:00Z", "past the server's clock"),
        ("2262-04-12T00:00:00Z", "past the server's clock"),
        ("9999-12-31T23:59:59Z", "past the server's clock"),
        ("1970-01-01T00:00:00Z", "before the server's clock"),
    ],
)
def test_times_outside_every_window_are_refused_naming_the_field(
    timestamp: str, words: str
) -> None:
    batch = _events(WORLD_END.isoformat(), timestamp)
    with pytest.raises(ValidationError) as raised:
        _window().check(batch)
    (error,) = raised.value.errors(include_input=False)
    assert error["loc"] == (1, "timestamp")
    assert words in error["msg"]


def test_the_world_clock_can_be_switched_off(tmp_path: Path) -> None:
    config = ServingConfig.from_env(
        {"FEEDRANK_WORKSPACE": str(tmp_path), "FEEDRANK_EVENT_WORLD_CLOCK": "false"}
    )
    assert config.event_window().fixed_clocks == ()
    with pytest.raises(ValueError, match="FEEDRANK_EVENT_MAX_AGE_DAYS"):
        ServingConfig.from_env({"FEEDRANK_EVENT_MAX_AGE_DAYS": "-1"})


def test_action_is_an_enum_and_a_long_bad_action_is_not_echoed() -> None:
    schema = ADAPTER.json_schema()
    enum = schema["$defs"]["Event"]["properties"]["action"]["enum"]
    assert enum[0] == "impression" and set(load_actions().names) <= set(enum)
    bad = {
        "event_id": "e",
        "user_id": 1,
        "tweet_id": 2,
        "action": "z" * 1_000_000,
        "timestamp": WORLD_END.isoformat(),
    }
    with pytest.raises(ValidationError) as raised:
        ADAPTER.validate_python([bad])
    message = json.dumps(raised.value.errors(include_input=False, include_context=False))
    assert "unknown action" in message and len(message) < 500


def _record(event_id: str, action: str = "like", ts_us: int = 1_000) -> EventRecord:
    return EventRecord(event_id, 1, 7, action, None, ts_us)


def _seed(tweets: list[int]) -> dict[int, dict[str, int]]:
    return {t: {} for t in tweets}


def test_an_id_resent_with_other_content_is_a_conflict_and_nothing_is_logged(
    tmp_path: Path,
) -> None:
    log = EventLog(tmp_path / "events.db", load_actions())
    log.append([_record("a")], _seed)
    assert log.append([_record("a")], _seed).duplicates == 1  # the same content: a retry
    with pytest.raises(EventConflict, match="1 event_id"):
        log.append([_record("b"), _record("a", action="hide")], _seed)
    with pytest.raises(EventConflict):
        log.append([_record("c"), _record("c", ts_us=2_000)], _seed)  # inside one batch
    assert log.count() == 1  # neither "b" nor "c" was logged
    log.close()


def test_a_conflict_message_shows_short_prefixes_of_a_few_ids() -> None:
    message = str(EventConflict(["x" * 128] * 9))
    assert "9 event_id" in message and "and 4 more" in message and len(message) < 300


def test_json_depth_and_shorten() -> None:
    assert json_depth([{"a": [1, {"b": []}]}]) == 5
    assert json_depth(1) == 0
    assert shorten({"k" * 100: ["v" * 100, 3]}) == {
        f"{'k' * 64}... (100 chars)": [f"{'v' * 64}... (100 chars)", 3]
    }


class _Echo:
    """The wrapped app: answers ``status`` with ``body``."""

    def __init__(self, status: int = 200, body: bytes = b"ok") -> None:
        self.status, self.body, self.called = status, body, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        await receive()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": self.body})


def _post(app: _Echo, path: str, body: bytes, content_type: bytes) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", content_type)],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(RequestBodyGuard(app)(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_deeply_nested_json_is_a_400_before_the_app() -> None:
    for body in (b"[" * 5000, b"[" * 5000 + b"]" * 5000, b"[" * 40 + b"]" * 40):
        app = _Echo()
        status, answer = _post(app, "/events", body, b"application/json")
        assert status == 400 and "nests deeper" in json.loads(answer)["error"]
        assert not app.called


@pytest.mark.parametrize("content_type", [b"multipart/form-data", b"multipart/form-data; a=b"])
def test_multipart_without_a_boundary_is_a_400(content_type: bytes) -> None:
    app = _Echo()
    status, answer = _post(app, "/rank", b"--x--", content_type)
    assert status == 400 and "boundary" in json.loads(answer)["error"]
    assert not app.called
    fine = _Echo()
    assert _post(fine, "/rank", b"", b"multipart/form-data; boundary=x")[0] == 200


def test_a_4xx_answer_of_the_app_is_shortened_and_unwrapped() -> None:
    long_loc = json.dumps({"detail": [{"loc": ["q" * 10_000], "msg": "extra"}]}).encode()
    status, answer = _post(_Echo(400, long_loc), "/rank", b"{}", b"application/json")
    assert status == 400 and len(answer) < 300
    wrapped = json.dumps([{"error": "conflict"}]).encode()
    assert json.loads(_post(_Echo(409, wrapped), "/events", b"[]", b"application/json")[1]) == {
        "error": "conflict"
    }
    big = b'{"x": "' + b"y" * 5000 + b'"}'
    assert _post(_Echo(200, big), "/rank", b"{}", b"application/json")[1] == big


def _logged(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:  # pylint: disable=broad-exception-caught  # captured for the record
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/events", "POST"), None
        )
        record.exc_info = sys.exc_info()
    ClientErrorLogFilter().filter(record)
    return record


def test_4xx_records_become_one_warning_line_and_5xx_keep_their_traceback() -> None:
    try:
        ADAPTER.validate_python([{"event_id": "e"}])
    except ValidationError as exc:
        record = _logged(exc)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "\n" not in record.getMessage() and "400 ValidationError" in record.getMessage()
    conflict = _logged(BentoMLException("taken", error_code=HTTPStatus.CONFLICT))
    assert conflict.levelno == logging.WARNING and "409" in conflict.getMessage()
    for server_error in (ServiceUnavailable("down"), RuntimeError("bug")):
        kept = _logged(server_error)
        assert kept.levelno == logging.ERROR and kept.exc_info is not None
