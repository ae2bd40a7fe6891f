"""Feast on the embedded profile: point-in-time training rows and online parity.

The leakage test also runs on the cluster profile (the join in Ray tasks).
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.feast_store import FEATURE_SERVICE, drop_project, entity_rows, open_store
from core.workspace import Workspace
from features.online import apply_repo, materialize_feast
from features.pipelines import COUNTER_STEP_US
from simulation.world import load_world_config, world_end
from tests.conftest import new_workspace
from training.dataset import build_training_set

pytestmark = pytest.mark.integration


def _training(ws: Workspace) -> pd.DataFrame:
    return pq.read_table(ws.datasets / f"{FEATURE_SERVICE}.parquet").to_pandas()


def test_training_rows_take_the_latest_snapshot_before_the_impression(
    tiny_workspace: Workspace,
) -> None:
    training = _training(tiny_workspace).sort_values("event_timestamp")
    snapshots = pq.read_table(tiny_workspace.features / "user_stats.parquet").to_pandas()
    expected = pd.merge_asof(
        training[["impression_id", "user_id", "event_timestamp"]],
        snapshots[["user_id", "event_timestamp", "user_impressions_7d"]].sort_values(
            "event_timestamp"
        ),
        on="event_timestamp",
        by="user_id",
        direction="backward",
        allow_exact_matches=True,
        tolerance=pd.Timedelta(days=2),
    )
    got = training.set_index("impression_id")["user_impressions_7d"]
    want = expected.set_index("impression_id")["user_impressions_7d"]
    both = want.notna()
    assert both.sum() > 0.75 * len(want)  # the first day has no snapshot before it
    np.testing.assert_array_equal(got[want.index[both]].to_numpy(), want[both].to_numpy())


def test_tweet_counters_hold_every_impression_of_earlier_hours_and_none_later(
    tiny_workspace: Workspace,
) -> None:
    """The counters a training row reads are the tweet's impressions in completed hours."""
    training = _training(tiny_workspace)
    impressions = pq.read_table(tiny_workspace.world / "impressions.parquet")
    tweet = impressions["tweet_id"].to_numpy()
    step = impressions["impression_time"].cast(pa.int64()).to_numpy() // COUNTER_STEP_US
    likes = impressions["like"].to_numpy(zero_copy_only=False).astype(np.int64)
    rows = training.sample(300, random_state=5)
    row_step = (
        rows.event_timestamp.astype("datetime64[us, UTC]").astype(np.int64) // COUNTER_STEP_US
    )
    seen, liked = [], []
    for t, s in zip(rows.tweet_id.to_numpy(), row_step.to_numpy(), strict=True):
        earlier = (tweet == t) & (step < s)
        seen.append(earlier.sum())
        liked.append(likes[earlier].sum())
    got = rows.tweet_impressions.fillna(0).to_numpy()
    np.testing.assert_array_equal(got, seen)
    np.testing.assert_array_equal(rows.tweet_like_count.fillna(0).to_numpy(), liked)
    assert (got > 0).mean() > 0.5  # fresh tweets have counters: most rows see some


@pytest.mark.parametrize("profile", ["embedded", "cluster"])
def test_no_value_stamped_after_an_impression_reaches_it(
    tiny_workspace: Workspace, tmp_path: Path, profile: str, request: pytest.FixtureRequest
) -> None:
    """Plant values 1 s after some impressions (must never show) and 1 s before others (must),
    in a scalar view and in the list view the pair features are looked up in.

    The planted counts are valid (the tables pass validation) but no real user has them.
    """
    ws = new_workspace(tmp_path)
    for folder in ("world", "features"):
        shutil.copytree(tiny_workspace.data / folder, ws.data / folder)
    impressions = pq.read_table(ws.world / "impressions.parquet").to_pandas()
    picked = impressions.sample(40, random_state=3).drop_duplicates("user_id")
    after, before = picked.iloc[::2], picked.iloc[1::2]
    path = ws.features / "user_stats.parquet"
    stats = pq.read_table(path).to_pandas()
    planted = []
    for rows, shift, value in ((after, 1, 999_999), (before, -1, 777_777)):
        template = stats.drop_duplicates("user_id").set_index("user_id").loc[rows.user_id]
        template = template.reset_index()
        template["event_timestamp"] = rows.impression_time.to_numpy() + pd.Timedelta(seconds=shift)
        template["user_impressions_7d"] = value
        planted.append(template)
    poisoned = pd.concat([stats, *planted], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(poisoned, schema=pq.read_schema(path)), path)
    # The same in the user's top-author list, with the impression's author in it.
    path = ws.features / "user_top_authors.parquet"
    lists = pq.read_table(path).to_pandas()
    planted = [
        pd.DataFrame(
            {
                "user_id": rows.user_id.to_numpy(),
                "event_timestamp": rows.impression_time.to_numpy() + pd.Timedelta(seconds=shift),
                "top_author_ids": [[a] for a in rows.author_id],
                "top_author_impressions": [[value]] * len(rows),
                "top_author_positive_rate": [[0.5]] * len(rows),
                "top_author_negative_count": [[0]] * len(rows),
            }
        )
        for rows, shift, value in ((after, 1, 999_999), (before, -1, 777_777))
    ]
    poisoned = pd.concat([lists, *planted], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(poisoned, schema=pq.read_schema(path)), path)

    if profile == "cluster":
        request.getfixturevalue("local_ray")
        store = open_store(ws, "cluster", request.getfixturevalue("feast_project"))
        request.addfinalizer(lambda: drop_project(store))
    else:
        store = open_store(ws)
    apply_repo(store, ws)
    build_training_set(store, ws)
    training = _training(ws).set_index("impression_id")
    for feature in ("user_impressions_7d", "ua_impressions"):  # user_stats, user_top_authors
        assert not (training.loc[after.impression_id, feature] == 999_999).any()
        assert (training.loc[before.impression_id, feature] == 777_777).all()
    # The planted value is real: the same users' impressions after it do read it.
    assert (training.user_impressions_7d == 999_999).any()


def test_fast_fill_reads_back_exactly_like_feast_materialize(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    reference = new_workspace(tmp_path)
    for folder in ("world", "features"):
        shutil.copytree(tiny_workspace.data / folder, reference.data / folder)
    feast_store = open_store(reference)
    apply_repo(feast_store, reference)
    materialize_feast(feast_store, reference, world_end(load_world_config(reference.world)))

    training = _training(tiny_workspace)
    rows = training.sample(200, random_state=1)
    fast_store = open_store(tiny_workspace)
    unknown = {k: [*rows[k], 10**9] for k in ("user_id", "author_id", "tweet_id")}
    requested = entity_rows(fast_store, FEATURE_SERVICE, unknown, 1_768_000_000)

    def read(store) -> dict:
        service = store.get_feature_service(FEATURE_SERVICE)
        return store.get_online_features(features=service, entity_rows=requested).to_dict()

    fast, feast = read(fast_store), read(feast_store)
    assert fast.keys() == feast.keys()
    for name in fast:
        assert fast[name] == feast[name], name
    assert fast["user_impressions_7d"][-1] is None
    assert sum(v is not None for v in fast["ua_impressions"]) > 50
