"""``feedrank events consume``: apply the production profile's event stream.

``POST /events`` on the production profile only appends to a shared Redis
stream (:mod:`serving.event_stream`). This process reads it as one consumer
of a consumer group: it counts every event exactly once per ``event_id``
(however many consumers run, and whichever of them dies), pushes the tweets'
counters to Feast, updates the Redis candidate store and archives the
events to parquet for training, then acknowledges them. Run one or more per
deployment; ``--until-idle`` drains the stream and exits (tests, CI, batch jobs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from core.config_options import workspace_option
from core.errors import UserError
from core.workspace import Profile
from feedrank.options import Group, profile_option

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel


@click.group(cls=Group)
def events() -> None:
    """The production profile's event stream: consume it into counters, Feast and an archive."""


@events.command("consume")
@workspace_option
@profile_option(envvar="FEEDRANK_FEAST_PROFILE")
@click.option(
    "--feast-project",
    envvar="FEEDRANK_FEAST_PROJECT",
    default=None,
    help="Feast project (default: the feature repo's; env FEEDRANK_FEAST_PROJECT).",
)
@click.option(
    "--stream-url",
    envvar="FEEDRANK_EVENT_STREAM_URL",
    default=None,
    help="redis:// URL of the event stream (env FEEDRANK_EVENT_STREAM_URL).",
)
@click.option(
    "--candidates-redis-url",
    envvar="FEEDRANK_CANDIDATES_REDIS_URL",
    default=None,
    help="redis:// URL of the candidate store (default: the online store's Redis).",
)
@click.option("--group", default=None, help="Consumer group (default: <feast project>:consumers).")
@click.option("--consumer", default=None, help="This consumer's name (default: hostname-pid).")
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option(
    "--min-idle-ms",
    type=click.IntRange(min=1),
    default=30_000,
    show_default=True,
    help="Claim entries another consumer left unacknowledged this long (it is presumed dead).",
)
@click.option("--until-idle", is_flag=True, help="Exit once nothing is new or pending.")
@click.option(
    "--archive",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Parquet archive folder (default: WORKSPACE/data/serving/event_archive).",
)
def consume(  # pylint: disable=too-many-arguments,too-many-locals  # one per option
    workspace: Path,
    profile: Profile,
    feast_project: str | None,
    stream_url: str | None,
    candidates_redis_url: str | None,
    group: str | None,
    consumer: str | None,
    batch: int,
    min_idle_ms: int,
    until_idle: bool,
    archive: Path | None,
) -> None:
    """Apply the event stream exactly once per event_id: counters, Feast, candidates, archive.

    Prints a JSON summary when it stops (with --until-idle).
    """
    import redis

    from core.actions import load_actions
    from core.feast_layout import feast_redis_client
    from core.feast_store import Workspace, open_store
    from serving.candidates import CandidateStoreUnavailable, RedisCandidates
    from serving.event_stream import (
        RedisEventStream,
        StreamConsumer,
        default_consumer_name,
        feast_publisher,
    )
    from serving.events import counter_names
    from serving.features import FeatureStoreUnavailable
    from serving.ingest import online_counters

    if profile != "production":
        raise UserError("--profile: the event stream belongs to the production profile")
    if not stream_url:
        raise UserError("--stream-url (or FEEDRANK_EVENT_STREAM_URL) is required")
    ws = Workspace(workspace)
    store = open_store(ws, profile, feast_project)
    project = store.config.project
    try:
        stream = RedisEventStream.from_url(stream_url, project)
    except (RuntimeError, redis.RedisError) as exc:
        raise UserError(f"--stream-url {stream_url}: {exc}") from exc
    candidates_client = (
        redis.Redis.from_url(
            candidates_redis_url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=None
        )
        if candidates_redis_url
        else feast_redis_client(store)
    )
    prefix = os.environ.get("FEEDRANK_CANDIDATES_PREFIX", "feedrank:")
    candidates = RedisCandidates(candidates_client, f"{prefix}{project}:")
    actions = load_actions()
    names = counter_names(actions)
    worker = StreamConsumer(
        stream,
        group or f"{project}:consumers",
        consumer or default_consumer_name(),
        counters=names,
        seed=lambda tweets: online_counters(store, names, tweets),
        publish=feast_publisher(store, names),
        record=candidates.record,
        positive=list(actions.positive),
        archive=archive or ws.data / "serving" / "event_archive",
    )
    try:
        report = worker.run(batch=batch, min_idle_ms=min_idle_ms, until_idle=until_idle)
    except (redis.RedisError, FeatureStoreUnavailable, CandidateStoreUnavailable) as exc:
        raise UserError(
            f"event consumer stopped: {exc} (unacknowledged events are applied on restart)"
        ) from exc
    summary = {k: v for k, v in vars(report).items() if k != "archived_files"}
    summary["archived_files"] = len(report.archived_files)
    click.echo(json.dumps(summary))
