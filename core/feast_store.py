"""Open the Feast store of a workspace, in the embedded, production or cluster profile.

The repo's paths are relative, so a copy of a workspace (as the tests make)
is a self-contained store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from feast import FeatureStore
from feast.infra.registry.sql import SqlRegistry, feature_view_version_history
from feast.repo_config import RepoConfig

from core.errors import InputError
from core.workspace import Profile, Workspace

PROFILE_FILES: dict[str, str] = {
    "embedded": "feature_store.yaml",
    "production": "feature_store.production.yaml",
    "cluster": "feature_store.cluster.yaml",
}
REDIS_URL_ENV = "FEEDRANK_REDIS_URL"
REGISTRY_URL_ENV = "FEEDRANK_REGISTRY_URL"
RAY_ADDRESS_ENV = "FEEDRANK_RAY_ADDRESS"
"""The Ray cluster of the cluster profile (``ray://host:10001``, ``host:port`` or ``auto``).
Unset, Ray's own ``RAY_ADDRESS`` (set in a ``ray job submit`` job) is used; neither set,
Ray starts in the process, capped to the machine."""
FEATURE_SERVICE = "ranker_v4"
"""The FeatureService new models are trained on (each model records its own)."""


def training_set_path(workspace: Workspace, service: str = FEATURE_SERVICE) -> Path:
    """The point-in-time training set built through ``service``."""
    return workspace.datasets / f"{service}.parquet"


def repo_config(
    workspace: Workspace,
    profile: Profile = "embedded",
    project: str | None = None,
    offline_store: str | None = None,
) -> RepoConfig:
    """Load the profile's feature_store.yaml, with deployment overrides from the environment.

    Args:
        workspace: the workspace whose feature repo to use.
        profile: ``embedded`` (SQLite, files), ``production`` (Redis, SQL registry) or
            ``cluster`` (production with Ray's offline store and compute engine).
        project: override the Feast project (tests use one per test for isolation).
        offline_store: replace the profile's offline store (and drop its compute engine)
            with this type: a Ray task of the cluster profile joins with ``duckdb``.
    """
    path = workspace.repo / PROFILE_FILES[profile]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read Feast config: {exc}") from exc
    if profile != "embedded":
        if os.environ.get(REDIS_URL_ENV):
            raw["online_store"]["connection_string"] = os.environ[REDIS_URL_ENV]
        if os.environ.get(REGISTRY_URL_ENV):
            raw["registry"]["path"] = os.environ[REGISTRY_URL_ENV]
    if profile == "cluster":
        offline, engine = raw["offline_store"], raw["batch_engine"]
        # Ray's workers do not share the driver's working directory: stage absolutely.
        offline["storage_path"] = str((workspace.repo / offline["storage_path"]).resolve())
        address = os.environ.get(RAY_ADDRESS_ENV) or os.environ.get("RAY_ADDRESS")
        if address:
            offline["ray_address"] = engine["ray_address"] = address
    if offline_store:
        raw["offline_store"] = {"type": offline_store}
        raw.pop("batch_engine", None)
    if project:
        raw["project"] = project
    return RepoConfig(repo_path=workspace.repo, **raw)


def open_store(
    workspace: Workspace,
    profile: Profile = "embedded",
    project: str | None = None,
    offline_store: str | None = None,
) -> FeatureStore:
    """A FeatureStore on the workspace's repo in the given profile (see :func:`repo_config`)."""
    config = repo_config(workspace, profile, project, offline_store)
    return FeatureStore(repo_path=str(workspace.repo), config=config)


def drop_project(store: FeatureStore) -> None:
    """Delete one project's online data and registry objects, and nothing else.

    Feast 0.66's ``FeatureStore.teardown()`` deletes every project in the
    registry (it loops over ``list_projects()``), so against a shared SQL
    registry it wipes other users' feature services, and a service started
    meanwhile fails with "Feature service ... does not exist".
    """
    views = store.list_feature_views()
    # pylint: disable-next=protected-access
    store._get_provider().teardown_infra(store.project, views, store.list_entities())
    store.registry.delete_project(store.project, commit=True)
    if isinstance(store.registry, SqlRegistry):
        # Feast 0.66's delete_project leaves the project's view version history,
        # and applying a project of the same name again then fails on its key.
        with store.registry.write_engine.begin() as conn:
            history = feature_view_version_history
            conn.execute(history.delete().where(history.c.project_id == store.project))


def entity_rows(
    store: FeatureStore,
    service: str,
    candidates: Mapping[str, Sequence[int]],
    request_ts: int | Sequence[int],
) -> list[dict[str, int]]:
    """``get_online_features`` rows of a feed's candidates: join keys and request fields.

    Feast wants exactly the request fields the service's on-demand views read
    (``feature_repo/data_sources.py``): ``request_ts``, and ``candidate_author_id``
    (the row's ``author_id``) for services that look pairs up in the user's list.

    Args:
        store: the Feast store.
        service: the FeatureService name.
        candidates: ``user_id``, ``author_id`` and ``tweet_id``, one value per row.
        request_ts: the request time (Unix seconds), one for all rows or one per row.
    """
    fs = store.get_feature_service(service)
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    needed = {
        field.name
        for projection in fs.feature_view_projections
        if projection.name in odfvs
        for source in odfvs[projection.name].source_request_sources.values()
        for field in source.schema
    }
    users, authors, tweets = (candidates[k] for k in ("user_id", "author_id", "tweet_id"))
    stamps = [request_ts] * len(users) if isinstance(request_ts, int) else request_ts
    rows = []
    for u, a, t, ts in zip(users, authors, tweets, stamps, strict=True):
        row = {"user_id": int(u), "author_id": int(a), "tweet_id": int(t)}
        fields = {"request_ts": int(ts), "candidate_author_id": int(a)}
        rows.append(row | {k: v for k, v in fields.items() if k in needed})
    return rows
