"""Reliability of the served API: fuzzing, store outages and slowness, lost or doubled events.

Copies a workspace (default: the repository root) to a temporary folder,
trains a quick champion there if it has none, and runs seven scenarios
against ``bentoml serve`` processes it starts itself (127.0.0.1 only):

- **fuzzing**: schemathesis generates requests for every operation of the
  service's own OpenAPI document (``/docs.json``), with the API key, valid
  and invalid ones, derandomised; most valid ``/events`` batches are moved
  onto known users and tweets inside the event window, so accepted batches
  are fuzzed too. Bar: no 5xx, every 4xx has a message, every status
  declared for its operation and every answer conforming to the document;
  counted: ``schemathesis_cases``, ``events_accepted_in_fuzz``.
- **duplicate events**: 10k unique events sent in batches from a thread pool,
  20% of them sent again (single ids and whole batches, as retries do). Bar:
  exactly 10k rows in the event log.
- **outage**: the production profile on a private ``redis-server`` holding
  features and candidates; /rank in a loop, the Redis killed, then restarted
  EMPTY on the same port while ``feedrank serve-state rebuild`` refills it.
  Counted: 5xx, degraded answers and empty feeds served undegraded after the
  restart (bar: 0); measured: the slowest /rank while Redis is down
  (``outage_max_ms``) and seconds from the restart until answers are ranked
  again (``recovery_seconds``).
- **slow store**: the same, with a :class:`DelayProxy` between the service
  and Redis that holds each reply 40 ms (over the 30 ms deadline), then
  1000 ms (over the reader's socket timeout). Counted: 5xx and degraded
  answers; measured: client-side p99 while the store is slow.
- **worker killed**: one of two workers SIGKILLed while /events batches
  stream in with retries. Bar: every event in the log, a new worker started.
- **attacks** (:mod:`load.attacks`): the forged events, unauthenticated and
  wrong-scope calls and the unthrottled client of issue 17. Bar:
  ``unauthenticated_accepted`` 0, ``forged_events_applied`` 0,
  ``victim_feeds_changed`` 0, ``rate_limited_429`` > 0.
- **replica killed** (:mod:`load.durability`): two replicas sharing one
  event stream, one SIGKILLed mid-stream, then the consumer catches up. Bar:
  ``stream_events_acked`` = ``stream_events_applied_exactly_once`` (its
  figures carry the prefix ``stream_`` in the RESULT).

    .venv/bin/python -m load.reliability [--workspace DIR] [--fuzz-cases N] [--events N]

The outage and slow-store scenarios need ``redis-server`` on the PATH and
PostgreSQL on 127.0.0.1 (the SQL registry of the production profile); without
them they are skipped (their figures are null). Ends with ``RESULT {json}``.

The scenario functions are also used, at a smaller size, by
``tests/integration/test_reliability.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess  # nosec B404  # starts bentoml serve and redis-server with fixed argv
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.actions import IMPRESSION, load_actions
from core.feast_store import Workspace
from load.attacks import SERVER_ENV as ATTACK_SERVER_ENV
from load.attacks import run_attacks
from load.durability import replica_kill
from load.fuzzing import EventTargets, fuzz
from load.harness import (
    REPO_ROOT,
    PrivateOnlineStore,
    auth_headers,
    copy_workspace,
    ensure_champion,
    private_online_store,
    serve,
    start_redis,
)

FUZZ_ROUTES = ("/rank", "/events")


# --------------------------------------------------------------------------- events


@dataclass
class EventsReport:  # pylint: disable=too-many-instance-attributes  # a record
    """Totals of a duplicate-events run, from the /events answers."""

    prefix: str
    unique: int
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    failed_batches: int = 0
    per_tweet: dict[int, Counter[str]] = field(default_factory=dict)


def make_batches(
    n: int,
    *,
    prefix: str,
    now_iso: str,
    batch_size: int = 20,
    dup_share: float = 0.2,
    seed: int = 1,
) -> tuple[list[list[dict[str, Any]]], dict[int, Counter[str]]]:
    """``n`` unique events in batches, plus resends totalling ``dup_share * n`` events.

    Half the resent events are single ids mixed into later batches, half are
    whole batches sent again. Tweet ids are far outside any world (``10**12``
    and up) so nothing else touches their counters. Returns the batches (in a
    shuffled order) and the expected count per tweet and action.
    """
    rng = random.Random(seed)  # nosec B311  # test data, not security
    actions = [IMPRESSION, *load_actions().names]
    base_tweet = 10**12 + rng.randrange(10**9)
    events = [
        {
            "event_id": f"{prefix}{i}",
            "user_id": rng.randrange(1000),
            "tweet_id": base_tweet + rng.randrange(max(1, n // 10)),
            "action": rng.choice(actions),
            "dwell_seconds": None,
            "timestamp": now_iso,
        }
        for i in range(n)
    ]
    expected: dict[int, Counter[str]] = {}
    for event in events:
        expected.setdefault(event["tweet_id"], Counter())[event["action"]] += 1
    batches = [events[i : i + batch_size] for i in range(0, n, batch_size)]
    dup_total = round(n * dup_share)
    whole = []
    resent = 0
    for batch in rng.sample(batches, len(batches)):
        if resent + len(batch) > dup_total // 2:
            break
        whole.append(list(batch))
        resent += len(batch)
    singles = rng.choices(events, k=dup_total - resent)
    mixed = [list(b) for b in batches]
    for event in singles:
        mixed[rng.randrange(len(mixed))].append(dict(event))
    out = mixed + whole
    rng.shuffle(out)
    return out, expected


def send_events(
    url: str,
    n: int,
    *,
    threads: int = 8,
    batch_size: int = 20,
    dup_share: float = 0.2,
    now_iso: str = "2026-01-01T00:00:00+00:00",
    seed: int = 1,
    max_seconds: float = 300.0,
    headers: Mapping[str, str] | None = None,
) -> EventsReport:
    """Send ``n`` unique events plus 20% resends concurrently; retry 5xx and transport errors."""
    prefix = f"rel-{uuid.uuid4().hex[:10]}-"
    batches, expected = make_batches(
        n, prefix=prefix, now_iso=now_iso, batch_size=batch_size, dup_share=dup_share, seed=seed
    )
    report = EventsReport(prefix=prefix, unique=n, per_tweet=expected)
    report.sent = sum(len(b) for b in batches)
    deadline = time.monotonic() + max_seconds

    def post(client: httpx.Client, batch: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        for attempt in range(5):
            if time.monotonic() > deadline:
                break
            try:
                response = client.post("/events", json=batch)
            except httpx.HTTPError:
                time.sleep(0.1 * (attempt + 1))
                continue
            if response.status_code < 500:
                response.raise_for_status()
                return response.json(), attempt
            time.sleep(0.1 * (attempt + 1))
        return {}, 5

    clients = [httpx.Client(base_url=url, timeout=30, headers=headers) for _ in range(threads)]
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            results = list(
                pool.map(lambda i: post(clients[i % threads], batches[i]), range(len(batches)))
            )
    finally:
        for client in clients:
            client.close()
    for body, retries in results:
        report.retries += min(retries, 4)
        if not body:
            report.failed_batches += 1
            continue
        report.accepted += body["accepted"]
        report.duplicates += body["duplicates"]
    return report


def logged_events(db_path: Path, prefix: str) -> tuple[int, int]:
    """(rows, distinct ids) of the event log whose ``event_id`` starts with ``prefix``."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
            " WHERE substr(event_id, 1, ?) = ?",
            (len(prefix), prefix),
        ).fetchone()
    finally:
        conn.close()
    return int(rows), int(distinct)


