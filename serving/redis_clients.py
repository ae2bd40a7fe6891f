"""The one place the service's Redis clients get their failure policy.

A request waits on Redis synchronously, inside the worker's event loop: a
client without socket timeouts hangs the worker for as long as a dead or
stalled Redis takes to answer (7 s for one request of an 8 s outage before
this module), and redis-py's default retries (3, with backoff) multiply
that. So every client the service builds (the candidate store's, from
``FEEDRANK_CANDIDATES_REDIS_URL`` or from the online store's address) gives
up after :data:`REDIS_TIMEOUT` seconds on a connect or a reply, and never
retries inside a request: a failed call becomes a fallback answer, and the
next request tries a fresh connection.

Feast's own client (clusters and sentinels, whose clients are not rebuilt
here) keeps Feast's settings; :func:`online_store_client` says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from feast import FeatureStore

REDIS_TIMEOUT = 0.05
"""Seconds a connect or a reply may take: under the feature deadline (default 300 ms)."""


def no_retry() -> Retry:
    """No retry: a request's Redis call fails once, fast."""
    return Retry(NoBackoff(), 0)


def client_options(timeout: float = REDIS_TIMEOUT) -> dict[str, Any]:
    """The keyword arguments of the policy: connect and socket timeouts, no retries."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": no_retry(),
        "health_check_interval": 0,
    }


def client_from_url(url: str, timeout: float = REDIS_TIMEOUT) -> redis.Redis:
    """A client of ``url`` (``redis://``, ``rediss://``, ``unix://``) under the policy."""
    return redis.Redis.from_url(url, **client_options(timeout))


def online_store_client(store: FeatureStore, timeout: float = REDIS_TIMEOUT) -> Any:
    """A client of the online store's Redis under the policy.

    A single server gets its own client from Feast's connection string (its
    password and TLS options kept); a cluster or sentinel gets Feast's own
    client, as Feast configures it.
    """
    # Feast only here: the policy above serves clients that never touch Feast
    # (the rate limiter's, loaded by `feedrank keys` too), and Feast takes seconds to import.
    # pylint: disable-next=import-outside-toplevel
    from feast.infra.online_stores.redis import RedisType

    from core.feast_layout import (  # pylint: disable=import-outside-toplevel
        feast_redis_client,
        redis_address,
    )

    config = store.config.online_store
    if config.redis_type != RedisType.redis:
        return feast_redis_client(store)
    nodes, kwargs = redis_address(config)
    options = {**kwargs, **client_options(timeout)}
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **options)


def reply_text(value: bytes | str) -> str:
    """A Redis reply (bytes unless the client decodes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
