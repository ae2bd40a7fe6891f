"""The shared, durable event log of the production profile: Redis Streams, and its consumer.

On the embedded profile ``POST /events`` writes a per-process SQLite log
(:mod:`serving.events`). A deployment runs many replicas with throw-away
disks, so on the production profile every replica appends to one shared
stream instead, and a separate process (``feedrank events consume``,
:class:`StreamConsumer`) does the counting, Feast pushes, candidate updates
and archiving that the SQLite path does inside the request.

The log is behind a narrow protocol, :class:`EventStream`: append a batch
(idempotent per ``event_id``, all or nothing), read for a consumer group,
claim what dead consumers left pending, acknowledge. A Kafka topic (Amazon
MSK) with a consumer group and an idempotent producer offers the same, but
the protocol alone is not the whole seam: :class:`StreamIngestor` also asks
the stream for conflicts (:meth:`RedisEventStream.check`) and
:class:`StreamConsumer` keeps its exactly-once markers and counters in the
stream's Redis, so a Kafka log would need those two parts written for it too.
:class:`RedisEventStream` is the one implementation.

Retention: after each acknowledged batch the consumer trims the stream
(:meth:`RedisEventStream.trim`, ``XTRIM MINID``) to the oldest entry some
group still needs, so a Redis with ``noeviction`` does not fill up; the
parquet archive keeps every event. A consumer group created later starts at
the oldest entry left.

Durability: :meth:`RedisEventStream.append` runs one Lua script per batch
(atomic in Redis): per event it looks up ``<prefix>event:<event_id>``, which
holds a digest of the event's content. Same digest: a retry, not appended.
Another digest: :class:`~serving.events.EventConflict` and nothing of the
batch is appended. New: the key is set and the event XADDed. The reply comes
after Redis has written the script's effects to its AOF; with
``appendfsync always`` that write is fsynced before the reply, so an
acknowledged batch survives a crash of the Redis host too (``everysec``
could lose the last second). :func:`check_durability` refuses a Redis
without AOF at startup (a managed Redis that refuses ``CONFIG``: a warning).

Exactly once: :meth:`StreamConsumer.apply_batch` counts events in one Lua
script that sets an applied-marker per ``event_id`` (SET NX) and increments
the tweet's counter hash only when the marker was new, so a batch delivered
twice (a consumer died between applying and XACK, and another claimed its
entries) is counted once. Pushes carry the absolute counters, seen sets and
last visits are idempotent, and the archive is rewritten under the same
name, so replaying them is harmless; only the popularity increment of an
engaged tweet follows the marker (at most once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import redis
from feast import FeatureStore
from feast.data_source import PushMode

from core.actions import IMPRESSION
from core.tables import SERVED_EVENTS
from serving.events import (
    PUSH_SOURCE,
    EventConflict,
    EventRecord,
    counter_of,
    push_frame,
    records_of,
    unique_by_id,
)
from serving.features import FeatureStoreUnavailable
from serving.redis_clients import reply_text
from serving.schemas import Event, EventsResponse

log = logging.getLogger("feedrank.serving")

KEY_TTL_SECONDS = 30 * 86_400
"""How long idempotency keys and applied-markers live: longer than the accepted event age."""

_APPEND = """
local n = #KEYS - 1
local ttl = tonumber(ARGV[1])
local state = {}
local conflicts = {}
for i = 1, n do
  local digest = redis.call('GET', KEYS[i + 1])
  if digest == false then
    state[i] = 0
  elseif digest == ARGV[2 * i] then
    state[i] = 1
  else
    conflicts[#conflicts + 1] = i
  end
end
if #conflicts > 0 then
  return {-1, conflicts}
end
local new = {}
for i = 1, n do
  if state[i] == 0 then
    redis.call('SET', KEYS[i + 1], ARGV[2 * i], 'EX', ttl)
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[2 * i + 1])
    new[#new + 1] = i
  end
end
return {0, new}
"""
"""KEYS: the stream, then one idempotency key per event; ARGV: ttl, then digest, payload each."""

_APPLY = """
local ttl = tonumber(ARGV[1])
local ncounters = tonumber(ARGV[2])
local ntweets = tonumber(ARGV[3])
local names = {}
for c = 1, ncounters do names[c] = ARGV[3 + c] end
local pos = 4 + ncounters
for t = 1, ntweets do
  local hkey = ARGV[pos]
  local seeded = ARGV[pos + 1]
  if seeded == '1' and redis.call('EXISTS', hkey) == 0 then
    for c = 1, ncounters do
      redis.call('HSET', hkey, names[c], ARGV[pos + 1 + c])
    end
  end
  pos = pos + 2 + ncounters
end
local applied = {}
while pos <= #ARGV do
  local marker, hkey, counter = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  if redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
    redis.call('HINCRBY', hkey, counter, 1)
    applied[#applied + 1] = 1
  else
    applied[#applied + 1] = 0
  end
  pos = pos + 3
end
return applied
"""
"""Seeds (if absent) then, per event, SET NX its applied-marker and count it only if new."""


def _payload(record: EventRecord) -> str:
    """The event as stored in the stream (compact JSON, fixed field order).

    The request id and propensity follow only when sent: an event without them
    keeps the payload, and so the idempotency digest, it had before they existed.
    """
    fields = [
        record.event_id,
        record.user_id,
        record.tweet_id,
        record.action,
        record.dwell_seconds,
        record.ts_us,
    ]
    if record.request_id is not None or record.propensity is not None:
        fields += [record.request_id, record.propensity]
    return json.dumps(fields, separators=(",", ":"))


def _digest(payload: str) -> str:
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def _record(payload: bytes | str) -> EventRecord:
    """An event read from the stream; entries written before request ids existed have 6 fields."""
    event_id, user, tweet, action, dwell, ts_us, *served = json.loads(payload)
    request_id, propensity = served or (None, None)
    return EventRecord(
        str(event_id), int(user), int(tweet), str(action), dwell, int(ts_us), request_id, propensity
    )


def stream_client(url: str) -> redis.Redis:
    """A client for the stream's Redis: 0.5 s to connect, 1 s per call, no retries.

    A retry loop inside a request would hide an outage behind seconds of
    waiting; the caller answers 503 and the client retries the batch.
    """
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=None, retry_on_timeout=False
    )


def check_durability(client: Any) -> str:
    """Refuse a Redis without AOF; returns its ``appendfsync`` (``unknown`` if CONFIG is refused).

    Raises:
        RuntimeError: the server answers ``appendonly no``.
    """
    try:
        appendonly = client.config_get("appendonly").get("appendonly")
        fsync = client.config_get("appendfsync").get("appendfsync")
    except redis.ResponseError as exc:  # managed Redis (ElastiCache, MemoryDB) refuses CONFIG
        log.warning("event stream: cannot check AOF (%s); assuming the provider persists", exc)
        return "unknown"
    if appendonly != "yes":
        raise RuntimeError(
            "the event stream's Redis runs without AOF (appendonly no): acknowledged "
            "events could be lost; start it with --appendonly yes --appendfsync always"
        )
    if fsync != "always":
        log.warning("event stream: appendfsync %s may lose the last second of events", fsync)
    return str(fsync)


@dataclass(frozen=True)
class StreamAppend:
    """What one append did."""

    new: list[EventRecord]
    duplicates: int


@dataclass(frozen=True)
class StreamEntry:
    """One event read from the stream, with the id to acknowledge it by."""

    entry_id: str
    event: EventRecord


class EventStream(Protocol):
    """A shared, durable, idempotent event log read by consumer groups (Redis Streams, Kafka)."""

    def append(self, records: Sequence[EventRecord]) -> StreamAppend:
        """Append the events not appended yet, durably and all or nothing; raises EventConflict."""

    def read(self, group: str, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        """New entries for ``consumer`` of ``group`` (waits up to ``block_ms``)."""

    def claim_stale(
        self, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        """Entries delivered to other consumers and not acknowledged for ``min_idle_ms``."""

    def ack(self, group: str, entry_ids: Sequence[str]) -> None:
        """Mark entries done for the group."""

    def pending(self, group: str) -> int:
        """Entries delivered to the group and not acknowledged yet."""


class RedisEventStream:
    """:class:`EventStream` on a Redis stream; keys start with ``feedrank-stream:<project>:``.

    Args:
        client: a client from :func:`stream_client`.
        project: the Feast project (names the stream and its keys).
        ttl_seconds: lifetime of idempotency keys (a resend after that is new).
    """

    def __init__(self, client: Any, project: str, ttl_seconds: int = KEY_TTL_SECONDS) -> None:
        self.client: Any = client  # redis.Redis (typed Any: its stubs mix in async returns)
        self.prefix = f"feedrank-stream:{project}:"
        self.key = f"{self.prefix}events"
        self.ttl = ttl_seconds
        self._append = client.register_script(_APPEND)

    @classmethod
    def from_url(cls, url: str, project: str, check: bool = True) -> RedisEventStream:
        """Connect (and, with ``check``, refuse a Redis without AOF)."""
        client = stream_client(url)
        if check:
            check_durability(client)
        return cls(client, project)

    def append(self, records: Sequence[EventRecord]) -> StreamAppend:
        """One Lua script per batch: dedupe by ``event_id``, refuse conflicts, XADD the rest."""
        batch = list(unique_by_id(records).values())
        if not batch:
            return StreamAppend([], len(records))
        argv: list[Any] = [self.ttl]
        for record in batch:
            payload = _payload(record)
            argv += [_digest(payload), payload]
        keys = [self.key, *(f"{self.prefix}event:{r.event_id}" for r in batch)]
        status, indices = self._append(keys=keys, args=argv)
        if int(status) < 0:
            raise EventConflict([batch[int(i) - 1].event_id for i in indices])
        new = [batch[int(i) - 1] for i in indices]
        return StreamAppend(new, len(records) - len(new))

    def check(self, records: Sequence[EventRecord]) -> None:
        """Raise EventConflict if an id repeats with other content, in the batch or the stream."""
        batch = list(unique_by_id(records).values())
        if not batch:
            return
        stored = self.client.mget([f"{self.prefix}event:{r.event_id}" for r in batch])
        changed = [
            r.event_id
            for r, digest in zip(batch, stored, strict=True)
            if digest is not None and reply_text(digest) != _digest(_payload(r))
        ]
        if changed:
            raise EventConflict(changed)

    def ensure_group(self, group: str) -> None:
        """Create the consumer group (from the stream's start) if it does not exist."""
        try:
            self.client.xgroup_create(self.key, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, group: str, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        """XREADGROUP of new entries (``>``)."""
        found = self.client.xreadgroup(
            group, consumer, {self.key: ">"}, count=count, block=block_ms or None
        )
        return [
            StreamEntry(reply_text(entry_id), _record(fields[b"e"]))
            for _, entries in found or []
            for entry_id, fields in entries
            if fields
        ]

    def claim_stale(
        self, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[StreamEntry]:
        """XAUTOCLAIM of entries idle for ``min_idle_ms`` (their consumer is presumed dead)."""
        reply = self.client.xautoclaim(
            self.key, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
        )
        return [
            StreamEntry(reply_text(entry_id), _record(fields[b"e"]))
            for entry_id, fields in reply[1]
            if fields  # an entry trimmed meanwhile comes back empty
        ]

    def ack(self, group: str, entry_ids: Sequence[str]) -> None:
        """XACK."""
        if entry_ids:
            self.client.xack(self.key, group, *entry_ids)

    def pending(self, group: str) -> int:
        """XPENDING's count."""
        return int(self.client.xpending(self.key, group)["pending"])

    def trim(self) -> int:
        """Delete the entries every group has acknowledged (``XTRIM MINID``); returns how many.

        Each group still needs its oldest pending entry, or else everything
        after its last delivered one. Reading the groups before their pending
        lists is safe against consumers running meanwhile: delivery only moves
        forward and acknowledged entries never return to pending.
        """
        floors = []
        for info in self.client.xinfo_groups(self.key):
            summary = self.client.xpending(self.key, info["name"])
            if int(summary["pending"]):
                floors.append(_entry_id(summary["min"]))
            else:
                ms, seq = _entry_id(info["last-delivered-id"])
                floors.append((ms, seq + 1))
        if not floors:
            return 0
        ms, seq = min(floors)
        return int(self.client.xtrim(self.key, minid=f"{ms}-{seq}", approximate=False))

    def undelivered(self, group: str) -> int:
        """Entries the group has not been given yet (its lag)."""
        for info in self.client.xinfo_groups(self.key):
            if reply_text(info["name"]) == group:
                lag = info.get("lag")
                if lag is not None:
                    return int(lag)
                last = reply_text(info["last-delivered-id"])
                return len(self.client.xrange(self.key, f"({last}", "+", count=1))
        return int(self.client.xlen(self.key))


def _entry_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id ``<ms>-<seq>`` as a pair that sorts like Redis does."""
    ms, seq = reply_text(value).split("-")
    return int(ms), int(seq)


class StreamIngestor:
    """The production profile's :class:`~serving.ingest.Ingestor`: append and acknowledge.

    No counters, pushes or candidate updates in the request: the consumer
    does them. A stream that cannot be reached is FeatureStoreUnavailable
    (503: retry the batch); the batch was appended whole or not at all.
    """

    def __init__(self, stream: RedisEventStream) -> None:
        self.stream = stream

    def ingest(self, events: Sequence[Event]) -> EventsResponse:
        """Append the batch once per ``event_id``; EventConflict refuses all of it."""
        records = records_of(events)
        try:
            result = self.stream.append(records)
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"event stream unavailable: {exc}") from exc
        return EventsResponse(
            received=len(records),
            accepted=len(result.new),
            duplicates=result.duplicates,
            pushed_tweets=0,
        )

    def check(self, events: Sequence[Event]) -> None:
        """Raise EventConflict for an id resent with other content; appends nothing."""
        try:
            self.stream.check(records_of(events))
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"event stream unavailable: {exc}") from exc

    def close(self) -> None:
        """Close the stream's connections."""
        self.stream.client.close()


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per process, readable in XINFO."""
    return f"{socket.gethostname()}-{os.getpid()}"


Seeder = Callable[[list[int]], Mapping[int, Mapping[str, int]]]
Publisher = Callable[[Mapping[int, Mapping[str, int]], Mapping[int, int]], int]
Recorder = Callable[[Sequence[tuple[int, int, int]], Sequence[int]], None]


@dataclass
class ConsumeReport:
    """What a consumer run did."""

    entries: int = 0
    applied: int = 0
    already_applied: int = 0
    claimed: int = 0
    pushed_tweets: int = 0
    batches: int = 0
    trimmed: int = 0
    archived_files: list[str] = field(default_factory=list)


class StreamConsumer:  # pylint: disable=too-many-instance-attributes  # its collaborators
    """Applies the stream's events to counters, Feast, candidates and the parquet archive.

    Args:
        stream: the event stream.
        group: the consumer group.
        consumer: this consumer's name (unique per process).
        counters: the counter names (impressions, then one per action).
        seed: current counters of tweets not counted live yet (the online store's batch value).
        publish: pushes absolute counters with their event times; returns tweets pushed.
        record: the candidate store's ``record(impressions, engaged_tweets)``.
        positive: actions that count as engagement for the candidate store.
        archive: folder of the parquet archive (``date=YYYY-MM-DD/<first entry>.parquet``).
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        stream: RedisEventStream,
        group: str,
        consumer: str,
        *,
        counters: Sequence[str],
        seed: Seeder,
        publish: Publisher,
        record: Recorder,
        positive: Sequence[str],
        archive: Path,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.counters = list(counters)
        self.seed = seed
        self.publish = publish
        self.record = record
        self.positive = frozenset(positive)
        self.archive = archive
        self._apply = stream.client.register_script(_APPLY)

    def counter_key(self, tweet_id: int) -> str:
        """The hash of one tweet's live counters."""
        return f"{self.stream.prefix}counters:{tweet_id}"

    def run(
        self,
        batch: int = 500,
        block_ms: int = 500,
        min_idle_ms: int = 30_000,
        until_idle: bool = False,
        report: ConsumeReport | None = None,
    ) -> ConsumeReport:
        """Claim stale entries, then read new ones, apply and acknowledge; forever or until idle.

        ``until_idle`` returns once nothing is new and nothing is pending
        (entries pending with a live consumer are waited for, claimed when stale).
        ``block_ms`` stays under the client's 1 s socket timeout.
        """
        report = report or ConsumeReport()
        self.stream.ensure_group(self.group)
        while True:
            claimed = self.stream.claim_stale(self.group, self.consumer, min_idle_ms, batch)
            if claimed:
                report.claimed += len(claimed)
                self.apply_batch(claimed, report)
                continue
            entries = self.stream.read(self.group, self.consumer, batch, block_ms)
            if entries:
                self.apply_batch(entries, report)
                continue
            if (
                until_idle
                and self.stream.pending(self.group) == 0
                and self.stream.undelivered(self.group) == 0
            ):
                return report

    def apply_batch(self, entries: Sequence[StreamEntry], report: ConsumeReport) -> None:
        """Count (exactly once), push, record candidates, archive, then XACK."""
        events = [e.event for e in entries]
        tweets = sorted({e.tweet_id for e in events})
        with self.stream.client.pipeline(transaction=False) as pipe:
            for tweet in tweets:
                pipe.exists(self.counter_key(tweet))
            exists = pipe.execute()
        fresh = [t for t, found in zip(tweets, exists, strict=True) if not found]
        seeds = self.seed(fresh) if fresh else {}
        argv: list[Any] = [self.stream.ttl, len(self.counters), len(fresh), *self.counters]
        for tweet in fresh:
            values = seeds.get(tweet, {})
            argv += [self.counter_key(tweet), "1", *(int(values.get(c, 0)) for c in self.counters)]
        for event in events:
            argv += [
                f"{self.stream.prefix}applied:{event.event_id}",
                self.counter_key(event.tweet_id),
                counter_of(event.action),
            ]
        applied = [bool(int(a)) for a in self._apply(args=argv)]
        report.applied += sum(applied)
        report.already_applied += len(applied) - sum(applied)
        report.pushed_tweets += self._push(tweets, events)
        self.record(
            [(e.user_id, e.tweet_id, e.ts_us) for e in events if e.action == IMPRESSION],
            [
                e.tweet_id
                for e, new in zip(events, applied, strict=True)
                if new and e.action in self.positive
            ],
        )
        report.archived_files += [str(p) for p in self._archive(entries)]
        self.stream.ack(self.group, [e.entry_id for e in entries])
        try:
            report.trimmed += self.stream.trim()
        except redis.RedisError as exc:  # applied and acknowledged: retention can wait
            log.warning("stream not trimmed after batch %s: %s", entries[0].entry_id, exc)
        report.entries += len(entries)
        report.batches += 1

    def _push(self, tweets: list[int], events: Sequence[EventRecord]) -> int:
        """Absolute counters of the touched tweets, timed by their latest event (never earlier
        than the tweet's previous push, so the online store keeps the newer value)."""
        latest: dict[int, int] = {}
        for event in events:
            latest[event.tweet_id] = max(latest.get(event.tweet_id, 0), event.ts_us)
        with self.stream.client.pipeline(transaction=False) as pipe:
            for tweet in tweets:
                pipe.hgetall(self.counter_key(tweet))
            stored = pipe.execute()
        counters = {
            t: {reply_text(k): int(v) for k, v in values.items()}
            for t, values in zip(tweets, stored, strict=True)
        }
        pushed_key = f"{self.stream.prefix}pushed_us"
        previous = self.stream.client.hmget(pushed_key, tweets)
        push_us = {
            t: max(latest[t], int(p) + 1 if p is not None else 0)
            for t, p in zip(tweets, previous, strict=True)
        }
        pushed = self.publish(counters, push_us)
        self.stream.client.hset(pushed_key, mapping=push_us)
        return pushed

    def _archive(self, entries: Sequence[StreamEntry]) -> list[Path]:
        """Parquet in the ``events`` schema, one file per day and batch, written atomically.

        Named by the batch's first entry id: a batch claimed again after a
        crash is grouped the same way only by chance, so readers dedupe on
        ``event_id`` (:func:`read_archive`).
        """
        by_day: dict[str, list[EventRecord]] = {}
        for entry in entries:
            day = datetime.fromtimestamp(entry.event.ts_us / 1e6, UTC).date().isoformat()
            by_day.setdefault(day, []).append(entry.event)
        written = []
        name = entries[0].entry_id.replace("-", "_")
        for day, events in by_day.items():
            folder = self.archive / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{name}.parquet"
            temp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
            pq.write_table(events_table(events), temp)
            os.replace(temp, target)
            written.append(target)
        return written


def feast_publisher(store: FeatureStore, names: Sequence[str]) -> Publisher:
    """Pushes absolute counters to the online store (``PUSH_SOURCE``); raises on failure,
    so the batch stays unacknowledged and is pushed again."""

    def publish(counters: Mapping[int, Mapping[str, int]], push_us: Mapping[int, int]) -> int:
        if not counters:
            return 0
        frame = push_frame(counters, push_us, names)
        try:
            store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
        except Exception as exc:
            raise FeatureStoreUnavailable(f"push of {len(frame)} tweet counters: {exc}") from exc
        return len(frame)

    return publish


def events_table(events: Sequence[EventRecord]) -> pa.Table:
    """Events in the schema of ``core.tables.SERVED_EVENTS``."""
    schema = SERVED_EVENTS.schema
    columns = {
        "event_id": [e.event_id for e in events],
        "user_id": [e.user_id for e in events],
        "tweet_id": [e.tweet_id for e in events],
        "action": [e.action for e in events],
        "dwell_seconds": [e.dwell_seconds for e in events],
        "timestamp": [e.ts_us for e in events],
        "request_id": [e.request_id for e in events],
        "propensity": [e.propensity for e in events],
    }
    arrays = []
    for name in schema.names:
        kind = schema.field(name).type
        if pa.types.is_timestamp(kind):
            arrays.append(pa.array(columns[name], pa.int64()).cast(kind))
        else:
            arrays.append(pa.array(columns[name], kind))
    return pa.Table.from_arrays(arrays, schema=schema)


def _served_columns(table: pa.Table) -> pa.Table:
    """An archive file in the SERVED_EVENTS schema (files archived before its last two
    columns existed get them as nulls)."""
    schema = SERVED_EVENTS.schema
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def read_archive(folder: Path) -> pa.Table:
    """The archive's events, once per ``event_id`` (a replayed batch may be archived twice)."""
    files = sorted(folder.glob("date=*/*.parquet"))
    if not files:
        return events_table([])
    table = pa.concat_tables(_served_columns(pq.read_table(f)) for f in files)
    ids = table["event_id"].to_pylist()
    first: dict[str, int] = {}
    for i, event_id in enumerate(ids):
        first.setdefault(event_id, i)
    return table.take(sorted(first.values()))
