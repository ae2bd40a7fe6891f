"""The synthetic world: deterministic, heavy-tailed, and candidates as the brief defines them."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core import tables
from core.workspace import Workspace
from simulation.config import world_config
from simulation.world import generate_world, load_world_config, shard_plan

pytestmark = pytest.mark.unit


def _read(ws: Workspace, spec: tables.TableSpec) -> pd.DataFrame:
    folder = ws.truth if spec is tables.ORACLE else ws.world
    return tables.read_table(spec, folder).to_pandas()


def test_same_seed_same_world_other_seed_other_world(tmp_path: Path) -> None:
    config = world_config("tiny", n_users=120, days=3)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate_world(config.model_copy(update={"seed": seed}), tmp_path / name)
    a, b, c = (pq.read_table(tmp_path / n / "world/impressions.parquet") for n in "abc")
    assert a.equals(b)
    assert not a.equals(c)
    oracle_a = pq.read_table(tmp_path / "a/truth/oracle.parquet")
    assert oracle_a.equals(pq.read_table(tmp_path / "b/truth/oracle.parquet"))


def test_world_config_is_saved_with_the_world(tiny_workspace: Workspace) -> None:
    assert load_world_config(tiny_workspace.world) == world_config("tiny")


def test_follower_distribution_is_heavy_tailed(tiny_workspace: Workspace) -> None:
    followers = _read(tiny_workspace, tables.FOLLOWS)["author_id"].value_counts()
    top = followers.sort_values(ascending=False)
    assert top.iloc[0] > 10 * followers.median()
    # The top 5% of authors hold far more than 5% of all follows.
    assert top.iloc[: max(1, len(top) // 20)].sum() > 0.25 * followers.sum()


def test_no_self_follows_and_no_duplicates(tiny_workspace: Workspace) -> None:
    follows = _read(tiny_workspace, tables.FOLLOWS)
    assert (follows.user_id != follows.author_id).all()
    assert not follows.duplicated().any()


def test_candidates_are_followees_tweets_since_last_visit(tiny_workspace: Workspace) -> None:
    follows = _read(tiny_workspace, tables.FOLLOWS)
    tweets = _read(tiny_workspace, tables.TWEETS)
    visits = _read(tiny_workspace, tables.VISITS)
    impressions = _read(tiny_workspace, tables.IMPRESSIONS)
    config = load_world_config(tiny_workspace.world)
    sample = visits.sample(60, random_state=0)
    for visit in sample.itertuples():
        followees = follows.loc[follows.user_id == visit.user_id, "author_id"]
        expected = tweets[
            tweets.author_id.isin(followees)
            & (tweets.created_at > visit.prev_visit_time)
            & (tweets.created_at <= visit.visit_time)
        ].nlargest(config.max_feed, "created_at")
        shown = impressions[impressions.visit_id == visit.visit_id]
        assert set(shown.tweet_id) == set(expected.tweet_id)
        assert sorted(shown.position) == list(range(len(shown)))


def test_previous_visit_is_the_users_last_visit(tiny_workspace: Workspace) -> None:
    visits = _read(tiny_workspace, tables.VISITS).sort_values(["user_id", "visit_time"])
    previous = visits.groupby("user_id").visit_time.shift(1)
    has_previous = previous.notna()
    assert (visits.prev_visit_time[has_previous] == previous[has_previous]).all()
    assert (visits.prev_visit_time < visits.visit_time).all()


def test_oracle_is_kept_apart_and_agrees_with_sampled_labels(tiny_workspace: Workspace) -> None:
    impressions = _read(tiny_workspace, tables.IMPRESSIONS)
    assert not [c for c in impressions.columns if c.startswith("p_")]
    oracle = _read(tiny_workspace, tables.ORACLE)
    assert len(oracle) == len(impressions)
    joined = impressions.merge(oracle, on="impression_id")
    # Sampled at position 0 the labels follow the true probabilities closely.
    for action in ("like", "long_dwell"):
        high = joined[f"p_{action}"] > joined[f"p_{action}"].quantile(0.8)
        assert joined.loc[high, action].mean() > 2 * joined.loc[~high, action].mean()


def test_long_dwell_label_matches_dwell_seconds(tiny_workspace: Workspace) -> None:
    impressions = _read(tiny_workspace, tables.IMPRESSIONS)
    assert (impressions.long_dwell == (impressions.dwell_seconds >= 10.0)).all()


def test_event_log_has_one_impression_event_per_impression(tiny_workspace: Workspace) -> None:
    events = _read(tiny_workspace, tables.EVENTS)
    impressions = _read(tiny_workspace, tables.IMPRESSIONS)
    assert (events.action == "impression").sum() == len(impressions)
    assert events.event_id.is_unique
    assert (events.action == "like").sum() == impressions.like.sum()


def test_presets_and_overrides() -> None:
    assert world_config("demo").n_users >= 5000
    assert world_config("demo", n_users=None).n_users == world_config("demo").n_users
    assert world_config("tiny", days=3).days == 3
    with pytest.raises(ValueError, match="unknown preset"):
        world_config("huge")  # type: ignore[arg-type]


def test_impression_ids_are_dense_and_unique(tiny_workspace: Workspace) -> None:
    impressions = _read(tiny_workspace, tables.IMPRESSIONS)
    assert impressions.impression_id.is_unique
    assert np.all(np.diff(np.sort(impressions.impression_id.to_numpy())) == 1)


def test_shard_plan_cuts_between_users_near_the_target() -> None:
    visit_user = np.repeat(np.arange(6), [3, 1, 4, 2, 2, 3])  # 15 visits, sorted by user
    bounds = shard_plan(visit_user, 5)  # the cuts at 5 and 10 move back to users' starts
    assert bounds.tolist() == [0, 4, 10, 15]
    for lo in bounds[1:-1]:
        assert visit_user[lo] != visit_user[lo - 1]  # a user is never split
    assert shard_plan(visit_user, 100).tolist() == [0, 15]


def test_a_sharded_world_has_the_same_visits_and_candidates_other_draws(tmp_path: Path) -> None:
    """Shards draw the same candidates for the same visits, from streams of their own."""
    config = world_config("tiny", n_users=120, days=3)
    one = generate_world(config, tmp_path / "one")
    many = generate_world(config.model_copy(update={"shard_visits": 150}), tmp_path / "many")
    assert one.shards == 1 and many.shards >= 4
    a, b = (ws / "world" for ws in (tmp_path / "one", tmp_path / "many"))
    assert pq.read_table(a / "visits.parquet").equals(pq.read_table(b / "visits.parquet"))
    keys = ["impression_id", "visit_id", "user_id", "tweet_id", "impression_time"]
    imp_a = pq.read_table(a / "impressions.parquet")
    imp_b = pq.read_table(b / "impressions.parquet")
    assert imp_a.select(keys).equals(imp_b.select(keys))  # dense ids, in visit order
    assert not imp_a.equals(imp_b)  # the slots and outcomes come from other streams
    events = pq.read_table(b / "events.parquet").to_pandas()
    assert (events.action == "impression").sum() == imp_b.num_rows and events.event_id.is_unique
    again = generate_world(config.model_copy(update={"shard_visits": 150}), tmp_path / "again")
    assert again == many
    assert pq.read_table(tmp_path / "again/world/impressions.parquet").equals(imp_b)
    assert not (tmp_path / "many" / ".world-shards").exists()
