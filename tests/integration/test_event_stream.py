"""The production profile's event stream: idempotent appends, an exactly-once consumer, durability.

Real parts only: a private ``redis-server`` with AOF per test (started here,
on a free port), the production profile's Feast store on a private Redis
and the shared PostgreSQL registry, ``feedrank events consume`` as
subprocesses, and ``bentoml serve`` replicas over HTTP for the replica kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess  # nosec B404  # runs the consumer CLI with fixed argv
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pyarrow.compute as pc
import pytest
import redis

from core.actions import IMPRESSION
from core.feast_store import Workspace
from load import durability
from load.harness import free_port, private_online_store, start_redis, stop_process
from serving.event_stream import RedisEventStream, check_durability, read_archive
from serving.events import EventConflict, EventRecord, counter_of

pytestmark = [pytest.mark.integration]


@pytest.fixture
def stream_url(redis_service: None) -> Iterator[str]:
    """A private Redis with ``appendfsync always``."""
    with durability.stream_redis("always") as url:
        yield url


def _records(prefix: str, n: int, tweets: int = 7) -> list[EventRecord]:
    actions = [IMPRESSION, "like", "retweet", "reply"]
    return [
        EventRecord(
            f"{prefix}{i}", i % 50, 10**12 + i % tweets, actions[i % 4], None, 1_767_225_600_000_000
        )
        for i in range(n)
    ]


def test_append_new_duplicate_and_conflict_refuses_the_whole_batch(stream_url: str) -> None:
    stream = RedisEventStream.from_url(stream_url, "unit")
    first = _records("a-", 10)
    result = stream.append(first)
    assert (len(result.new), result.duplicates) == (10, 0)
    assert stream.client.xlen(stream.key) == 10

    again = stream.append([*first[:4], *_records("b-", 3)])
    assert (len(again.new), again.duplicates) == (3, 4)
    assert stream.client.xlen(stream.key) == 13

    changed = EventRecord(first[0].event_id, 999, 1, "like", None, first[0].ts_us)
    with pytest.raises(EventConflict) as refused:
        stream.append([*_records("c-", 5), changed])
    assert refused.value.ids == [first[0].event_id]
    assert stream.client.xlen(stream.key) == 13  # nothing of the refused batch
    assert not stream.client.exists(f"{stream.prefix}event:c-0")
    with pytest.raises(EventConflict):  # the same id twice in one batch, other content
        stream.append([_records("d-", 1)[0], EventRecord("d-0", 1, 1, "like", None, 1)])
    # check(): the same verdicts, and nothing appended (for quarantined events).
    stream.check([*first, *_records("e-", 3)])
    with pytest.raises(EventConflict) as checked:
        stream.check([changed])
    assert checked.value.ids == [first[0].event_id]
    assert stream.client.xlen(stream.key) == 13
    assert not stream.client.exists(f"{stream.prefix}event:e-0")


def test_trim_keeps_what_any_group_still_needs(stream_url: str) -> None:
    stream = RedisEventStream.from_url(stream_url, f"trim{uuid.uuid4().hex[:8]}")
    stream.append(_records("t-", 10))
    stream.ensure_group("fast")
    stream.ensure_group("slow")
    fast = stream.read("fast", "c", count=10, block_ms=0)
    stream.ack("fast", [e.entry_id for e in fast])
    slow = stream.read("slow", "c", count=6, block_ms=0)
    stream.ack("slow", [e.entry_id for e in slow[:2]])  # 3rd to 6th pending, 7th on not delivered
    assert stream.trim() == 2
    assert [e.entry_id for e in stream.claim_stale("slow", "d", 0, 10)] == [
        e.entry_id for e in slow[2:]
    ]
    stream.ack("slow", [e.entry_id for e in slow[2:]])
    assert stream.trim() == 4  # the four undelivered to "slow" stay
    assert stream.client.xlen(stream.key) == 4
    assert stream.trim() == 0
    stream.client.close()


def test_a_redis_without_aof_is_refused(redis_service: None, tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis(port, tmp_path)
    try:
        client = redis.Redis("127.0.0.1", port)
        with pytest.raises(RuntimeError, match="appendonly no"):
            check_durability(client)
        client.close()
    finally:
        stop_process(proc)


def test_stream_unreachable_is_feature_store_unavailable() -> None:
    from serving.event_stream import StreamIngestor  # pylint: disable=import-outside-toplevel
    from serving.features import FeatureStoreUnavailable  # pylint: disable=import-outside-toplevel
    from serving.schemas import Event  # pylint: disable=import-outside-toplevel

    stream = RedisEventStream.from_url(f"redis://127.0.0.1:{free_port()}/0", "x", check=False)
    event = Event.model_validate(
        {
            "event_id": "e",
            "user_id": 1,
            "tweet_id": 2,
            "action": IMPRESSION,
            "timestamp": "2026-01-01T00:00:00Z",
        }
    )
    with pytest.raises(FeatureStoreUnavailable):
        StreamIngestor(stream).ingest([event])


def _consumer_counts(pending: list[dict[str, object]], name: str) -> int:
    return sum(int(str(c["pending"])) for c in pending if c["name"] in (name, name.encode()))


@pytest.mark.slow
def test_two_consumers_one_killed_apply_every_event_exactly_once(
    tiny_workspace: Workspace,
    stream_url: str,
    postgres_service: None,
    tmp_path: Path,
) -> None:
    records = _records("x-", 3000, tweets=40)
    with private_online_store(tiny_workspace) as online:
        stream = RedisEventStream.from_url(stream_url, online.project)
        for lo in range(0, len(records), 100):
            stream.append(records[lo : lo + 100])
        env = durability.consumer_env(
            {**online.env(deadline_ms=2000), "FEEDRANK_EVENT_STREAM_URL": stream_url}
        )
        archive = tmp_path / "archive"
        group = f"{online.project}:consumers"
        common = ["--batch", "20", "--archive", str(archive), "--min-idle-ms", "1500"]
        argv = durability.consumer_argv(tiny_workspace)
        # pylint: disable-next=consider-using-with  # killed and reaped below
        victim = subprocess.Popen(  # nosec B603  # fixed argv
            [*argv, *common, "--consumer", "victim"], env=env, stdout=subprocess.DEVNULL
        )
        # pylint: disable-next=consider-using-with  # reaped below
        survivor = subprocess.Popen(  # nosec B603  # fixed argv
            [*argv, *common, "--consumer", "survivor", "--until-idle"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            held = 0
            while held == 0 and victim.poll() is None and survivor.poll() is None:
                with suppress(redis.ResponseError):  # the group does not exist yet
                    held = _consumer_counts(
                        stream.client.xinfo_consumers(stream.key, group), "victim"
                    )
                if held == 0:
                    time.sleep(0.005)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            left = _consumer_counts(stream.client.xinfo_consumers(stream.key, group), "victim")
            out, err = survivor.communicate()
        finally:
            for proc in (victim, survivor):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert survivor.returncode == 0, err[-2000:]
        assert left > 0, "the victim held no unacknowledged entries when killed"
        assert stream.pending(group) == 0
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["claimed"] >= left  # the survivor took over what the victim held
        assert stream.client.xlen(stream.key) == 0 and summary["trimmed"] > 0

        archived = read_archive(archive)
        assert sorted(archived["event_id"].to_pylist()) == sorted(r.event_id for r in records)
        recount: dict[int, Counter[str]] = {}
        for tweet, action in zip(
            archived["tweet_id"].to_pylist(), archived["action"].to_pylist(), strict=True
        ):
            recount.setdefault(tweet, Counter())[counter_of(action)] += 1
        for tweet, expected in recount.items():
            stored = stream.client.hgetall(f"{stream.prefix}counters:{tweet}")
            assert {k.decode(): int(v) for k, v in stored.items() if int(v)} == dict(expected)
        assert pc.min(archived["timestamp"]).as_py().year == 2026
        stream.client.close()


@pytest.mark.slow
def test_replica_killed_mid_batch_loses_and_doubles_nothing(
    served_workspace: Workspace, redis_service: None, postgres_service: None
) -> None:
    found = durability.replica_kill(served_workspace, n_events=600, batch_size=20)
    assert found["failed_batches"] == 0
    assert found["events_acked"] == found["events_sent"]
    assert found["events_applied_exactly_once"] == found["events_acked"]
    assert found["tweets_mismatched"] == 0
    assert found["events_archived"] == found["events_acked"]
    assert found["stream_entries"] == found["events_sent"]  # retried batches were not re-added
    assert found["stream_left_after_consume"] == 0  # acknowledged entries are trimmed


def test_consumer_refuses_a_stream_without_aof(
    redis_service: None, postgres_service: None, tmp_path: Path
) -> None:
    from click.testing import CliRunner  # pylint: disable=import-outside-toplevel

    from feedrank.cli import main  # pylint: disable=import-outside-toplevel

    port = free_port()
    proc = start_redis(port, tmp_path)
    try:
        argv = ["events", "consume", "--profile", "production", "--until-idle"]
        argv += ["--stream-url", f"redis://127.0.0.1:{port}/0"]
        result = CliRunner().invoke(main, argv)
    finally:
        stop_process(proc)
    assert result.exit_code == 1
    assert "appendonly no" in result.output
    assert "Traceback" not in result.output
