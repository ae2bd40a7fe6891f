"""Who may call a real ``bentoml serve``: API keys, scopes, bound users, rate limits (issue 17).

The rules themselves are unit-tested in tests/unit/test_api_keys.py; here they
hold over HTTP, with the server's own key file re-read while it runs.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from core.feast_store import Workspace
from load.attacks import run_attacks
from load.harness import keys_file
from serving.auth import create_key, revoke_key

pytestmark = [pytest.mark.integration]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _key(ws: Workspace, *scopes: str, **options: Any) -> str:
    key, _ = create_key(keys_file(ws), f"test-{uuid.uuid4().hex[:6]}", scopes, **options)
    return key


def _wait_for_key(url: str, key: str, world_end_iso: str) -> None:
    """Every worker re-reads a changed key file on its first request a second or more
    after its last look: past that second, the key works on whichever worker answers."""
    time.sleep(1.1)
    answer = httpx.post(
        f"{url}/rank",
        json={"user_id": 5, "request_time": world_end_iso},
        headers=_bearer(key),
        timeout=30,
    )
    assert answer.status_code != 401, answer.text


def _feed(url: str, user: int, auth: dict[str, str], when: str) -> list[int]:
    answer = httpx.post(
        f"{url}/rank", json={"user_id": user, "request_time": when}, headers=auth, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return [item["tweet_id"] for item in answer.json()["items"]]


@pytest.mark.parametrize(
    ("method", "route"), [("POST", "/rank"), ("POST", "/events"), ("GET", "/metrics")]
)
def test_no_key_is_a_401_with_how_to_send_one(server_url: str, method: str, route: str) -> None:
    answer = httpx.request(method, f"{server_url}{route}", json={"user_id": 1}, timeout=30)
    assert answer.status_code == 401
    assert "Authorization: Bearer" in answer.json()["error"]
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_probes_stay_open(server_url: str) -> None:
    for route in ("/livez", "/readyz"):
        assert httpx.get(f"{server_url}{route}", timeout=30).status_code == 200


def test_scopes_decide_the_routes(
    server_url: str, served_workspace: Workspace, world_end_iso: str
) -> None:
    writer = _key(served_workspace, "events")
    ranker = _key(served_workspace, "rank")
    _wait_for_key(server_url, ranker, world_end_iso)
    body = {"user_id": 5, "request_time": world_end_iso}
    refused = httpx.post(f"{server_url}/rank", json=body, headers=_bearer(writer), timeout=30)
    assert refused.status_code == 403
    assert "'rank' scope" in refused.json()["error"]
    metrics = httpx.get(f"{server_url}/metrics", headers=_bearer(ranker), timeout=30)
    assert metrics.status_code == 403


def test_a_bound_key_cannot_empty_another_users_feed(
    server_url: str, served_workspace: Workspace, world_end_iso: str, auth: dict[str, str]
) -> None:
    # Issue 17: four fake impressions emptied user 77's feed. A key bound to
    # another user is refused, and the feed is what it was.
    victim, before = next(
        (user, feed)
        for user in range(77, 200)
        if (feed := _feed(server_url, user, auth, world_end_iso))
    )
    intruder = _key(served_workspace, "rank", "events", user_id=victim + 1)
    _wait_for_key(server_url, intruder, world_end_iso)
    fakes = [
        {
            "event_id": f"fake-{uuid.uuid4().hex}",
            "user_id": victim,
            "tweet_id": tweet,
            "action": "impression",
            "timestamp": world_end_iso,
        }
        for tweet in before
    ]
    posted = httpx.post(f"{server_url}/events", json=fakes, headers=_bearer(intruder), timeout=30)
    assert posted.status_code == 403
    assert f"bound to user {victim + 1}" in posted.json()["error"]
    ranked = httpx.post(
        f"{server_url}/rank",
        json={"user_id": victim, "request_time": world_end_iso},
        headers=_bearer(intruder),
        timeout=30,
    )
    assert ranked.status_code == 403
    assert _feed(server_url, victim, auth, world_end_iso) == before
    _feed(server_url, victim + 1, _bearer(intruder), world_end_iso)  # its own: allowed


def test_a_revoked_key_stops_working_without_a_restart(
    server_url: str, served_workspace: Workspace, world_end_iso: str
) -> None:
    key, entry = create_key(keys_file(served_workspace), "revoked-soon", ["rank"])
    _wait_for_key(server_url, key, world_end_iso)
    revoke_key(keys_file(served_workspace), entry.id)
    time.sleep(1.1)
    statuses = [
        httpx.post(
            f"{server_url}/rank",
            json={"user_id": 5, "request_time": world_end_iso},
            headers=_bearer(key),
            timeout=30,
        ).status_code
        for _ in range(4)  # new connections: both workers
    ]
    assert statuses == [401] * 4


def test_over_the_keys_rate_limit_is_a_429_with_retry_after(
    server_url: str, served_workspace: Workspace, world_end_iso: str
) -> None:
    # The limit is counted per worker (memory://); 2 workers share the
    # connection's requests, so 3/minute each refuses by the 7th request.
    key = _key(served_workspace, "rank", rate_limit="3/minute")
    _wait_for_key(server_url, key, world_end_iso)
    statuses = []
    for _ in range(8):
        answer = httpx.post(
            f"{server_url}/rank",
            json={"user_id": 5, "request_time": world_end_iso},
            headers=_bearer(key),
            timeout=30,
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["retry-after"]) <= 60
            assert "rate limit" in answer.json()["error"]
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {200}


def test_events_from_a_user_that_does_not_exist_do_not_move_a_feed(
    server_url: str, world_end_iso: str, auth: dict[str, str]
) -> None:
    # Issue 17: 5 x 1,000 likes from a user id that does not exist moved one
    # tweet from last to first. Now they are counted as unknown and not applied.
    user = 5
    before = _feed(server_url, user, auth, world_end_iso)
    assert len(before) >= 2
    likes = [
        {
            "event_id": f"ghost-{uuid.uuid4().hex}",
            "user_id": 10**9,
            "tweet_id": before[-1],
            "action": "like",
            "timestamp": world_end_iso,
        }
        for _ in range(1000)
    ]
    answer = httpx.post(f"{server_url}/events", json=likes, headers=auth, timeout=60)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["accepted"], answer.json()["unknown"]) == (0, 1000)
    assert _feed(server_url, user, auth, world_end_iso) == before


@pytest.mark.slow
def test_the_attacks_of_issue_17_all_fail(
    server_url: str, served_workspace: Workspace, world_end_iso: str
) -> None:
    figures = run_attacks(server_url, served_workspace, world_end_iso, victims=1)
    assert figures["unauthenticated_accepted"] == 0, figures
    assert figures["forged_events_sent"] > 5000
    assert figures["forged_events_applied"] == 0, figures
    assert figures["victim_feeds_changed"] == 0, figures
    assert figures["rate_limited_429"] > 0, figures
    assert figures["rate_limit_other_statuses"] == [], figures
