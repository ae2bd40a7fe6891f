"""The attacks of issue 17, replayed against a running ``bentoml serve``.

Each was seen working before the service had keys and entity checks:

- fake ``impression`` events for another user, which emptied that user's feed
  (sent with no key, with a wrong key, and with a key bound to someone else);
- 5 x 1,000 ``like`` events from a user id that does not exist, which moved a
  tweet from last to first in a feed (sent with a valid ``events`` key);
- one impression dated 2200-01-01, which hid a tweet for good;
- ``/rank`` and ``/metrics`` with no key, or a key without the scope;
- requests as fast as one client can send them, which were never limited.

Figures: ``unauthenticated_accepted`` (2xx answers to calls without a valid
key or scope), ``forged_events_applied`` (forged events the service
accepted, from its own answers), ``victim_feeds_changed`` (feeds that
differ after the attacks), ``rate_limited_429`` (429s to a key limited to
``10/second``, hammered for two seconds).

The server must run with ``FEEDRANK_UNKNOWN_EVENTS=quarantine`` (the
default; the load harness turns it off, hence :data:`SERVER_ENV`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from core.feast_store import Workspace
from load.harness import auth_headers, keys_file
from serving.auth import create_key

SERVER_ENV = {"FEEDRANK_UNKNOWN_EVENTS": "quarantine"}
"""What :func:`load.harness.serve` must be given for these attacks."""
GHOST_USER = 10**9
"""A user id no world has."""


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _event(user: int, tweet: int, action: str, when: str) -> dict[str, Any]:
    return {
        "event_id": f"attack-{uuid.uuid4().hex}",
        "user_id": user,
        "tweet_id": tweet,
        "action": action,
        "timestamp": when,
    }


def _wait_for(client: httpx.Client, key: str, when: str) -> None:
    """Every worker re-reads a changed key file on its first request a second or more
    after its last look (serving/auth.py): past that second, the key works everywhere."""
    time.sleep(1.1)
    body = {"user_id": 0, "request_time": when, "limit": 1}
    if client.post("/rank", json=body, headers=_bearer(key)).status_code == 401:
        raise RuntimeError("the service did not accept a key added to its key file")


def run_attacks(url: str, ws: Workspace, when: str, victims: int = 3) -> dict[str, Any]:
    """Replay the attacks against the server at ``url`` serving ``ws``; return the figures.

    ``when`` is the request and event time (the world's end for a simulated world).
    """
    admin = auth_headers(ws)
    with httpx.Client(base_url=url, timeout=60) as client:

        def feed(user: int) -> list[int]:
            body = {"user_id": user, "request_time": when, "limit": 50}
            answer = client.post("/rank", json=body, headers=admin)
            answer.raise_for_status()
            return [item["tweet_id"] for item in answer.json()["items"]]

        users = (u for u in range(1, 1000) if feed(u))
        before = {user: feed(user) for user, _ in zip(users, range(victims), strict=False)}
        if not before:
            raise RuntimeError("no user with a non-empty feed to attack")
        intruder = max(before) + 1
        bound, _ = create_key(
            keys_file(ws), f"attack-bound-{uuid.uuid4().hex[:6]}", ["rank", "events"], intruder
        )
        rank_only, _ = create_key(keys_file(ws), f"attack-rank-{uuid.uuid4().hex[:6]}", ["rank"])
        limited, _ = create_key(
            keys_file(ws), f"attack-limited-{uuid.uuid4().hex[:6]}", ["rank"], None, "10/second"
        )
        _wait_for(client, limited, when)

        unauthenticated: list[httpx.Response] = []
        forged: list[tuple[int, httpx.Response]] = []  # (events sent, answer)

        def forge(events: list[dict[str, Any]], headers: dict[str, str]) -> httpx.Response:
            answer = client.post("/events", json=events, headers=headers)
            forged.append((len(events), answer))
            return answer

        no_key: dict[str, str] = {}
        wrong_key = _bearer("frk_00000000_" + "A" * 43)
        for user, tweets in before.items():
            impressions = [_event(user, t, "impression", when) for t in tweets]
            unauthenticated.append(client.post("/rank", json={"user_id": user}, headers=no_key))
            for headers in (no_key, wrong_key, _bearer(rank_only)):
                unauthenticated.append(forge(impressions, headers))
            forge(impressions, _bearer(bound))
            unauthenticated.append(
                client.post("/rank", json={"user_id": user}, headers=_bearer(bound))
            )
            forge([_event(user, tweets[0], "impression", "2200-01-01T00:00:00Z")], admin)
            for _ in range(5):
                forge([_event(GHOST_USER, tweets[-1], "like", when) for _ in range(1000)], admin)
        for headers in (no_key, _bearer(rank_only)):
            unauthenticated.append(client.get("/metrics", headers=headers))

        after = {user: feed(user) for user in before}
        statuses: list[int] = []
        stop = time.monotonic() + 2.0
        while time.monotonic() < stop:
            body = {"user_id": 0, "request_time": when, "limit": 1}
            statuses.append(client.post("/rank", json=body, headers=_bearer(limited)).status_code)

    def applied(response: httpx.Response) -> int:
        return int(response.json()["accepted"]) if response.is_success else 0

    return {
        "attack_requests": len(unauthenticated) + len(forged),
        "unauthenticated_accepted": sum(r.is_success for r in unauthenticated),
        "forged_events_sent": sum(n for n, _ in forged),
        "forged_events_applied": sum(applied(r) for _, r in forged),
        "forged_statuses": sorted({r.status_code for _, r in forged}),
        "victim_feeds_changed": sum(before[u] != after[u] for u in before),
        "rate_limit_requests": len(statuses),
        "rate_limited_429": statuses.count(429),
        "rate_limit_other_statuses": sorted(set(statuses) - {200, 429}),
    }
