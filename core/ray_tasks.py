"""Run one function over shards, in this process or as Ray tasks of the cluster profile.

A stage that scales out is written once as a shard function ``fn(shared, *args)``
and handed to a :data:`Runner`: :func:`run_local` calls it shard after shard,
:func:`run_on_ray` sends each shard to a Ray task (``SPREAD`` over the nodes)
with ``shared`` put once in Ray's object store. Ray is the cluster profile's:
the same address resolution as Feast's Ray offline store and compute engine
(:func:`init_cluster_ray`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from core.workspace import Profile, Workspace

# Ray and Feast are imported where they are used: the local profiles never pay for
# Ray, and a Ray worker running a shard never imports Feast (seconds per process).
# pylint: disable=import-outside-toplevel

Progress = Callable[[int, int], None]
"""Called with (shards done, shards total)."""


class Runner(Protocol):  # pylint: disable=too-few-public-methods
    """``run(fn, shared, shard_args)``: ``[fn(shared, *args) for args in shard_args]``."""

    def __call__(
        self,
        fn: Callable[..., Any],
        shared: Any,
        shard_args: Sequence[tuple[Any, ...]],
        progress: Progress | None = None,
    ) -> list: ...


def run_local(
    fn: Callable[..., Any],
    shared: Any,
    shard_args: Sequence[tuple[Any, ...]],
    progress: Progress | None = None,
) -> list:
    """Every shard in this process, one after the other."""
    results = []
    for args in shard_args:
        results.append(fn(shared, *args))
        if progress:
            progress(len(results), len(shard_args))
    return results


def init_cluster_ray(workspace: Workspace, project: str | None = None) -> int:
    """Connect to (or start) the cluster profile's Ray, as Feast does; return its CPUs.

    Where Ray is comes from the profile (``core.feast_store.RAY_ADDRESS_ENV``).
    """
    import ray
    from feast.infra.ray_initializer import ensure_ray_initialized

    from core.feast_store import repo_config

    ensure_ray_initialized(repo_config(workspace, "cluster", project))
    return max(int(ray.cluster_resources().get("CPU", 1)), 1)


def profile_runner(
    workspace: Workspace, profile: Profile, project: str | None = None
) -> tuple[Runner, int]:
    """A Feast profile's runner and its workers: Ray tasks on ``cluster`` (its CPUs), else
    this process (one)."""
    if profile != "cluster":
        return run_local, 1
    return run_on_ray, init_cluster_ray(workspace, project)


def run_on_ray(
    fn: Callable[..., Any],
    shared: Any,
    shard_args: Sequence[tuple[Any, ...]],
    progress: Progress | None = None,
) -> list:
    """Each shard as a Ray task on the Ray this process is connected to; results in order.

    A task's exception is raised here as the task raised it (not wrapped in
    Ray's ``RayTaskError``), so a shard's clear error stays clear.
    """
    import ray

    shared_ref = ray.put(shared)
    # SPREAD: shards go to every node, not first to fill the driver's.
    task = ray.remote(scheduling_strategy="SPREAD")(fn)
    refs = [task.remote(shared_ref, *args) for args in shard_args]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        results[index[ready[0]]] = _get(ready[0])
        if progress:
            progress(len(refs) - len(pending), len(refs))
    return results


def _get(ref: Any) -> Any:
    """``ray.get``, re-raising the exception a task raised rather than Ray's wrapper."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise
