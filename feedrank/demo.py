"""`feedrank demo`: the whole pipeline on the embedded defaults, with a summary.

Each stage reads what the previous one wrote (files, the Feast registry), the
same hand-offs the individual commands use.
"""

from __future__ import annotations

import os

import click
import pyarrow.parquet as pq

from core.actions import load_actions
from core.model_registry import CHAMPION, load_ranker
from core.workspace import Workspace
from feedrank.pipeline import Bar, Stage, build_foundation
from metrics.replay import replay
from serving.auth import SCOPES, create_key, keys_file_path, read_key_file, revoke_key
from simulation.config import Preset, world_config
from training.pipeline import run_training_pipeline

DEMO_KEY_NAME = "demo"
DEMO_KEY_FILE = "demo_key"
"""Where, under ``data/serving/``, the demo leaves its key (owner-only) for scripts and curl."""


def run_demo(
    workspace: Workspace, preset: Preset, stage: Stage, progress_bar: Bar
) -> dict[str, object]:
    """The whole pipeline: world, features, Feast, training set, model, promotion, replay.

    A fresh Feast registry and online store are made each run, so the demo is
    repeatable on the same workspace.

    Returns:
        The summary figures that were printed.
    """
    actions = load_actions()
    config = world_config(preset)
    built = build_foundation(workspace, config, actions=actions, stage=stage, progress=progress_bar)
    world, training = built.world, built.training
    with stage("train, evaluate, register, promote"):
        trained = run_training_pipeline(workspace.root, progress=True)
    with stage("replay of the held-out visits"):
        replayed = replay(workspace, load_ranker(workspace, CHAMPION))

    labels = pq.read_table(training.path, columns=list(actions.names))
    rates = {a: labels[a].to_numpy(zero_copy_only=False).mean() for a in actions.names}
    summary: dict[str, object] = {
        "users": world.users,
        "follows": world.follows,
        "tweets": world.tweets,
        "visits": world.visits,
        "impressions": world.impressions,
        "feature_rows": sum(built.features.rows.values()),
        "online_entities": sum(built.online.values()),
        "training_rows": training.rows,
        "features": len(training.features),
    }
    click.echo("\nfeedrank demo summary")
    for key, value in summary.items():
        click.echo(f"  {key:<16} {value:>12,}")
    click.echo("  label rates      " + "  ".join(f"{a} {r:.4f}" for a, r in rates.items()))
    click.echo(f"  training set     {training.path}")
    click.echo(
        f"\nmodel feed-ranker v{trained.get('version')}: {trained.get('promotion')} "
        f"({trained.get('promotion_reason')})"
    )
    click.echo(f"  {'head':<12} {'AUC':>7} {'oracle AUC':>11} {'ECE':>7}")
    for action in actions.names:
        click.echo(
            f"  {action:<12} {trained[f'auc_{action}']:>7.3f} "
            f"{trained[f'oracle_auc_{action}']:>11.3f} {trained[f'ece_{action}']:>7.4f}"
        )
    for k in (10, 50):
        click.echo(
            f"  share of the oracle's lift over chronological @{k}: "
            f"{trained[f'oracle_lift_share_at_{k}']:.3f}"
        )
    click.echo("\nreplay of the held-out day (weighted engagement per user, 95% CI vs chrono)")
    columns = [
        "policy",
        "users",
        "weighted_engagement_per_user",
        "minus_chrono",
        "ci_low",
        "ci_high",
    ]
    click.echo(replayed.table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    issue_demo_key(workspace)
    summary.update(trained)
    summary.update(replayed.result())
    return summary


def issue_demo_key(workspace: Workspace) -> None:
    """A fresh all-scope API key named ``demo`` (earlier ones revoked), and how to use it."""
    keys = keys_file_path(workspace.root)
    if keys.exists():
        for old in read_key_file(keys).keys:
            if old.name == DEMO_KEY_NAME:
                revoke_key(keys, old.id)
    key, entry = create_key(keys, DEMO_KEY_NAME, SCOPES)
    saved = workspace.data / "serving" / DEMO_KEY_FILE
    saved.unlink(missing_ok=True)
    # Created owner-only, never readable by others even for a moment.
    with os.fdopen(os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(key + "\n")
    click.echo(
        f"\nAPI key {entry.id} ({', '.join(entry.scopes)}) in {keys}, the key itself in {saved}"
    )
    click.echo("  serve:  .venv/bin/bentoml serve serving.service:FeedRanker")
    click.echo(
        f'  rank:   curl -s localhost:3000/rank -H "Authorization: Bearer $(cat {saved})" '
        """-H 'content-type: application/json' -d '{"user_id": 5}'"""
    )
