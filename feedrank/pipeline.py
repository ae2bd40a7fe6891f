"""The foundation pipeline, written once: world, features, Feast, online store, training set.

The demo, the test fixtures, the benchmarks and the continuous-training
workflow (through ``feedrank pipeline foundation``) all call
:func:`build_foundation`; a stage that only needs the published features calls
:func:`publish_features`. Each stage hands off through files and the Feast
registry, as the individual commands do.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime

from feast import FeatureStore

from core.actions import ActionSet, load_actions
from core.feast_store import Profile, open_store
from core.ray_tasks import profile_runner
from core.workspace import Workspace
from features.online import apply_repo, fill_online, materialize_feast
from features.pipelines import FeatureBuild, build_features
from simulation.config import WorldConfig
from simulation.world import WorldSummary, generate_world, load_world_config, world_end
from training.dataset import TrainingSet, build_training_set

Stage = Callable[[str], AbstractContextManager[None]]
"""Wraps each stage (the CLI prints its name and time)."""
Bar = Callable[[str], Callable[[int, int], None]]
"""Makes a progress callback ``(done, total)`` for a named unit."""


@contextmanager
def quiet(_name: str) -> Iterator[None]:
    """The default :data:`Stage`: no output."""
    yield


@dataclass(frozen=True)
class Foundation:
    """What :func:`build_foundation` wrote, stage by stage."""

    store: FeatureStore
    world: WorldSummary
    features: FeatureBuild
    online: dict[str, int]
    training: TrainingSet


def publish_features(
    store: FeatureStore, workspace: Workspace, end: datetime | None = None
) -> dict[str, int]:
    """``feast apply`` of the workspace's repo, then fill the online store up to ``end``.

    Args:
        end: fill up to here (default: the end of the workspace's world).

    Returns:
        Entities written per feature view.
    """
    apply_repo(store, workspace)
    return fill_online(store, workspace, end or world_end(load_world_config(workspace.world)))


def build_foundation(
    workspace: Workspace,
    config: WorldConfig,
    *,
    profile: Profile = "embedded",
    project: str | None = None,
    fill: bool = True,
    actions: ActionSet | None = None,
    stage: Stage = quiet,
    progress: Bar | None = None,
) -> Foundation:
    """Build everything a model is trained and served on, from a world config.

    On the embedded profile the workspace's Feast registry and online store are
    made anew, so a rerun on the same workspace starts clean.

    Args:
        profile: the Feast profile; ``project`` overrides its project name.
        fill: also fill the online store (training alone does not need it).
        stage: wraps each stage (see :data:`Stage`).
        progress: progress callbacks for the world and the training set.
    """
    actions = actions or load_actions()

    def progress_of(unit: str) -> Callable[[int, int], None] | None:
        return progress(unit) if progress else None

    # The cluster profile runs the world's and the features' shards as Ray tasks.
    run, workers = profile_runner(workspace, profile, project)
    with stage("world"):
        world = generate_world(
            config, workspace.data, actions, progress=progress_of("shards"), run=run
        )
    with stage("features"):
        built = build_features(
            workspace.world, workspace.features, actions, run=run, workers=workers
        )
    with stage("feast apply"):
        if profile == "embedded":
            shutil.rmtree(workspace.data / "feast", ignore_errors=True)
        store = open_store(workspace, profile, project)
        apply_repo(store, workspace)
    online: dict[str, int] = {}
    if fill:
        with stage("online store fill"):
            if profile == "cluster":
                # The profile's engine (Feast's ray.engine), which reports no counts.
                materialize_feast(store, workspace, world_end(config))
            else:
                online = fill_online(store, workspace, world_end(config))
    with stage("training set"):
        training = build_training_set(store, workspace, actions, progress=progress_of("rows"))
    return Foundation(store, world, built, online, training)
