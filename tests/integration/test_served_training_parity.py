"""Served-vs-training skew: what /rank scored equals Feast's training row for the same impression.

The feature samples of /rank carry the request id and each row's impression
(user, tweet, author, request time). Joining them to
``get_historical_features`` at the request's time, as ``feedrank dataset
build`` joins impressions, must give the same value for every feature: the
skew a model meets in production is the difference between these two reads.
Both profiles: the embedded one over HTTP (``bentoml serve``), the
production one (Redis online store, SQL registry) in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
from feast import FeatureStore

from core.feast_store import FEATURE_SERVICE, drop_project, open_store
from core.workspace import Workspace
from load.harness import auth_headers, copy_workspace, serve
from serving.samples import SAMPLE_ROWS
from serving.schemas import RankRequest
from tests.integration.test_service_redis import CTX, _drop_keys, _fill, _production

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USERS = range(30, 60)


def _samples(ws: Workspace, request_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The feature-sample records of these requests."""
    wanted = set(request_ids)
    records = [
        json.loads(line)
        for path in sorted((ws.data / "serving" / "feature_samples").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    found = [r for r in records if r["request_id"] in wanted]
    assert {r["request_id"] for r in found} == wanted, "a ranked request left no sample"
    return found


def _compare(store: FeatureStore, ws: Workspace, records: list[dict[str, Any]]) -> dict[str, int]:
    """Every served value against the training join of its impression; the counts compared."""
    served = pd.DataFrame(
        [
            row | {"user_id": r["user_id"], "request_us": r["request_us"]}
            for r in records
            for row in r["rows"]
        ]
    )
    entity = served[["user_id", "author_id", "tweet_id"]].copy()
    entity["event_timestamp"] = pd.to_datetime(served.request_us, unit="us", utc=True)
    entity["request_ts"] = served.request_us // 1_000_000
    entity["candidate_author_id"] = entity["author_id"]
    entity["row"] = np.arange(len(entity))
    with contextlib.chdir(ws.repo):  # Feast's file sources are relative to the repo
        joined = store.get_historical_features(
            entity_df=entity, features=store.get_feature_service(FEATURE_SERVICE)
        ).to_df()
    training = joined.sort_values("row").reset_index(drop=True)
    assert training.row.tolist() == entity.row.tolist(), set(entity.row) - set(training.row)
    features = [
        c for c in served.columns if c not in {"user_id", "author_id", "tweet_id", "request_us"}
    ]
    assert len(features) > 20 and set(features) <= set(training.columns)
    mismatches: list[str] = []
    for name in features:
        for i, (got, want) in enumerate(zip(served[name], training[name], strict=True)):
            if not _same(got, want):
                mismatches.append(f"{name}[{i}]: served {got!r}, training {want!r}")
    assert not mismatches, f"{len(mismatches)} mismatches: {mismatches[:10]}"
    return {"values": len(served) * len(features), "rows": len(served)}


def _same(served: Any, training: Any) -> bool:
    """Equal as the model reads them: missing is None or NaN on either side, floats as float32."""
    if isinstance(training, np.ndarray | list):
        return served is not None and np.allclose(np.asarray(served), np.asarray(training))
    missing = bool(pd.isna(served)), bool(pd.isna(training))
    if any(missing):
        return all(missing)
    return bool(np.isclose(np.float32(served), np.float32(training), rtol=1e-6, atol=0))


def test_served_vectors_equal_the_training_rows_embedded_over_http(
    served_workspace: Workspace, world_end_iso: str, tmp_path: Path
) -> None:
    # A copy of its own: other tests push events to the shared workspace's online store.
    ws = copy_workspace(served_workspace.root, tmp_path / "ws")
    with (
        serve(ws, {"FEEDRANK_FEATURE_SAMPLE_RATE": "1.0"}) as served,
        httpx.Client(base_url=served.url, headers=auth_headers(ws), timeout=30) as client,
    ):
        answers = [
            client.post("/rank", json={"user_id": u, "request_time": world_end_iso}).json()
            for u in USERS
        ]
    assert not any(a["degraded"] for a in answers), answers
    answers = [a for a in answers if a["items"]]  # an empty feed scores nothing
    assert len(answers) >= 10
    records = _samples(ws, [a["request_id"] for a in answers])
    counts = _compare(open_store(ws), ws, records)
    assert counts["rows"] == sum(min(SAMPLE_ROWS, a["candidate_count"]) for a in answers)
    print(f"embedded: {counts}")
    records[0]["rows"][0]["user_like_rate_7d"] = 0.123  # one skewed value is caught
    with pytest.raises(AssertionError, match=r"1 mismatches: \['user_like_rate_7d\[0\]"):
        _compare(open_store(ws), ws, records)


def test_served_vectors_equal_the_training_rows_on_the_production_profile(
    served_workspace: Workspace, feast_project: str, world_end_iso: str, tmp_path: Path
) -> None:
    from serving.service import FeedRanker  # pylint: disable=import-outside-toplevel

    ws = copy_workspace(served_workspace.root, tmp_path / "ws")
    candidates = redis.Redis("127.0.0.1", 6379)
    store = _fill(ws, feast_project, candidates)
    try:
        with pytest.MonkeyPatch.context() as env:
            _production(ws, feast_project, env)
            ranker = FeedRanker()
        answers = [
            asyncio.run(ranker.rank(RankRequest(user_id=u, request_time=world_end_iso), CTX))
            for u in USERS
        ]
        ranker.close()
        assert not any(a.degraded for a in answers)
        answers = [a for a in answers if a.items]
        assert len(answers) >= 10
        counts = _compare(store, ws, _samples(ws, [a.request_id for a in answers]))
        assert counts["rows"] == sum(min(SAMPLE_ROWS, a.candidate_count) for a in answers)
        print(f"production: {counts}")
    finally:
        drop_project(store)
        _drop_keys(candidates, feast_project)
        candidates.close()
