"""Reliability of the served API: fuzzing from its own OpenAPI document, no lost events.

The scenarios live in ``load/reliability.py`` (which also runs them at
scale, with an online-store outage); here they run small against the
session's ``scratch_url``: ``bentoml serve`` (2 workers) on a copy of the
served workspace, with the harness's settings (events for unknown ids
accepted). Not the session's ``server_url``: the fuzzer's accepted events
would change what other modules' tests read. The fault-injection tests at
the end start servers of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest

from core.actions import load_actions
from core.feast_store import Workspace, open_store
from load import reliability as reliability_suite
from load.fuzzing import EventTargets, has_message
from load.harness import auth_headers
from serving.body_guard import MAX_BODY_BYTES
from serving.events import counter_names

pytestmark = [pytest.mark.integration]

FUZZ_EXAMPLES_PER_ROUTE = 80
EVENTS = 400


@pytest.fixture(scope="module", name="reliability")
def _reliability_module() -> ModuleType:
    """The fault-injection suite; its fuzzing needs schemathesis (a dev dependency)."""
    pytest.importorskip("schemathesis")
    return reliability_suite


@pytest.fixture(scope="module", name="url")
def _scratch_server(scratch_url: str) -> str:
    """The session's ``bentoml serve`` on the scratch workspace (a copy of the served
    one): the fuzzer's accepted events change real users' feeds and tweets' counters,
    which the tests on the served workspace must not see."""
    return scratch_url


@pytest.fixture(scope="module", name="auth")
def _auth(scratch_workspace: Workspace) -> dict[str, str]:
    """The harness key's Authorization header (every scope)."""
    return auth_headers(scratch_workspace)


def test_has_message_tells_empty_bodies_apart() -> None:
    assert has_message(b'{"error": "user_id: must be >= 0"}')
    assert has_message(b"Bad Request")
    assert not has_message(b"")
    assert not has_message(b"  \n")
    assert not has_message(b'{"error": ""}')
    assert not has_message(b"{}")


def test_duplicate_batches_are_planned_as_asked(reliability: ModuleType) -> None:
    batches, expected = reliability.make_batches(
        500, prefix="p-", now_iso="2026-01-01T00:00:00+00:00", seed=3
    )
    ids = [e["event_id"] for b in batches for e in b]
    assert len(set(ids)) == 500
    assert len(ids) == 600  # 20% resent
    assert sum(sum(c.values()) for c in expected.values()) == 500
    assert all(len(b) <= 40 for b in batches)