def logged_counters(db_path: Path, tweets: list[int]) -> dict[int, dict[str, int]]:
    """The event log's cumulative counters of these tweets."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        out: dict[int, dict[str, int]] = {}
        for tweet in tweets:
            rows = conn.execute(
                "SELECT counter, value FROM tweet_counters WHERE tweet_id = ?", (tweet,)
            )
            out[tweet] = dict(rows.fetchall())
    finally:
        conn.close()
    return out


# --------------------------------------------------------------------------- outage


@dataclass
class OutagePhase:
    """Answers of one phase of the outage loop."""

    requests: int = 0
    status_5xx: int = 0
    degraded: int = 0
    errors: int = 0
    empty: int = 0
    """Answers with no candidates: nothing to rank, so no feature read."""
    reasons: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    """Client-side seconds per request (where measured)."""

    def percentile(self, q: float) -> float:
        """A latency percentile, in ms."""
        ordered = sorted(self.latencies)
        return round(1000.0 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)

    def record(self, response: httpx.Response | None) -> bool | None:
        """Count one answer; returns whether it was ranked (None: no usable answer)."""
        self.requests += 1
        if response is None:
            self.errors += 1
            return None
        if response.status_code >= 500:
            self.status_5xx += 1
            return None
        body = response.json()
        if body["degraded"]:
            self.degraded += 1
            self.reasons[str(body["reason"])] += 1
            return False
        if body["candidate_count"] == 0:
            self.empty += 1
            return None
        return True


def _rank_client(url: str, ws: Workspace) -> tuple[httpx.Client, Any]:
    """A client, and ``ask(user)``: POST /rank for the world's end (None: no answer)."""
    client = httpx.Client(base_url=url, timeout=30, headers=auth_headers(ws))
    end = _world_end_iso(ws)

    def ask(user: int) -> httpx.Response | None:
        try:
            return client.post("/rank", json={"user_id": user, "request_time": end, "limit": 30})
        except httpx.HTTPError:
            return None

    return client, ask


