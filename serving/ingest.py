"""Event ingestion behind ``POST /events``, kept apart from ranking.

:class:`EventIngestor` owns what a batch of events changes: the durable event
log (:mod:`serving.events`, which dedupes by ``event_id`` and keeps the live
tweet counters), the Feast pushes of those counters, and the live updates of
the candidate store (last visits, seen sets, popularity). The service only
turns HTTP into a call of :meth:`Ingestor.ingest` and its answer back into
HTTP, so ranking code never touches the write path.

It runs in the service's own worker, not as a BentoML dependency service:
a dependency runs as separate workers reached over an HTTP hop, which on two
cores would take CPU from /rank and add a failure mode to /events, while the
log it writes is already shared by every worker through SQLite. On the
production profile a shared durable log stands behind :class:`Ingestor`
(:class:`serving.event_stream.StreamIngestor`): ``ingest`` only appends and
acknowledges, and the consumer process (``feedrank events consume``) does the
counting, pushing and candidate updates done here.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from feast import FeatureStore
from feast.data_source import PushMode

from core.actions import IMPRESSION
from serving.candidates import CandidateSource, CandidateStoreUnavailable
from serving.events import PUSH_SOURCE, EventLog, push_frame, records_of
from serving.features import FeatureStoreUnavailable
from serving.schemas import Event, EventsResponse

log = logging.getLogger("feedrank.serving")


class Ingestor(Protocol):
    """What the service asks of ingestion: the whole write path of ``/events``."""

    def ingest(self, events: Sequence[Event]) -> EventsResponse:
        """Log a validated batch once per ``event_id``; raises FeatureStoreUnavailable
        when nothing was logged and the batch should be retried."""

    def check(self, events: Sequence[Event]) -> None:
        """Raise EventConflict if an ``event_id`` repeats with other content, in
        the batch or against the log; logs nothing. For the events the service
        quarantines, so that a changed resend is still a 409."""

    def close(self) -> None:
        """Release the log and any connection."""


def online_counters(
    store: FeatureStore, names: Sequence[str], tweets: Sequence[int]
) -> dict[int, dict[str, int]]:
    """The online store's current counters of these tweets (the daily batch value).

    Seeds a tweet's live counters, here and in the stream consumer
    (:mod:`serving.event_stream`). Raises FeatureStoreUnavailable if the read fails.
    """
    try:
        found = store.get_online_features(
            features=[f"tweet_engagement:{n}" for n in names],
            entity_rows=[{"tweet_id": t} for t in tweets],
        ).to_dict()
    except Exception as exc:
        raise FeatureStoreUnavailable(f"cannot read tweet counters: {exc}") from exc
    return {t: {n: int(found[n][i] or 0) for n in names} for i, t in enumerate(found["tweet_id"])}


class EventIngestor:
    """Appends to the event log, pushes fresh tweet counters, updates the candidate store.

    Args:
        events_log: the event log; the ingestor closes it. The in-memory
            candidate source reads the same log, which is why it is passed in.
        store: the Feast store the counters are read from (seeds) and pushed to.
        candidates: told about new impressions and engaged tweets.
        positive: the actions that count as engagement for the candidate store.
    """

    def __init__(
        self,
        events_log: EventLog,
        store: FeatureStore,
        candidates: CandidateSource,
        positive: Collection[str],
    ) -> None:
        self.log = events_log
        self.store = store
        self.candidates = candidates
        self.positive = frozenset(positive)

    def ingest(self, events: Sequence[Event]) -> EventsResponse:
        """Log the batch (idempotent on event_id), push counters, update candidates.

        A failed push or candidate update is logged and not raised: the events
        are durable by then and a retry would only find duplicates. A failed
        read of the counters to seed is raised (FeatureStoreUnavailable): the
        transaction rolled back, so the client must retry.
        """
        records = records_of(events)
        pushed = 0

        def publish(counters: Mapping[int, Mapping[str, int]], push_us: Mapping[int, int]) -> None:
            nonlocal pushed
            frame = push_frame(counters, push_us, self.log.counters)
            try:
                self.store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
                pushed = len(frame)
            except Exception:  # pylint: disable=broad-exception-caught  # logged; counters are kept
                log.exception("push of %d tweet counters failed", len(frame))

        result = self.log.append(records, self._online_counters, publish)
        try:
            self.candidates.record(
                [(e.user_id, e.tweet_id, e.ts_us) for e in result.new if e.action == IMPRESSION],
                [e.tweet_id for e in result.new if e.action in self.positive],
            )
        except CandidateStoreUnavailable:
            log.exception("candidate store update failed")
        return EventsResponse(
            received=len(records),
            accepted=len(result.new),
            duplicates=result.duplicates,
            pushed_tweets=pushed,
        )

    def check(self, events: Sequence[Event]) -> None:
        """Raise EventConflict for an id resent with other content; logs nothing."""
        self.log.check(records_of(events))

    def _online_counters(self, tweets: list[int]) -> dict[int, dict[str, int]]:
        """The online store's current counters of these tweets (the daily batch value)."""
        return online_counters(self.store, self.log.counters, tweets)

    def close(self) -> None:
        """Close the event log."""
        self.log.close()
