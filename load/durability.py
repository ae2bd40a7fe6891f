"""Durability of ``/events`` on the production profile: a replica killed, nothing lost or doubled.

The production profile appends events to a shared Redis stream
(:mod:`serving.event_stream`) and ``feedrank events consume`` applies them.
:func:`replica_kill` starts two ``bentoml serve`` replicas (production
profile, a private online store, one shared stream Redis with AOF), posts
events to both, SIGKILLs one replica (its process and all its workers)
while batches are in flight, retries failed batches on the other replica,
then drains the stream with ``feedrank events consume --until-idle`` and
checks every acknowledged event was counted exactly once.
:func:`append_latency` times a 100-event append under ``appendfsync always``
and ``everysec`` (the figures behind the choice of ``always``).

Used by ``tests/integration/test_event_stream.py`` at a small size, and runnable:

    .venv/bin/python -m load.durability [--workspace DIR] [--events N]

It needs ``redis-server`` on the PATH and PostgreSQL on 127.0.0.1 (the
production profile's registry). Ends with ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import signal
import subprocess  # nosec B404  # starts redis-server and the consumer with fixed argv
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import redis

from core.actions import IMPRESSION, load_actions
from core.feast_store import Workspace
from core.workspace import REPO_ROOT
from load.harness import (
    auth_headers,
    copy_workspace,
    ensure_champion,
    free_port,
    private_online_store,
    serve,
    start_redis,
    stop_process,
)
from serving.event_stream import RedisEventStream, read_archive
from serving.events import EventRecord, counter_of


@contextmanager
def stream_redis(fsync: str = "always") -> Iterator[str]:
    """A private ``redis-server`` with AOF (``appendfsync fsync``); yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="feedrank-stream-") as folder:
        proc = start_redis(port, Path(folder), ("--appendonly", "yes", "--appendfsync", fsync))
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(proc)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 3)


def append_latency(url: str, batches: int = 200, size: int = 100) -> dict[str, float]:
    """p50/p99 ms of appending ``size`` new events at once, ``batches`` times, one client."""
    stream = RedisEventStream.from_url(url, f"lat{uuid.uuid4().hex[:8]}")
    timings = []
    try:
        for b in range(batches):
            records = [
                EventRecord(f"lat-{b}-{i}", i, 10**12 + i, IMPRESSION, None, 1_700_000_000_000_000)
                for i in range(size)
            ]
            started = time.perf_counter()
            stream.append(records)
            timings.append((time.perf_counter() - started) * 1000.0)
    finally:
        stream.client.close()
    return {"p50_ms": _percentile(timings, 50), "p99_ms": _percentile(timings, 99)}


def fsync_figures(batches: int = 200) -> dict[str, float]:
    """:func:`append_latency` under ``appendfsync always`` and ``everysec``."""
    out: dict[str, float] = {}
    for mode in ("always", "everysec"):
        with stream_redis(mode) as url:
            found = append_latency(url, batches)
        out[f"append_{mode}_p50_ms"] = found["p50_ms"]
        out[f"append_{mode}_p99_ms"] = found["p99_ms"]
    return out


