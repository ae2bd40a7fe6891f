"""The production profile for real: Redis online store and candidates, SQL registry, an outage."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
import redis

from core.actions import load_actions
from core.feast_store import Workspace, drop_project, open_store
from feedrank.pipeline import publish_features
from load.harness import auth_headers
from serving.candidates import RedisCandidates, load_redis_candidates
from serving.schemas import RankRequest
from simulation.world import load_world_config, world_end
from tests.integration.conftest import (
    free_port,
    serving_environ,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CTX = bentoml.Context()
"""The context of an in-process call: no HTTP request, hence no API key to check."""


def _production(ws: Workspace, project: str, env: pytest.MonkeyPatch, **extra: str) -> None:
    """Point the service at the production profile, with Feast project ``project``."""
    settings = serving_environ(
        ws, FEEDRANK_FEAST_PROFILE="production", FEEDRANK_FEAST_PROJECT=project, **extra
    )
    for key, value in settings.items():
        env.setenv(key, value)


def _fill(ws: Workspace, project: str, candidates: redis.Redis) -> Any:
    store = open_store(ws, "production", project=project)
    publish_features(store, ws)
    load_redis_candidates(candidates, ws.world, load_actions(), prefix=f"feedrank:{project}:")
    return store


def _drop_keys(client: redis.Redis, project: str) -> None:
    for key in client.scan_iter(match=f"feedrank:{project}:*"):
        client.unlink(key)


@pytest.fixture
def local_redis(redis_service: None) -> Iterator[redis.Redis]:
    """The shared local Redis (candidates live there in these tests)."""
    client = redis.Redis("127.0.0.1", 6379)
    yield client
    client.close()


def test_tweet_facts_are_cached_and_unknown_tweets_asked_again(local_redis: redis.Redis) -> None:
    prefix = f"feedrank:t{uuid.uuid4().hex[:12]}:"
    local_redis.hset(f"{prefix}tweet_author", mapping={1: 10, 2: 20})
    local_redis.hset(f"{prefix}tweet_created", mapping={1: 1_000, 2: 2_000})
    source = RedisCandidates(local_redis, prefix)
    try:
        first = source.lookup(np.array([2, 3, 1]))
        assert first.tweet_ids.tolist() == [2, 1]
        assert first.author_ids.tolist() == [20, 10]
        assert first.created_us.tolist() == [2_000, 1_000]
        # Served from memory: a tweet's author and creation time never change.
        local_redis.hset(f"{prefix}tweet_author", mapping={1: 99, 3: 30})
        local_redis.hset(f"{prefix}tweet_created", mapping={3: 3_000})
        again = source.lookup(np.array([1, 3]))
        assert again.author_ids.tolist() == [10, 30]  # 1 cached; 3, unknown before, asked again
        assert again.created_us.tolist() == [1_000, 3_000]
        assert RedisCandidates(local_redis, prefix).lookup(np.array([1])).author_ids.tolist() == [
            99
        ]
    finally:
        _drop_keys(local_redis, prefix.split(":")[1])


def test_redis_profile_ranks_like_the_embedded_one(
    served_workspace: Workspace,
    feast_project: str,
    local_redis: redis.Redis,
    ranker: Any,
    world_end_iso: str,
) -> None:
    from serving.service import FeedRanker  # pylint: disable=import-outside-toplevel

    store = _fill(served_workspace, feast_project, local_redis)
    try:
        with pytest.MonkeyPatch.context() as env:
            _production(served_workspace, feast_project, env)
            production = FeedRanker()
        assert production.store.config.online_store.type == "redis"
        compared = 0
        for user in range(20, 40):
            request = RankRequest(user_id=user, request_time=world_end_iso, limit=50)
            embedded, redis_feed = (
                asyncio.run(ranker.rank(request, CTX)),
                asyncio.run(production.rank(request, CTX)),
            )
            assert redis_feed.candidate_source == embedded.candidate_source
            assert not redis_feed.degraded, redis_feed.reason
            if 11 in {i.tweet_id for i in embedded.items}:
                continue  # its counters were pushed to the embedded store by the events test
            assert [i.tweet_id for i in redis_feed.items] == [i.tweet_id for i in embedded.items]
            for a, b in zip(redis_feed.items, embedded.items, strict=True):
                assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)
            compared += len(embedded.items)
        assert compared > 0
        cold = asyncio.run(
            production.rank(RankRequest(user_id=10**9, request_time=world_end_iso), CTX)
        )
        assert cold.candidate_source == "cold_start" and cold.items
        production.close()
    finally:
        drop_project(store)
        _drop_keys(local_redis, feast_project)


def test_online_store_outage_serves_the_reverse_chronological_feed(
    served_workspace: Workspace,
    feast_project: str,
    local_redis: redis.Redis,
    world_end_iso: str,
    tmp_path: Any,
) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(  # fixed argv
        [
            redis_server,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        online = redis.Redis("127.0.0.1", port)
        for _ in range(100):
            try:
                online.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        env = serving_environ(
            served_workspace,
            FEEDRANK_FEAST_PROFILE="production",
            FEEDRANK_FEAST_PROJECT=feast_project,
            FEEDRANK_REDIS_URL=f"127.0.0.1:{port}",
            FEEDRANK_CANDIDATES_REDIS_URL="redis://127.0.0.1:6379/0",
            FEEDRANK_FEATURE_DEADLINE_MS="300",
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FEEDRANK_REDIS_URL", f"127.0.0.1:{port}")
            store = open_store(served_workspace, "production", project=feast_project)
        publish_features(store, served_workspace)
        load_redis_candidates(
            local_redis, served_workspace.world, load_actions(), prefix=f"feedrank:{feast_project}:"
        )
        source = RedisCandidates(local_redis, f"feedrank:{feast_project}:")
        end_us = int(world_end(load_world_config(served_workspace.world)).timestamp() * 1e6)
        users = (u for u in range(20, 300) if len(source.feed(u, end_us)) > 0)
        healthy_user, outage_user = next(users), next(users)
        request = {"user_id": healthy_user, "request_time": world_end_iso, "limit": 30}
        server = start_server(env, http_port := free_port())
        url = f"http://127.0.0.1:{http_port}"
        try:
            wait_ready(server, url)
            auth = auth_headers(served_workspace)
            healthy = httpx.post(f"{url}/rank", json=request, timeout=30, headers=auth).json()
            assert not healthy["degraded"] and healthy["items"]
            proc.terminate()
            proc.wait(timeout=10)
            # Another user: their rows are not in the reader's in-process cache.
            response = httpx.post(
                f"{url}/rank", json={**request, "user_id": outage_user}, timeout=30, headers=auth
            )
            assert response.status_code == 200
            body = response.json()
            assert body["degraded"] is True, body
            # Refused connections fail fast, or redis-py's retries outlast the deadline.
            assert body["reason"] in {"online store unavailable", "online store slower than 300 ms"}
            assert body["items"]
            ids = np.asarray([i["tweet_id"] for i in body["items"]])
            created = source.lookup(ids)
            assert list(created.created_us) == sorted(created.created_us, reverse=True)
            assert all(i["probabilities"] == {} for i in body["items"])
            metrics = httpx.get(f"{url}/metrics", headers=auth).text
            assert 'feedrank_rank_fallback_total{reason="features_' in metrics
        finally:
            stop_server(server)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        _drop_keys(local_redis, feast_project)
        # The registry rows of this project stay in PostgreSQL; the project name is unique.