def _phases_summary(phases: dict[str, OutagePhase]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "requests": p.requests,
            "5xx": p.status_5xx,
            "degraded": p.degraded,
            "errors": p.errors,
            "empty": p.empty,
            "reasons": dict(p.reasons),
            **({"p50_ms": p.percentile(50), "p99_ms": p.percentile(99)} if p.latencies else {}),
        }
        for name, p in phases.items()
    }


def _outage_client(url: str, ws: Workspace) -> tuple[httpx.Client, Any]:
    """An authenticated client, and ``ask(user)``: (POST /rank answer or None, seconds)."""
    client = httpx.Client(base_url=url, timeout=30, headers=auth_headers(ws))
    end = _world_end_iso(ws)

    def ask(user: int) -> tuple[httpx.Response | None, float]:
        started = time.perf_counter()
        try:
            response = client.post(
                "/rank", json={"user_id": user, "request_time": end, "limit": 30}
            )
        except httpx.HTTPError:
            response = None
        return response, time.perf_counter() - started

    return client, ask


def _empty_undegraded(response: httpx.Response | None) -> bool:
    """An empty feed served as if all were well: the silent failure after an empty restart."""
    if response is None or response.status_code != 200:
        return False
    body = response.json()
    return not body["degraded"] and not body["items"]