def consume(ws: Workspace, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """``feedrank events consume --until-idle`` with ``env`` (waits for it; output captured)."""
    return subprocess.run(  # nosec B603  # fixed argv
        [*consumer_argv(ws), "--until-idle", *extra],
        env=consumer_env(env),
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )


def consumer_argv(ws: Workspace) -> list[str]:
    """The consumer command line (before its per-run options)."""
    feedrank = str(Path(sys.executable).parent / "feedrank")
    return [feedrank, "events", "consume", "--workspace", str(ws.root), "--profile", "production"]


def consumer_env(env: dict[str, str]) -> dict[str, str]:
    """The process environment plus ``env``."""
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full.update(env)
    return full


def make_events(n: int, now_iso: str, seed: int = 5) -> list[dict[str, Any]]:
    """``n`` unique events on tweets far outside any world (so only they touch their counters)."""
    rng = random.Random(seed)  # nosec B311  # test data
    actions = [IMPRESSION, *load_actions().names]
    prefix = f"dur-{uuid.uuid4().hex[:8]}-"
    base = 10**12 + rng.randrange(10**9)
    return [
        {
            "event_id": f"{prefix}{i}",
            "user_id": rng.randrange(1000),
            "tweet_id": base + rng.randrange(max(1, n // 10)),
            "action": rng.choice(actions),
            "dwell_seconds": None,
            "timestamp": now_iso,
        }
        for i in range(n)
    ]


def check_applied(
    client: redis.Redis, prefix: str, events: Sequence[dict[str, Any]]
) -> dict[str, int]:
    """How many ``events`` the stream's counters hold exactly once.

    An event counts if its applied-marker is set and its tweet's counters
    equal the count of the events given (so none was applied twice, and no
    other event touched the tweet).
    """
    expected: dict[int, Counter[str]] = {}
    for e in events:
        expected.setdefault(e["tweet_id"], Counter())[counter_of(e["action"])] += 1
    with client.pipeline(transaction=False) as pipe:
        for e in events:
            pipe.exists(f"{prefix}applied:{e['event_id']}")
        marked = pipe.execute()
    with client.pipeline(transaction=False) as pipe:
        for tweet in expected:
            pipe.hgetall(f"{prefix}counters:{tweet}")
        stored = pipe.execute()
    good_tweets = set()
    for tweet, values in zip(expected, stored, strict=True):
        found = {k.decode(): int(v) for k, v in values.items() if int(v)}
        if found == dict(expected[tweet]):
            good_tweets.add(tweet)
    exactly_once = sum(
        1 for e, m in zip(events, marked, strict=True) if m and e["tweet_id"] in good_tweets
    )
    return {
        "events_applied_exactly_once": exactly_once,
        "tweets_mismatched": len(expected) - len(good_tweets),
    }


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (a replica: arbiter and workers)."""
    import psutil  # pylint: disable=import-outside-toplevel  # a BentoML dependency

    try:
        parent = psutil.Process(pid)
        victims = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in victims:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


class _Poster:
    """Posts batches to the replicas in turn; a failed batch is retried on the next replica."""

    def __init__(self, urls: list[str], headers: dict[str, str]) -> None:
        self.urls = urls
        self.headers = headers
        self.acked: list[list[dict[str, Any]]] = []
        self.retries = 0
        self.failed = 0
        self.lock = threading.Lock()

    def post(self, index: int, batch: list[dict[str, Any]]) -> None:
        """Post until a replica answers 200 (12 tries); a 4xx is a bug in the scenario."""
        for attempt in range(12):
            url = self.urls[(index + attempt) % len(self.urls)]
            try:
                response = httpx.post(f"{url}/events", json=batch, headers=self.headers, timeout=30)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                with self.lock:
                    self.acked.append(batch)
                return
            if response is not None and response.status_code < 500:
                raise RuntimeError(f"/events refused a batch: {response.text[:300]}")
            with self.lock:
                self.retries += 1
            time.sleep(0.05 * (attempt + 1))
        with self.lock:
            self.failed += 1


def replica_kill(
    ws: Workspace, n_events: int = 2000, batch_size: int = 50, kill_share: float = 0.3
) -> dict[str, Any]:
    """Two replicas sharing a stream; one SIGKILLed mid-stream; then the consumer catches up."""
    from simulation.world import load_world_config, world_end  # pylint: disable=import-outside-toplevel

    now_iso = world_end(load_world_config(ws.world)).isoformat()
    events = make_events(n_events, now_iso)
    batches = [events[i : i + batch_size] for i in range(0, n_events, batch_size)]
    headers = auth_headers(ws)
    with ExitStack() as stack:
        online = stack.enter_context(private_online_store(ws))
        url = stack.enter_context(stream_redis("always"))
        env = {**online.env(deadline_ms=2000), "FEEDRANK_EVENT_STREAM_URL": url}
        replicas = [stack.enter_context(serve(ws, env)) for _ in range(2)]
        poster = _Poster([r.url for r in replicas], headers)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(poster.post, i, b) for i, b in enumerate(batches)]
            while len(poster.acked) < kill_share * len(batches):
                if all(f.done() for f in futures):  # every post failed: nothing to kill into
                    raise RuntimeError(f"{poster.failed} of {len(batches)} batches failed")
                time.sleep(0.01)
            in_flight = sum(not f.done() for f in futures)
            kill_tree(replicas[0].pid)
            for future in futures:
                future.result()
        consumed = consume(ws, {**env, "FEEDRANK_EVENT_STREAM_URL": url}, "--min-idle-ms", "1000")
        if consumed.returncode != 0:
            raise RuntimeError(f"consumer failed: {consumed.stderr[-2000:]}")
        client: Any = redis.Redis.from_url(url)
        try:
            acked_events = {e["event_id"]: e for b in poster.acked for e in b}
            stream = RedisEventStream(client, online.project)
            applied = check_applied(client, stream.prefix, list(acked_events.values()))
            added = int(client.xinfo_stream(stream.key)["entries-added"])
            left = int(client.xlen(stream.key))
        finally:
            client.close()
        archived = read_archive(ws.data / "serving" / "event_archive")
        archived_ids = set(archived["event_id"].to_pylist()) & set(acked_events)
        figures = fsync_figures(100)
    return {
        "events_sent": n_events,
        "events_acked": len(acked_events),
        **applied,
        "events_archived": len(archived_ids),
        "stream_entries": added,
        "stream_left_after_consume": left,
        "batches_in_flight_at_kill": in_flight,
        "client_retries": poster.retries,
        "failed_batches": poster.failed,
        "consumer": json.loads(consumed.stdout.strip().splitlines()[-1]),
        "append_p50_ms": figures["append_always_p50_ms"],
        "append_p99_ms": figures["append_always_p99_ms"],
        **figures,
    }


def main() -> None:
    """Run :func:`replica_kill` on a copy of a workspace and print the RESULT line."""
    parser = argparse.ArgumentParser(
        prog="python -m load.durability", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="feedrank-dur-bentoml-"))
    with tempfile.TemporaryDirectory(prefix="feedrank-dur-") as tmp:
        ws = copy_workspace(args.workspace, Path(tmp))
        ensure_champion(ws)
        result = replica_kill(ws, args.events)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
