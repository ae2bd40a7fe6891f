"""``feedrank serve-state rebuild``: refill the production profile's serving state.

On the production profile everything a request reads lives in Redis: the
online store's feature rows, and the candidate store (follows, timelines,
seen sets, last visits, popularity). Redis restarted without its data (no
persistence, a new node, a ``FLUSHALL``) answers every read with "nothing";
the service then answers ``degraded: true`` with the reason ``candidate
store empty (not loaded)`` and logs this command's name.

``rebuild`` refills it from what survives Redis: the offline world tables
(a full online fill, not the incremental one, and the candidate store),
then the events served since, from the workspace's event archive
(``data/serving/event_archive``, written by ``feedrank events consume``)
and the embedded event log (``data/serving/events.db``) when present, each
event once per ``event_id``: impressions raise last visits and fill seen
sets, positive actions count toward popularity, and every touched tweet's
counters (the daily value plus the served events) are pushed to Feast.
The candidate store's ``loaded`` marker is written last, so the service
stays degraded until the state is whole. Ends with a ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from core.config_options import workspace_option
from core.errors import UserError
from feedrank.options import Group

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel


@click.group("serve-state", cls=Group)
def serve_state() -> None:
    """The production profile's serving state in Redis (online store, candidates)."""


@serve_state.command("rebuild")
@workspace_option
@click.option(
    "--feast-project",
    envvar="FEEDRANK_FEAST_PROJECT",
    default=None,
    help="Feast project (default: the feature repo's; env FEEDRANK_FEAST_PROJECT).",
)
@click.option(
    "--candidates-redis-url",
    envvar="FEEDRANK_CANDIDATES_REDIS_URL",
    default=None,
    help="redis:// URL of the candidate store (default: the online store's Redis).",
)
@click.option(
    "--candidates-prefix",
    envvar="FEEDRANK_CANDIDATES_PREFIX",
    default="feedrank:",
    show_default=True,
    help="Key prefix of the candidate store (the project is appended).",
)
@click.option(
    "--archive",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Parquet event archive (default: WORKSPACE/data/serving/event_archive).",
)
@click.option(
    "--event-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite event log (default: WORKSPACE/data/serving/events.db).",
)
def rebuild(  # pylint: disable=too-many-arguments  # one per option
    workspace: Path,
    feast_project: str | None,
    candidates_redis_url: str | None,
    candidates_prefix: str,
    archive: Path | None,
    event_log: Path | None,
) -> None:
    """Refill the online store and the candidate store, then replay the served events."""
    from core.feast_store import Workspace, open_store
    from core.results import result_line

    ws = Workspace(workspace)
    store = open_store(ws, "production", feast_project)
    serving = ws.data / "serving"
    report = rebuild_serving_state(
        ws,
        store,
        candidates_redis_url,
        f"{candidates_prefix}{store.config.project}:",
        archive or serving / "event_archive",
        event_log or serving / "events.db",
    )
    click.echo(result_line(report))


def rebuild_serving_state(  # pylint: disable=too-many-arguments,too-many-locals  # the steps
    ws: Any,
    store: Any,
    candidates_redis_url: str | None,
    prefix: str,
    archive: Path,
    event_log: Path,
) -> dict[str, Any]:
    """The work of ``rebuild``: returns counts and seconds per step (see the module docstring)."""
    import time

    import redis

    from core.actions import load_actions
    from features.online import fill_online
    from serving.candidates import load_redis_candidates, mark_loaded
    from serving.redis_clients import client_from_url, online_store_client
    from simulation.world import load_world_config, world_end

    started = time.perf_counter()
    actions = load_actions()
    end = world_end(load_world_config(ws.world))
    _forget_fill(ws, store.config.project)
    try:
        online_rows = fill_online(store, ws, end)
    except redis.RedisError as exc:
        raise UserError(f"online store: {exc}") from exc
    filled = time.perf_counter()
    slow = 30.0  # a bulk load, not a request: room for big pipelines
    client = (
        client_from_url(candidates_redis_url, slow)
        if candidates_redis_url
        else online_store_client(store, slow)
    )
    try:
        counts = load_redis_candidates(client, ws.world, actions, prefix, mark=False)
        loaded = time.perf_counter()
        events = _served_events(archive, event_log)
        replay = _replay(store, client, prefix, events, actions, int(end.timestamp() * 1e6))
        mark_loaded(client, prefix, {**counts, "replayed_events": replay["events"]})
    except redis.RedisError as exc:
        raise UserError(f"candidate store: {exc}") from exc
    finally:
        client.close()
    done = time.perf_counter()
    return {
        "project": store.config.project,
        "online_rows": sum(online_rows.values()),
        **{f"candidates_{k}": v for k, v in counts.items()},
        **replay,
        "online_seconds": round(filled - started, 3),
        "candidates_seconds": round(loaded - filled, 3),
        "replay_seconds": round(done - loaded, 3),
        "seconds": round(done - started, 3),
    }