@pytest.mark.slow
def test_fuzzing_reaches_accepted_events_and_every_answer_is_declared(
    url: str, auth: dict[str, str], scratch_workspace: Workspace, reliability: ModuleType
) -> None:
    report = reliability.fuzz(
        url,
        FUZZ_EXAMPLES_PER_ROUTE,
        seed=7,
        headers=auth,
        targets=EventTargets.of(scratch_workspace),
    )
    summary = report.summary()
    assert report.cases >= 2 * FUZZ_EXAMPLES_PER_ROUTE, summary
    assert {"POST /rank", "POST /events", "GET /metrics"} <= set(report.by_operation), summary
    assert not report.transport_errors, summary
    assert not report.silent_4xx, summary
    assert report.count_5xx == 0, report.server_errors[:3]
    # The document tells the truth: every status answered is declared for its
    # operation, every body, content type and header matches it.
    assert report.undeclared_statuses() == {}, report.undeclared[:3]
    assert not report.nonconforming, report.nonconforming[:3]
    events = report.by_operation["POST /events"]
    assert any(400 <= s < 500 for s in events), summary  # invalid batches were sent
    assert events[200] > 0 and report.events_accepted > 0, summary  # and accepted ones
    assert report.by_operation["POST /rank"][200] > 0, summary


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/rank", {"user_id": 1, "candidate_tweet_ids": [2**65]}),
        ("/rank", {"user_id": 2**65}),
        (
            "/events",
            [
                {
                    "event_id": "beyond-int64",
                    "user_id": 1,
                    "tweet_id": 2**65,
                    "action": "impression",
                    "timestamp": "2026-01-01T00:00:00+00:00",
                }
            ],
        ),
        ("/events", b"\x00"),
    ],
    ids=["rank-candidate", "rank-user", "events-tweet", "events-not-json"],
)
def test_ids_beyond_int64_and_non_json_bodies_are_a_400(
    url: str, auth: dict[str, str], route: str, body: object
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        f"{url}{route}",
        content=content,
        headers={**auth, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", ["/rank", "/events"])
def test_a_body_over_the_size_limit_is_a_413_with_a_message(
    url: str, auth: dict[str, str], route: str, chunked: bool
) -> None:
    body = b"[" + b" " * MAX_BODY_BYTES + b"]"
    content: bytes | Iterator[bytes] = (
        iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    )
    response = httpx.post(
        f"{url}{route}",
        content=content,
        headers={**auth, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert "larger than" in response.json()["error"]
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


@pytest.mark.slow
def test_concurrent_retried_events_are_logged_and_counted_once(
    url: str,
    auth: dict[str, str],
    scratch_workspace: Workspace,
    world_end_iso: str,
    reliability: ModuleType,
) -> None:
    report = reliability.send_events(url, EVENTS, threads=8, now_iso=world_end_iso, headers=auth)
    assert report.failed_batches == 0
    assert report.sent == round(EVENTS * 1.2)
    assert report.accepted == EVENTS
    assert report.duplicates == report.sent - EVENTS

    db = scratch_workspace.data / "serving" / "events.db"
    assert reliability.logged_events(db, report.prefix) == (EVENTS, EVENTS)
    tweets = sorted(report.per_tweet)
    counters = reliability.logged_counters(db, tweets)
    names = counter_names(load_actions())
    online = (
        open_store(scratch_workspace)
        .get_online_features(  # what the pushes left in Feast
            features=[f"tweet_engagement:{n}" for n in names],
            entity_rows=[{"tweet_id": t} for t in tweets],
        )
        .to_dict()
    )
    for row, tweet in enumerate(online["tweet_id"]):
        for name in names:
            action = "impression" if name == "tweet_impressions" else name[6:-6]
            expected = report.per_tweet[tweet].get(action, 0)
            assert counters[tweet].get(name, 0) == expected, (tweet, name)
            assert (online[name][row] or 0) == expected, (tweet, name)

    # Everything resent once more, as it was sent: all duplicates, nothing new.
    # (A resent id with other content is a 409, issue 17.)
    batches, _ = reliability.make_batches(EVENTS, prefix=report.prefix, now_iso=world_end_iso)
    sent = {e["event_id"]: e for batch in batches for e in batch}
    again = httpx.post(
        f"{url}/events",
        json=[sent[f"{report.prefix}{i}"] for i in range(0, EVENTS, 40)],
        headers=auth,
        timeout=30,
    ).json()
    assert again["accepted"] == 0 and again["duplicates"] == EVENTS // 40


@pytest.mark.slow
def test_a_slow_online_store_trips_the_deadline_and_the_feed_falls_back(
    served_workspace: Workspace,
    reliability: ModuleType,
    redis_service: None,
    postgres_service: None,
) -> None:
    found = reliability.slow_store(served_workspace, requests_per_phase=15)
    phases = found["phases"]
    assert found["slow_store_5xx"] == 0, phases
    # 40 ms per reply, 30 ms deadline: the check between feature views fires.
    slow, stalled = phases["slow"], phases["stalled"]
    assert slow["degraded"] == slow["requests"] - slow["empty"] > 0, phases
    assert set(slow["reasons"]) == {"online store slower than 30 ms"}, phases
    # 1 s per reply: the reader's 50 ms socket timeout fails the read.
    assert stalled["degraded"] == stalled["requests"] - stalled["empty"] > 0, phases
    assert set(stalled["reasons"]) == {"online store unavailable"}, phases
    # Once the delay is gone the feed is ranked again.
    assert phases["recovered"]["degraded"] < phases["recovered"]["requests"] / 2, phases


@pytest.mark.slow
def test_redis_outage_then_an_empty_restart_never_serves_a_silent_empty_feed(
    served_workspace: Workspace,
    reliability: ModuleType,
    redis_service: None,
    postgres_service: None,
) -> None:
    found = reliability.outage(served_workspace, requests_per_phase=10)
    phases = found["phases"]
    assert found["outage_5xx"] == 0, phases
    assert found["empty_undegraded_after_restart"] == 0, phases
    # Redis dead: every answer the fallback, none hanging on the store.
    during = phases["during"]
    assert during["degraded"] == during["requests"], phases
    assert set(during["reasons"]) <= {"candidate store unavailable"}, phases
    # Restarted empty: degraded with the reason that names what is missing, until
    # the rebuild writes the load marker (its last step; answers after it are ranked).
    assert phases["empty"]["degraded"] > 0, phases
    assert set(phases["empty"]["reasons"]) <= {
        "candidate store empty (not loaded)",
        "candidate store unavailable",
    }, phases
    assert "candidate store empty (not loaded)" in phases["empty"]["reasons"], phases
    # `feedrank serve-state rebuild` brought it back: ranked again.
    assert found["recovery_seconds"] is not None, found
    assert phases["after"]["degraded"] < phases["after"]["requests"] / 2, phases


@pytest.mark.slow
def test_a_worker_killed_under_load_loses_no_events_and_is_replaced(
    served_workspace: Workspace, reliability: ModuleType
) -> None:
    found = reliability.worker_kill(served_workspace, n_events=1500)
    assert found["workers_before"] == 2
    assert found["killed_under_load"], found
    assert found["events_failed_batches"] == 0, found
    assert found["events_unique_in_log"] == found["events_rows_in_log"] == 1500, found
    assert found["worker_respawned"] and found["workers_after"] == 2, found
    assert found["ready_after"], found
