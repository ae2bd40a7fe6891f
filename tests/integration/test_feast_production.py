"""The production profile for real: Redis online store, SQL registry on PostgreSQL."""

import pytest

from core.feast_store import FEATURE_SERVICE, drop_project, entity_rows, open_store
from core.workspace import Workspace
from features.online import apply_repo, fill_online, materialize_feast
from simulation.world import load_world_config, world_end

pytestmark = pytest.mark.integration


def _entity_rows(ws: Workspace) -> list[dict[str, int]]:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    training = pq.read_table(ws.datasets / f"{FEATURE_SERVICE}.parquet").to_pandas()
    rows = training.sample(150, random_state=2)
    return entity_rows(open_store(ws), FEATURE_SERVICE, rows, 1_768_000_000)


def _read(store, rows: list[dict[str, int]]) -> dict:
    service = store.get_feature_service(FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=rows).to_dict()


def test_redis_and_sql_registry_serve_what_the_embedded_store_serves(
    tiny_workspace: Workspace, feast_project: str
) -> None:
    end = world_end(load_world_config(tiny_workspace.world))
    fast = open_store(tiny_workspace, "production", project=feast_project)
    feast = open_store(tiny_workspace, "production", project=f"{feast_project}f")
    try:
        assert apply_repo(fast, tiny_workspace)
        apply_repo(feast, tiny_workspace)
        assert fast.get_feature_service(FEATURE_SERVICE).name == FEATURE_SERVICE
        fill_online(fast, tiny_workspace, end)
        materialize_feast(feast, tiny_workspace, end)
        rows = _entity_rows(tiny_workspace)
        embedded = _read(open_store(tiny_workspace), rows)
        from_redis_fast, from_redis_feast = _read(fast, rows), _read(feast, rows)
        assert from_redis_fast.keys() == embedded.keys()
        for name in embedded:
            assert from_redis_fast[name] == embedded[name], name
            assert from_redis_feast[name] == embedded[name], name
        assert any(v is not None for v in from_redis_fast["ua_positive_rate"])
    finally:
        drop_project(fast)
        drop_project(feast)


def test_registry_lives_in_postgres(tiny_workspace: Workspace, feast_project: str) -> None:
    store = open_store(tiny_workspace, "production", project=feast_project)
    try:
        apply_repo(store, tiny_workspace)
        # A second store object (another process, in production) sees the same registry.
        other = open_store(tiny_workspace, "production", project=feast_project)
        assert {fv.name for fv in other.list_feature_views()} == {
            "user_stats",
            "author_stats",
            "tweet_content",
            "tweet_engagement",
            "user_author_affinity",
            "user_top_authors",
        }
        assert store.config.registry.registry_type == "sql"
        assert store.config.online_store.type == "redis"
    finally:
        drop_project(store)


def test_dropping_a_project_leaves_the_other_projects_alone(
    tiny_workspace: Workspace, feast_project: str
) -> None:
    kept = open_store(tiny_workspace, "production", project=feast_project)
    dropped = open_store(tiny_workspace, "production", project=f"{feast_project}d")
    apply_repo(kept, tiny_workspace)
    apply_repo(dropped, tiny_workspace)
    try:
        drop_project(dropped)
        fresh = open_store(tiny_workspace, "production", project=feast_project)
        assert fresh.get_feature_service(FEATURE_SERVICE).name == FEATURE_SERVICE
        other = open_store(tiny_workspace, "production", project=f"{feast_project}d")
        assert not other.list_feature_views()
        # The name is free again (Feast's own delete_project leaves the view history).
        assert apply_repo(other, tiny_workspace)
        drop_project(other)
    finally:
        drop_project(kept)