def _forget_fill(ws: Any, project: str) -> None:
    """Drop the project's incremental-fill state: the next fill writes every view whole."""
    from features.online import _STATE_FILE  # pylint: disable=protected-access

    path = ws.data / "feast" / _STATE_FILE
    if not path.exists():
        return
    state = json.loads(path.read_text())
    if state.pop(project, None) is not None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def _served_events(archive: Path, event_log: Path) -> Any:
    """The served events (archive and SQLite log), once per ``event_id``, oldest first."""
    import numpy as np
    import pyarrow as pa

    from core.actions import load_actions
    from serving.event_stream import events_table, read_archive
    from serving.events import EventLog

    tables = [events_table([])]
    if archive.is_dir():
        tables.append(read_archive(archive))
    if event_log.is_file():
        log_ = EventLog(event_log, load_actions())
        try:
            tables.append(log_.to_table())
        finally:
            log_.close()
    schema = tables[0].schema
    table = pa.concat_tables(t.select(schema.names).cast(schema) for t in tables)
    table = table.sort_by([("timestamp", "ascending"), ("event_id", "ascending")])
    ids = np.asarray(table["event_id"].to_pylist(), dtype=object).astype(str)
    _, first = np.unique(ids, return_index=True)
    return table.take(pa.array(np.sort(first), pa.int64()))


def _replay(  # pylint: disable=too-many-arguments  # the collaborators
    store: Any, client: Any, prefix: str, events: Any, actions: Any, end_us: int
) -> dict[str, int]:
    """Apply served events to the candidate store and push the touched tweets' counters."""
    from collections import defaultdict

    from core.actions import IMPRESSION
    from serving.candidates import RedisCandidates
    from serving.event_stream import feast_publisher
    from serving.events import counter_names, counter_of
    from serving.ingest import online_counters

    user = events["user_id"].to_pylist()
    tweet = events["tweet_id"].to_pylist()
    action = events["action"].to_pylist()
    ts_us = events["timestamp"].cast("int64").to_pylist()
    positive = set(actions.positive)
    impressions = [
        (u, t, s) for u, t, a, s in zip(user, tweet, action, ts_us, strict=True) if a == IMPRESSION
    ]
    engaged = [t for t, a in zip(tweet, action, strict=True) if a in positive]
    RedisCandidates(client, prefix).record(impressions, engaged)
    names = counter_names(actions)
    added: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    latest: dict[int, int] = {}
    for t, a, s in zip(tweet, action, ts_us, strict=True):
        added[t][counter_of(a)] += 1
        latest[t] = max(latest.get(t, end_us + 1), s)
    pushed = 0
    if added:
        tweets = sorted(added)
        base = online_counters(store, names, tweets)
        counters = {
            t: {n: base.get(t, {}).get(n, 0) + added[t].get(n, 0) for n in names} for t in tweets
        }
        pushed = feast_publisher(store, names)(counters, latest)
    return {
        "events": len(user),
        "impressions": len(impressions),
        "engagements": len(engaged),
        "pushed_tweets": pushed,
    }
