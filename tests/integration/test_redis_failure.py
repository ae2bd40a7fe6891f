"""Redis failing under the production profile: fast errors, no silent empty feeds, a rebuild.

A hung Redis (a socket that accepts and never answers) must make the
candidate store and the feature reader raise their "unavailable" errors
instead of blocking the worker; a Redis that came back empty must read as
"not loaded", never as a user with nothing to see; ``feedrank serve-state
rebuild`` must bring the state back, served events included. Real Redis
(the shared one under a prefix of its own, or a private ``redis-server``),
real PostgreSQL registry; the only fake is the hung socket, a fault a real
Redis does not produce on demand.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
from click.testing import CliRunner

from core.actions import load_actions
from core.feast_store import FEATURE_SERVICE, Workspace, drop_project, open_store
from core.tables import TWEETS, USERS, read_table
from feedrank.cli import main
from feedrank.pipeline import publish_features
from load.harness import free_port, start_redis, stop_process
from load.reliability import DelayProxy
from serving.candidates import (
    CandidateStoreNotLoaded,
    CandidateStoreUnavailable,
    InMemoryCandidates,
    RedisCandidates,
    load_redis_candidates,
)
from serving.event_stream import RedisEventStream, events_table
from serving.events import EventRecord, counter_names
from serving.features import FeatureStoreUnavailable, OnlineFeatureReader
from serving.ingest import online_counters
from serving.redis_clients import client_from_url, online_store_client
from simulation.world import load_world_config, world_end

pytestmark = [pytest.mark.integration]

SAFETY_SECONDS = 20.0
"""Only so a regression fails instead of hanging the suite; not a speed bound."""


def _returns(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call`` in a thread; the exception it raised (None if it returned normally).

    Fails the test if the call has not returned after :data:`SAFETY_SECONDS`.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # pylint: disable=broad-exception-caught  # reported back
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(SAFETY_SECONDS)
    assert outcome, "the call blocked on a hung Redis"
    return outcome[0]


@pytest.fixture(name="hung_port")
def _hung_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield int(server.getsockname()[1])


def test_a_hung_candidate_store_raises_instead_of_blocking(hung_port: int) -> None:
    client = client_from_url(f"redis://127.0.0.1:{hung_port}/0")
    source = RedisCandidates(client, "feedrank:hung:")
    for call in (
        lambda: source.feed(5, 10**15),
        lambda: source.lookup(np.array([1, 2])),
        lambda: source.known(np.array([1]), np.array([2])),
        lambda: source.record([(1, 2, 3)], [2]),
    ):
        error = _returns(call)
        assert isinstance(error, CandidateStoreUnavailable), error
        assert not isinstance(error, CandidateStoreNotLoaded)
    client.close()


def test_the_policy_has_timeouts_and_no_retries() -> None:
    client = client_from_url("redis://127.0.0.1:1/0")
    kwargs = client.connection_pool.connection_kwargs
    assert 0 < kwargs["socket_timeout"] < 0.3  # under the default feature deadline
    assert 0 < kwargs["socket_connect_timeout"] < 0.3
    assert kwargs["retry"].get_retries() == 0
    client.close()


@pytest.fixture(name="private_redis")
def _private_redis() -> Iterator[tuple[int, Path]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="feedrank-redis-failure-") as folder:
        proc = start_redis(port, Path(folder))
        try:
            yield port, Path(folder)
        finally:
            stop_process(proc)


@pytest.fixture(name="workspace")
def _workspace(tiny_workspace: Workspace, tmp_path: Path) -> Workspace:
    """A copy of the tiny workspace (the rebuild writes its fill state)."""
    shutil.copytree(tiny_workspace.root, tmp_path / "ws", dirs_exist_ok=True)
    return Workspace(tmp_path / "ws")


@pytest.fixture(name="production")
def _production(
    workspace: Workspace,
    feast_project: str,
    private_redis: tuple[int, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """The production profile on the private Redis, features filled; the project dropped after."""
    port, _ = private_redis
    monkeypatch.setenv("FEEDRANK_REDIS_URL", f"127.0.0.1:{port}")
    store = open_store(workspace, "production", project=feast_project)
    publish_features(store, workspace)
    try:
        yield store
    finally:
        drop_project(store)


def test_a_hung_online_store_fails_the_reader_and_the_candidate_store(
    workspace: Workspace,
    production: Any,
    private_redis: tuple[int, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, _ = private_redis
    with DelayProxy(port) as proxy:
        monkeypatch.setenv("FEEDRANK_REDIS_URL", f"127.0.0.1:{proxy.port}")
        store = open_store(workspace, "production", project=production.config.project)
        reader = OnlineFeatureReader(store, FEATURE_SERVICE, freshness={})
        source = RedisCandidates(online_store_client(store), "feedrank:hung:")
        entities = {
            "user_id": np.array([3, 3]),
            "author_id": np.array([1, 2]),
            "tweet_id": np.array([10, 11]),
        }
        assert _returns(lambda: reader.read(entities, 0)) is None  # healthy through the proxy
        reader.clear_cache()
        proxy.delay = 3600.0  # every reply held: a hung Redis
        error = _returns(lambda: reader.read({**entities, "user_id": np.array([4, 4])}, 0))
        assert isinstance(error, FeatureStoreUnavailable), error
        error = _returns(lambda: source.feed(3, 10**15))
        assert isinstance(error, CandidateStoreUnavailable), error
        reader.close()


def test_an_empty_store_is_not_loaded_until_the_load_marks_it(redis_service: None) -> None:
    client = redis.Redis("127.0.0.1", 6379)
    prefix = f"feedrank:t{uuid.uuid4().hex[:12]}:"
    source = RedisCandidates(client, prefix)
    try:
        with pytest.raises(CandidateStoreNotLoaded, match="serve-state rebuild"):
            source.feed(5, 10**15)
        with pytest.raises(CandidateStoreNotLoaded):
            source.known(np.array([1]), np.array([1]))
        assert source.loaded() is None
    finally:
        client.close()


def _end_us(ws: Workspace) -> int:
    return int(world_end(load_world_config(ws.world)).timestamp() * 1_000_000)


def test_known_users_and_tweets_agree_between_the_two_sources(
    workspace: Workspace, redis_service: None
) -> None:
    client = redis.Redis("127.0.0.1", 6379)
    prefix = f"feedrank:t{uuid.uuid4().hex[:12]}:"
    try:
        counts = load_redis_candidates(client, workspace.world, load_actions(), prefix)
        users = read_table(USERS, workspace.world)["user_id"].to_numpy()
        tweets = read_table(TWEETS, workspace.world)["tweet_id"].to_numpy()
        assert counts["users"] == len(users)
        asked_users = np.r_[users[:5], users.max() + 1, 10**12, users[-1]]
        asked_tweets = np.r_[tweets[:3], tweets.max() + 1, tweets[-2:], 2**40]
        memory = InMemoryCandidates(workspace.world, load_actions())
        stored = RedisCandidates(client, prefix)
        for source in (memory, stored):
            user_mask, tweet_mask = source.known(asked_users, asked_tweets)
            assert user_mask.dtype == bool and tweet_mask.dtype == bool
            assert user_mask.tolist() == [True] * 5 + [False, False, True]
            assert tweet_mask.tolist() == [True] * 3 + [False, True, True, False]
        empty = stored.known(np.zeros(0, np.int64), np.zeros(0, np.int64))
        assert [len(m) for m in empty] == [0, 0]
        marker = stored.loaded()
        assert marker is not None and int(marker["tweets"]) == len(tweets)
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.unlink(key)
        client.close()


def _user_with_feed(source: RedisCandidates, end_us: int) -> tuple[int, int]:
    """A user whose feed is not empty, and the newest tweet in it."""
    for user in range(0, 500):
        feed = source.feed(user, end_us)
        if len(feed):
            return user, int(feed.tweet_ids[0])
    raise AssertionError("no user with a feed in the tiny world")


def test_rebuild_refills_an_emptied_redis_and_replays_served_events(
    workspace: Workspace,
    production: Any,
    private_redis: tuple[int, Path],
) -> None:
    port, _ = private_redis
    project = production.config.project
    client = redis.Redis("127.0.0.1", port)
    prefix = f"feedrank:{project}:"
    source = RedisCandidates(client, prefix)
    end_us = _end_us(workspace)
    with pytest.raises(CandidateStoreNotLoaded):
        source.feed(1, end_us)

    runner = CliRunner()
    env = {"FEEDRANK_REDIS_URL": f"127.0.0.1:{port}", "FEEDRANK_FEAST_PROJECT": project}
    args = ["serve-state", "rebuild", "--workspace", str(workspace.root)]
    first = runner.invoke(main, args, env=env)
    assert first.exit_code == 0, first.output
    assert first.output.strip().splitlines()[-1].startswith("RESULT {")
    user, tweet = _user_with_feed(source, end_us)
    assert source.loaded() is not None

    # The service showed the tweet, and logged it to the archive; Redis then lost everything.
    shown = EventRecord(f"e-{uuid.uuid4().hex}", user, tweet, "impression", 1.0, end_us - 1)
    liked = EventRecord(f"e-{uuid.uuid4().hex}", user, tweet, "like", None, end_us - 1)
    archive = workspace.data / "serving" / "event_archive" / "date=2030-01-01"
    archive.mkdir(parents=True)
    pq.write_table(events_table([shown, liked]), archive / "a.parquet")
    pq.write_table(events_table([shown]), archive / "b.parquet")  # a batch archived twice
    before = _counters(production, tweet)
    client.flushall()  # the private Redis only: an empty restart
    with pytest.raises(CandidateStoreNotLoaded):
        source.feed(user, end_us)
    stream = RedisEventStream(client, project)  # the event stream may share the Redis
    assert len(stream.append([liked]).new) == 1

    again = runner.invoke(main, args, env=env)
    assert again.exit_code == 0, again.output
    assert client.xlen(stream.key) == 1  # the rebuild cleared the candidates, not the stream
    result = _result(again.output)
    assert result["events"] == 2 and result["impressions"] == 1 and result["engagements"] == 1
    assert result["online_rows"] > 0 and result["candidates_follows"] > 0
    assert tweet not in source.feed(user, end_us + 1).tweet_ids.tolist()  # seen, and visited
    after = _counters(production, tweet)
    assert after["tweet_impressions"] == before["tweet_impressions"] + 1
    assert after["tweet_like_count"] == before["tweet_like_count"] + 1
    client.close()


def _counters(store: Any, tweet: int) -> dict[str, int]:
    return online_counters(store, counter_names(load_actions()), [tweet])[tweet]


def _result(output: str) -> dict[str, Any]:
    line = output.strip().splitlines()[-1]
    assert line.startswith("RESULT "), output
    parsed: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return parsed
