"""Shared fixtures: a tiny pipeline workspace and the real services of the production profile."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)


def new_workspace(root: Path) -> Workspace:
    """An empty workspace with a copy of the feature repo."""
    return Workspace.new(root)


def require_service(name: str, address: tuple[str, int]) -> None:
    """Skip when a service is down, unless FEEDRANK_REQUIRE_SERVICES is set: then fail."""
    try:
        with socket.create_connection(address, timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {address[0]}:{address[1]}: {exc}"
        if os.environ.get("FEEDRANK_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The whole foundation pipeline on the tiny preset: world, features, Feast, training set.

    Session-scoped and built once; tests must not modify it (copy it instead).
    """
    from feedrank.pipeline import build_foundation  # pylint: disable=import-outside-toplevel
    from simulation.config import world_config  # pylint: disable=import-outside-toplevel

    ws = new_workspace(tmp_path_factory.mktemp("tiny"))
    build_foundation(ws, world_config("tiny"))
    return ws


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A real Ray in this process for the cluster profile: one CPU and a small object store.

    ``address="local"``: a new instance even when ``scripts/cluster.sh`` runs a cluster.
    """
    import ray  # pylint: disable=import-outside-toplevel

    ray.init(
        address="local",
        num_cpus=1,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def redis_service() -> None:
    """The local Redis of the production profile."""
    require_service("Redis", REDIS)


@pytest.fixture
def postgres_service() -> None:
    """The local PostgreSQL of the production profile."""
    require_service("PostgreSQL", POSTGRES)


@pytest.fixture
def feast_project(redis_service: None, postgres_service: None) -> Iterator[str]:
    """A Feast project name of its own, so tests sharing Redis and the registry do not collide."""
    yield f"t{uuid.uuid4().hex[:12]}"