def _rebuild(ws: Workspace, online: PrivateOnlineStore) -> dict[str, Any]:
    """``feedrank serve-state rebuild`` against the private Redis; its ``RESULT`` values."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(online.env())
    env.pop("FEEDRANK_CANDIDATES_REDIS_URL")  # candidates in the online store's Redis
    code = "from feedrank.cli import main; main()"
    argv = [sys.executable, "-c", code, "serve-state", "rebuild", "--workspace", str(ws.root)]
    done = subprocess.run(  # nosec B603  # fixed argv
        argv, env=env, capture_output=True, text=True, check=False
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"serve-state rebuild failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def outage(
    ws: Workspace, requests_per_phase: int = 60, recovery_timeout: float = 120.0
) -> dict[str, Any]:
    """Kill the production profile's Redis under /rank traffic, restart it EMPTY, rebuild.

    Features and candidates both live in the private Redis (the production
    default: no ``FEEDRANK_CANDIDATES_REDIS_URL``), so the restart loses
    everything a request reads. Phases: ``before`` (healthy), ``during``
    (Redis dead: every answer the fallback, timed: ``outage_max_ms``),
    ``empty`` (restarted with nothing; ``feedrank serve-state rebuild`` runs
    meanwhile, as an operator would; until it marks the store loaded, no
    answer may be an empty feed with ``degraded: false``:
    ``empty_undegraded_after_restart``) and ``after``
    (rebuilt; an empty feed there, as before the outage, is a user with nothing
    new). ``recovery_seconds``: from the restart to the first ranked answer
    after the rebuild.
    """
    import redis  # pylint: disable=import-outside-toplevel

    from serving.candidates import LOADED_KEY  # pylint: disable=import-outside-toplevel

    users = iter(range(20, 10**9))
    phases = {name: OutagePhase() for name in ("before", "during", "empty", "after")}
    empty_undegraded: Counter[str] = Counter()
    recovery: float | None = None
    rebuilt: dict[str, Any] = {}
    with private_online_store(ws) as online:
        env = {**online.env()}
        env.pop("FEEDRANK_CANDIDATES_REDIS_URL")
        _rebuild(ws, online)  # the candidate store of the private Redis
        loaded_key = f"feedrank:{online.project}:{LOADED_KEY}"
        with serve(ws, env) as served:
            client, ask = _outage_client(served.url, ws)

            def phase(name: str, n: int) -> bool:
                """``n`` requests; whether the last one was an empty feed served undegraded."""
                silent = False
                for _ in range(n):
                    response, seconds = ask(next(users))
                    phases[name].latencies.append(seconds)
                    phases[name].record(response)
                    silent = _empty_undegraded(response)
                    empty_undegraded[name] += silent
                return silent

            with client:
                phase("before", requests_per_phase)
                online.kill()
                phase("during", requests_per_phase)
                restarted = time.monotonic()
                online.proc = start_redis(online.port, online.folder)  # empty
                marker = redis.Redis("127.0.0.1", online.port)
                with marker, concurrent.futures.ThreadPoolExecutor(1) as pool:
                    rebuilding = pool.submit(_rebuild, ws, online)
                    # Until the rebuild marks the store loaded (its last write).
                    while not rebuilding.done() and not marker.exists(loaded_key):
                        if phase("empty", 1) and marker.exists(loaded_key):
                            # Loaded while that request ran: its empty feed may be
                            # the truth (as before the outage), so it is not counted.
                            empty_undegraded["empty"] -= 1
                            empty_undegraded["empty_at_load"] += 1
                        time.sleep(0.02)
                    rebuilt = rebuilding.result()
                while time.monotonic() - restarted < recovery_timeout:
                    response, seconds = ask(next(users))
                    phases["after"].latencies.append(seconds)
                    empty_undegraded["after"] += _empty_undegraded(response)
                    if phases["after"].record(response):
                        recovery = time.monotonic() - restarted
                        break
                    time.sleep(0.05)
                phase("after", requests_per_phase)  # and it stays recovered
    during = phases["during"].latencies
    return {
        "phases": _phases_summary(phases),
        "outage_max_ms": round(1000.0 * max(during), 1) if during else None,
        "outage_5xx": sum(p.status_5xx + p.errors for p in phases.values()),
        "outage_degraded_responses": sum(p.degraded for p in phases.values()),
        # Before the rebuild: the silent failure. Before the outage and after the
        # rebuild an empty feed is the truth (nothing new since the last visit).
        "empty_undegraded_after_restart": empty_undegraded["empty"],
        "empty_undegraded_by_phase": dict(empty_undegraded),
        "rebuild": rebuilt,
        "recovery_seconds": None if recovery is None else round(recovery, 3),
    }


# --------------------------------------------------------------------------- slow store


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds what upstream sends back for ``delay`` seconds.

    In front of Redis it makes a slow online store on demand, the one fault a
    real Redis does not produce when asked: set :attr:`delay` while it runs.
    The delay applies to each chunk read from upstream (up to 64 KiB), so a
    larger reply is held several times.
    """

    def __init__(self, upstream_port: int, delay: float = 0.0) -> None:
        self.delay = delay
        self._upstream = ("127.0.0.1", upstream_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:  # upstream down: this connection fails, the proxy stays up
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for args in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, target: socket.socket, reply: bool) -> None:
        try:
            while data := source.recv(65536):
                if reply and self.delay:
                    time.sleep(self.delay)
                target.sendall(data)
        except OSError:
            pass
        finally:  # either side gone: end both directions of the connection
            for sock in (source, target):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting, drop every connection and wait for the threads."""
        with suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._server.close()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes threads blocked in recv()
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def slow_store(
    ws: Workspace,
    requests_per_phase: int = 40,
    deadline_ms: float = 30.0,
    slow_ms: float = 40.0,
    stalled_ms: float = 1000.0,
) -> dict[str, Any]:
    """/rank with the online store behind a :class:`DelayProxy`: healthy, slow, stalled, healthy.

    ``slow_ms`` is under the reader's 50 ms socket timeout and over the
    deadline: the deadline check between feature views fires. ``stalled_ms``
    is over the socket timeout: the read fails. Every request is for a user
    not asked before, so the user's rows are never in the reader's cache.
    """
    users = iter(range(20, 10**9))
    phases = {name: OutagePhase() for name in ("healthy", "slow", "stalled", "recovered")}
    delays = {"healthy": 0.0, "slow": slow_ms, "stalled": stalled_ms, "recovered": 0.0}
    with (
        private_online_store(ws) as online,
        DelayProxy(online.port) as proxy,
        serve(ws, online.env(proxy.port, deadline_ms)) as served,
    ):
        client, ask = _rank_client(served.url, ws)
        with client:
            for name, phase in phases.items():
                proxy.delay = delays[name] / 1000.0
                for _ in range(requests_per_phase):
                    started = time.perf_counter()
                    response = ask(next(users))
                    phase.latencies.append(time.perf_counter() - started)
                    phase.record(response)
    faulty = (phases["slow"], phases["stalled"])
    return {
        "phases": _phases_summary(phases),
        "deadline_ms": deadline_ms,
        "delays_ms": delays,
        "slow_store_5xx": sum(p.status_5xx + p.errors for p in phases.values()),
        "slow_store_degraded_share": round(  # of the answers that needed features
            sum(p.degraded for p in faulty) / sum(p.requests - p.empty for p in faulty), 3
        ),
        "slow_store_p99_ms": max(p.percentile(99) for p in faulty),
    }


# --------------------------------------------------------------------------- worker killed


def _logged_rows(db_path: Path) -> int:
    """Rows in the event log (0 before it exists)."""
    if not db_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def worker_kill(
    ws: Workspace, n_events: int = 3000, kill_share: float = 0.25, respawn_timeout: float = 120.0
) -> dict[str, Any]:
    """SIGKILL one of two workers while /events batches (with retries) stream in.

    The kill lands once ``kill_share`` of the events are in the log, so it
    hits the stream whatever the machine's speed. Returns what the clients
    were told, what the log holds, and whether the arbiter started a new
    worker in the dead one's place.
    """
    db = ws.data / "serving" / "events.db"
    with serve(ws, {}) as served:
        before = served.worker_pids()
        if not before:
            raise RuntimeError("bentoml serve shows no worker processes")
        start_rows = _logged_rows(db)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(
                send_events,
                served.url,
                n_events,
                threads=4,
                now_iso=_world_end_iso(ws),
                headers=auth_headers(ws),
            )
            while not future.done() and _logged_rows(db) - start_rows < kill_share * n_events:
                time.sleep(0.01)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            killed_under_load = not future.done()
            report = future.result()
        deadline = time.monotonic() + respawn_timeout
        after = served.worker_pids()
        while len(after - {victim}) < len(before) and time.monotonic() < deadline:
            time.sleep(0.2)
            after = served.worker_pids()
        ready = httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200
    rows, distinct = logged_events(db, report.prefix)
    return {
        "workers_before": len(before),
        "workers_after": len(after - {victim}),
        "worker_respawned": len(after - before) > 0,
        "killed_under_load": killed_under_load,
        "ready_after": ready,
        "events_unique": report.unique,
        "events_sent": report.sent,
        "events_accepted": report.accepted,
        "events_retries": report.retries,
        "events_failed_batches": report.failed_batches,
        "events_unique_in_log": distinct,
        "events_rows_in_log": rows,
    }


# --------------------------------------------------------------------------- main


def _world_end_iso(ws: Workspace) -> str:
    from simulation.world import load_world_config, world_end  # pylint: disable=import-outside-toplevel

    return world_end(load_world_config(ws.world)).isoformat()


def main() -> None:
    """Run the scenarios and print the RESULT line."""
    parser = argparse.ArgumentParser(
        prog="python -m load.reliability", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument(
        "--fuzz-cases",
        type=int,
        default=1000,
        help="Split over /rank and /events (the parameterless GET routes add a few).",
    )
    parser.add_argument("--events", type=int, default=10_000, help="Unique events.")
    parser.add_argument(
        "--skip-redis", action="store_true", help="Skip the outage and slow-store scenarios."
    )
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="feedrank-rel-bentoml-"))
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="feedrank-rel-") as tmp:
        ws = copy_workspace(args.workspace, Path(tmp))
        ensure_champion(ws)
        with serve(ws, {}) as served:
            url = served.url
            started = time.monotonic()
            report = fuzz(
                url,
                args.fuzz_cases // len(FUZZ_ROUTES),
                headers=auth_headers(ws),
                targets=EventTargets.of(ws),
            )
            print(f"fuzzing ({time.monotonic() - started:.0f} s): {report.summary()}", flush=True)
            started = time.monotonic()
            events = send_events(
                url, args.events, now_iso=_world_end_iso(ws), headers=auth_headers(ws)
            )
        rows, distinct = logged_events(ws.data / "serving" / "events.db", events.prefix)
        print(
            f"events ({time.monotonic() - started:.1f} s): sent {events.sent}, "
            f"accepted {events.accepted}, duplicates {events.duplicates}, "
            f"failed batches {events.failed_batches}; log rows {rows} (distinct {distinct})",
            flush=True,
        )
        result.update(
            schemathesis_cases=report.cases,
            events_accepted_in_fuzz=report.events_accepted,
            fuzz_5xx=report.count_5xx,
            fuzz_4xx_without_message=len(report.silent_4xx),
            fuzz_undeclared_statuses=report.undeclared_statuses(),
            fuzz_nonconforming=len(report.nonconforming),
            events_sent=events.sent,
            events_unique=events.unique,
            events_accepted=events.accepted,
            events_unique_in_log=rows,
        )
        for name, scenario, keys in (
            (
                "outage",
                outage,
                (
                    "outage_max_ms",
                    "outage_5xx",
                    "outage_degraded_responses",
                    "empty_undegraded_after_restart",
                    "recovery_seconds",
                ),
            ),
            (
                "slow_store",
                slow_store,
                ("slow_store_5xx", "slow_store_degraded_share", "slow_store_p99_ms"),
            ),
        ):
            result.update(dict.fromkeys(keys))
            if args.skip_redis:
                print(f"{name}: skipped (--skip-redis)", flush=True)
                continue
            try:
                found = scenario(ws)
            except Exception as exc:  # pylint: disable=broad-exception-caught  # reported, not fatal
                print(f"{name}: skipped ({exc})", flush=True)
                continue
            print(f"{name}: {json.dumps(found['phases'])}", flush=True)
            result.update({k: found[k] for k in keys})
        with serve(ws, ATTACK_SERVER_ENV) as served:
            attacked = run_attacks(served.url, ws, _world_end_iso(ws))
        print(f"attacks: {json.dumps(attacked)}", flush=True)
        result.update(attacked)
        killed = worker_kill(ws)
        print(f"worker_kill: {json.dumps(killed)}", flush=True)
        result.update(
            kill_events_unique=killed["events_unique"],
            kill_events_unique_in_log=killed["events_unique_in_log"],
            kill_failed_batches=killed["events_failed_batches"],
            kill_worker_respawned=killed["worker_respawned"],
        )
        if args.skip_redis:
            print("replica_kill: skipped (--skip-redis)", flush=True)
        else:
            durable = replica_kill(ws, args.events // 2)
            print(f"replica_kill: {json.dumps(durable)}", flush=True)
            # Prefixed: the duplicate-events scenario has its own events_sent.
            result.update(
                {k if k.startswith("stream_") else f"stream_{k}": v for k, v in durable.items()}
            )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
