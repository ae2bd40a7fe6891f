"""Open the Feast store of a workspace, in the embedded or the production profile.

The repo's paths are relative, so a copy of a workspace (as the tests make)
is a self-contained store.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from core.errors import InputError
from core.workspace import Profile, Workspace

PROFILE_FILES: dict[str, str] = {
    "embedded": "feature_store.yaml",
    "production": "feature_store.production.yaml",
}
REDIS_URL_ENV = "FEEDRANK_REDIS_URL"
REGISTRY_URL_ENV = "FEEDRANK_REGISTRY_URL"
FEATURE_SERVICE = "ranker_v2"
"""The FeatureService new models are trained on (each model records its own)."""


def training_set_path(workspace: Workspace, service: str = FEATURE_SERVICE) -> Path:
    """The point-in-time training set built through ``service``."""
    return workspace.datasets / f"{service}.parquet"


def repo_config(
    workspace: Workspace, profile: Profile = "embedded", project: str | None = None
) -> RepoConfig:
    """Load the profile's feature_store.yaml, with deployment overrides from the environment.

    Args:
        workspace: the workspace whose feature repo to use.
        profile: ``embedded`` (SQLite, files) or ``production`` (Redis, SQL registry).
        project: override the Feast project (tests use one per test for isolation).
    """
    path = workspace.repo / PROFILE_FILES[profile]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read Feast config: {exc}") from exc
    if profile == "production":
        if os.environ.get(REDIS_URL_ENV):
            raw["online_store"]["connection_string"] = os.environ[REDIS_URL_ENV]
        if os.environ.get(REGISTRY_URL_ENV):
            raw["registry"]["path"] = os.environ[REGISTRY_URL_ENV]
    if project:
        raw["project"] = project
    return RepoConfig(repo_path=workspace.repo, **raw)


def open_store(
    workspace: Workspace, profile: Profile = "embedded", project: str | None = None
) -> FeatureStore:
    """A FeatureStore on the workspace's repo in the given profile."""
    return FeatureStore(
        repo_path=str(workspace.repo), config=repo_config(workspace, profile, project)
    )


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
