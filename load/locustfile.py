"""Load test of the ranked-feed service: /rank and /events with the world's users.

    .venv/bin/locust -f load/locustfile.py --host http://127.0.0.1:3000 \\
        --headless -u 16 -r 4 -t 60s

The users are read from the workspace (FEEDRANK_WORKSPACE, default the
repository root) so that requests hit real follow graphs and features; the
feeds are asked for at the world's end time, "now" in the simulated world.
The API key is ``FEEDRANK_API_KEY`` (a key with the ``rank`` and ``events``
scopes, from ``feedrank keys create``); without it, the workspace's harness
key (:func:`load.harness.auth_headers`) is used.

Keep this file's imports light: locust's ``--run-time`` clock starts before
it imports this file. With Feast in the import chain (10 s on a slow machine)
a 10 s smoke run ended as its users spawned, with no request sent.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pyarrow.parquet as pq
from locust import HttpUser, between, task

from core.workspace import REPO_ROOT, Workspace
from load.harness import load_headers
from simulation.world import load_world_config, world_end

_WORKSPACE = Workspace(Path(os.environ.get("FEEDRANK_WORKSPACE", REPO_ROOT)))
_USERS = pq.read_table(_WORKSPACE.world / "users.parquet", columns=["user_id"])["user_id"]
USER_IDS = _USERS.to_numpy().tolist()
NOW = world_end(load_world_config(_WORKSPACE.world)).isoformat()
HEADERS = load_headers(_WORKSPACE)


class FeedReader(HttpUser):
    """Opens the feed, sometimes reports what it saw and did."""

    wait_time = between(0.0, 0.05)
    rng = random.Random()  # nosec B311

    def on_start(self) -> None:
        """Every request carries the API key."""
        self.client.headers.update(HEADERS)

    @task(8)
    def rank(self) -> None:
        """A feed of the followees' tweets since the last visit, ranked."""
        user = self.rng.choice(USER_IDS)
        with self.client.post(
            "/rank",
            json={"user_id": user, "limit": 50, "request_time": NOW},
            name="/rank",
            catch_response=True,
        ) as response:
            if response.status_code != 200 or "items" not in response.json():
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    @task(2)
    def events(self) -> None:
        """A batch of impressions and a like, as a client would send after a visit."""
        user = self.rng.choice(USER_IDS)
        tweets = [self.rng.randrange(0, 1000) for _ in range(5)]
        batch = [
            {
                "event_id": uuid.uuid4().hex,
                "user_id": user,
                "tweet_id": t,
                "action": "impression",
                "dwell_seconds": 2.5,
                "timestamp": NOW,
            }
            for t in tweets
        ]
        batch.append(
            {
                "event_id": uuid.uuid4().hex,
                "user_id": user,
                "tweet_id": tweets[0],
                "action": "like",
                "timestamp": NOW,
            }
        )
        self.client.post("/events", json=batch, name="/events")
