"""The serving API three ways: the class called directly, the ASGI app, ``bentoml serve``."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from core.actions import load_actions
from core.feast_store import Workspace, open_store
from core.tables import TWEETS, read_table
from load.harness import auth_headers
from serving.events import EventLog
from serving.schemas import RankRequest
from tests.integration.conftest import (
    SharedServer,
    free_port,
    server_output,
    serving_environ,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACTIONS = load_actions().names
CTX = bentoml.Context()
"""The context of an in-process call: no HTTP request, hence no API key to check."""


def _check_feed(body: dict[str, Any], limit: int) -> None:
    items = body["items"]
    assert len(items) <= limit
    assert [i["rank"] for i in items] == list(range(len(items)))
    assert len({i["tweet_id"] for i in items}) == len(items)
    if not body["degraded"]:
        assert all(set(i["probabilities"]) == set(ACTIONS) for i in items)
    assert set(body["timings_ms"]) == {"candidates", "features", "model", "policy", "total"}


def test_class_ranks_followee_tweets_by_weighted_score(ranker: Any, world_end_iso: str) -> None:
    response = asyncio.run(
        ranker.rank(RankRequest(user_id=5, request_time=world_end_iso, limit=50), CTX)
    )
    body = response.model_dump()
    _check_feed(body, 50)
    assert body["candidate_source"] == "followees"
    assert not body["degraded"] and body["reason"] is None
    assert body["candidate_count"] >= len(body["items"]) > 0
    assert body["model_version"].startswith("feed-ranker:")
    weights = np.asarray(load_actions().weights)
    for item in body["items"]:
        expected = np.asarray([item["probabilities"][a] for a in ACTIONS]) @ weights
        assert item["score"] == pytest.approx(expected, rel=1e-5)


def test_startup_objects_are_frozen_out_of_garbage_collection(ranker: Any) -> None:
    # A full collection over what a worker loads took ~280 ms; frozen, it is skipped.
    assert ranker.model is not None and gc.get_freeze_count() > 100_000


def test_class_serves_cold_start_to_unknown_user(ranker: Any, world_end_iso: str) -> None:
    body = asyncio.run(
        ranker.rank(RankRequest(user_id=10**9, request_time=world_end_iso, limit=10), CTX)
    )
    assert body.candidate_source == "cold_start"
    assert not body.degraded
    assert 0 < len(body.items) <= 10


def test_class_ranks_given_candidates_only(ranker: Any, world_end_iso: str) -> None:
    given = [1, 2, 3, 4, 5, 10**12]  # the last one is unknown: dropped
    body = asyncio.run(
        ranker.rank(
            RankRequest(user_id=7, candidate_tweet_ids=given, request_time=world_end_iso, limit=3),
            CTX,
        )
    )
    assert body.candidate_source == "request"
    assert body.candidate_count == 5
    assert len(body.items) == 3
    assert {i.tweet_id for i in body.items} <= set(given)


def test_class_falls_back_when_the_model_fails(
    ranker: Any, world_end_iso: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(columns: Any) -> Any:
        raise RuntimeError("weights are corrupt")

    monkeypatch.setattr(ranker.model.ranker, "predict_proba", broken)
    body = asyncio.run(
        ranker.rank(RankRequest(user_id=5, request_time=world_end_iso, limit=20), CTX)
    )
    assert body.degraded and body.reason == "model failed"
    created = ranker.candidates.lookup(np.asarray([i.tweet_id for i in body.items])).created_us
    assert list(created) == sorted(created, reverse=True)  # reverse-chronological


def test_class_falls_back_when_an_on_demand_view_fails(
    ranker: Any, world_end_iso: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault injected on purpose: a real transformation does not raise on demand.
    odfv = ranker.reader._odfvs[0][0]  # pylint: disable=protected-access

    def broken(frame: Any) -> Any:
        raise KeyError("user_topic_rates")

    monkeypatch.setattr(odfv.feature_transformation, "udf", broken)
    body = asyncio.run(
        ranker.rank(RankRequest(user_id=5, request_time=world_end_iso, limit=20), CTX)
    )
    assert body.degraded and body.reason == "on-demand features failed"
    assert body.items and all(i.probabilities == {} for i in body.items)


def test_class_logs_feature_samples(ranker: Any, world_end_iso: str) -> None:
    asyncio.run(ranker.rank(RankRequest(user_id=6, request_time=world_end_iso), CTX))
    samples = list((ranker.config.serving_dir / "feature_samples").glob("*.jsonl"))
    assert samples and samples[0].read_text().strip()


@pytest.fixture(scope="module")
def asgi(served_workspace: Workspace) -> Iterator[TestClient]:
    """The BentoML ASGI app through Starlette's test client (lifespan runs __init__)."""
    from serving.service import FeedRanker  # pylint: disable=import-outside-toplevel

    with pytest.MonkeyPatch.context() as env:
        for key, value in serving_environ(served_workspace).items():
            env.setenv(key, value)
        with TestClient(FeedRanker.to_asgi(), headers=auth_headers(served_workspace)) as client:
            yield client


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": -1}, "user_id"),
        ({"user_id": 1, "limit": 0}, "limit"),
        ({"user_id": 1, "limit": 501}, "limit"),
        ({"user_id": 1, "candidate_tweet_ids": list(range(10_000))}, "candidate_tweet_ids"),
        ({"user_id": "one"}, "user_id"),
        ({"user_id": 1, "candidate_tweet_ids": ["a"]}, "candidate_tweet_ids"),
        ({"user_id": 1, "request_time": "yesterday"}, "request_time"),
        ({"user_id": 1, "colour": "red"}, "colour"),
    ],
)
def test_bad_rank_requests_are_400_naming_the_field(
    asgi: TestClient, body: dict[str, Any], field: str
) -> None:
    response = asgi.post("/rank", json=body)
    assert response.status_code == 400
    detail = response.json()
    assert field in {str(p) for err in detail["detail"] for p in err["loc"]}
    assert "Traceback" not in response.text


def test_malformed_json_is_400(asgi: TestClient) -> None:
    response = asgi.post(
        "/rank", content=b'{"user_id": 1,', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "json" in response.text.lower()


def _event(event_id: str, user: int, tweet: int, action: str, ts: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "tweet_id": tweet,
        "action": action,
        "timestamp": ts,
    }


@pytest.mark.parametrize(
    "event",
    [
        {
            "event_id": "x",
            "user_id": 1,
            "tweet_id": 2,
            "action": "love",
            "timestamp": "2026-01-10T00:00:00Z",
        },
        {"event_id": "x", "user_id": 1, "tweet_id": 2, "action": "like"},
        {
            "event_id": "x",
            "user_id": 1,
            "tweet_id": 2,
            "action": "impression",
            "dwell_seconds": -1,
            "timestamp": "2026-01-10T00:00:00Z",
        },
    ],
)
def test_bad_events_are_400(asgi: TestClient, event: dict[str, Any]) -> None:
    response = asgi.post("/events", json=[event])
    assert response.status_code == 400
    assert response.json()["detail"]


def test_event_batch_limits(asgi: TestClient) -> None:
    assert asgi.post("/events", json=[]).status_code == 400
    many = [_event(f"m{i}", 1, 2, "like", "2026-01-10T00:00:00Z") for i in range(1001)]
    assert asgi.post("/events", json=many).status_code == 400


def _online_counts(ws: Workspace, tweet: int) -> dict[str, int]:
    names = ["tweet_impressions", "tweet_like_count"]
    found = (
        open_store(ws)
        .get_online_features(
            features=[f"tweet_engagement:{n}" for n in names], entity_rows=[{"tweet_id": tweet}]
        )
        .to_dict()
    )
    return {n: int(found[n][0] or 0) for n in names}


def test_events_are_idempotent_and_reach_feast(
    asgi: TestClient, served_workspace: Workspace, world_end_iso: str
) -> None:
    tweet = 11
    before = _online_counts(served_workspace, tweet)
    batch = [
        _event("idem-1", 3, tweet, "impression", world_end_iso),
        _event("idem-2", 3, tweet, "like", world_end_iso),
        _event("idem-3", 4, tweet, "like", world_end_iso),
        _event("idem-3", 4, tweet, "like", world_end_iso),  # repeated inside the batch
    ]
    first = asgi.post("/events", json=batch)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "received": 4,
        "accepted": 3,
        "duplicates": 1,
        "pushed_tweets": 1,
        "unknown": 0,
    }
    retry = asgi.post("/events", json=batch).json()
    assert retry["accepted"] == 0 and retry["duplicates"] == 4
    after = _online_counts(served_workspace, tweet)
    assert after == {
        "tweet_impressions": before["tweet_impressions"] + 1,
        "tweet_like_count": before["tweet_like_count"] + 2,
    }


def test_events_for_unknown_users_or_tweets_are_counted_and_never_applied(
    asgi: TestClient, served_workspace: Workspace, world_end_iso: str
) -> None:
    tweet = 12
    before = _online_counts(served_workspace, tweet)
    batch = [
        *(_event(f"ghost-{i}", 10**9, tweet, "like", world_end_iso) for i in range(5)),
        _event("ghost-tweet", 3, 10**12 + 5, "like", world_end_iso),
        _event("real-like", 3, tweet, "like", world_end_iso),
    ]
    answer = asgi.post("/events", json=batch)
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"pushed_tweets": None} == {
        "received": 7,
        "accepted": 1,
        "duplicates": 0,
        "pushed_tweets": None,
        "unknown": 6,
    }
    after = _online_counts(served_workspace, tweet)
    assert after["tweet_like_count"] == before["tweet_like_count"] + 1
    metrics = asgi.get("/metrics").text
    assert 'outcome="unknown"' in metrics


def test_a_changed_resend_is_a_409_even_when_it_names_an_unknown_id(
    asgi: TestClient, world_end_iso: str
) -> None:
    logged = _event("changed-1", 3, 13, "like", world_end_iso)
    assert asgi.post("/events", json=[logged]).status_code == 200
    # The same id, now naming a tweet nobody knows: not quarantined quietly.
    resent = asgi.post("/events", json=[{**logged, "tweet_id": 10**12 + 7}])
    assert resent.status_code == 409, resent.text
    # Twice in one batch, once known and once unknown.
    pair = [
        _event("changed-2", 3, 13, "like", world_end_iso),
        _event("changed-2", 10**9, 13, "like", world_end_iso),
    ]
    refused = asgi.post("/events", json=pair)
    assert refused.status_code == 409, refused.text
    assert "changed-2" in refused.json()["error"]


def test_impressions_remove_tweets_from_the_next_feed(asgi: TestClient, world_end_iso: str) -> None:
    feeds = (
        (user, asgi.post("/rank", json={"user_id": user, "request_time": world_end_iso}).json())
        for user in range(100, 200)
    )
    user, feed = next((u, f) for u, f in feeds if f["items"])
    shown = feed["items"][0]["tweet_id"]
    # Shown at the request time: not yet a past visit, but already seen.
    logged = asgi.post(
        "/events", json=[_event(f"seen-{user}", user, shown, "impression", world_end_iso)]
    )
    assert logged.status_code == 200
    again = asgi.post("/rank", json={"user_id": user, "request_time": world_end_iso}).json()
    assert shown not in {i["tweet_id"] for i in again["items"]}


def test_health_and_metrics_endpoints(asgi: TestClient, world_end_iso: str) -> None:
    assert asgi.get("/livez").status_code == 200
    assert asgi.get("/readyz").status_code == 200
    asgi.post("/rank", json={"user_id": 5, "request_time": world_end_iso})
    metrics = asgi.get("/metrics").text
    assert "feedrank_rank_stage_seconds" in metrics
    assert 'feedrank_rank_feeds_total{policy="greedy"}' in metrics


def test_bentoml_serve_with_sync_client_and_httpx(
    server_url: str, world_end_iso: str, auth: dict[str, str]
) -> None:
    token = auth["Authorization"].removeprefix("Bearer ")
    with bentoml.SyncHTTPClient(server_url, token=token) as client:
        body = client.rank({"user_id": 5, "request_time": world_end_iso, "limit": 10})
    _check_feed(body, 10)
    assert not body["degraded"]
    response = httpx.post(
        f"{server_url}/rank",
        json={"user_id": 5, "request_time": world_end_iso, "limit": 10},
        headers=auth,
    )
    assert response.status_code == 200
    assert response.json()["items"] == body["items"]
    bad = httpx.post(f"{server_url}/rank", json={"user_id": -3}, headers=auth)
    assert bad.status_code == 400 and "Traceback" not in bad.text
    assert "feedrank_rank_stage_seconds" in httpx.get(f"{server_url}/metrics", headers=auth).text


def test_bentoml_serve_refuses_to_start_without_a_model(
    served_workspace: Workspace, tmp_path: Any
) -> None:
    import shutil  # pylint: disable=import-outside-toplevel

    empty = tmp_path / "ws"
    shutil.copytree(served_workspace.repo, empty / "feature_repo")
    env = serving_environ(Workspace(empty), BENTOML_HOME=str(tmp_path / "bentoml"))
    proc = start_server(env, free_port())
    try:
        proc.wait(timeout=90)
    finally:
        stop_server(proc)
    assert proc.returncode != 0
    assert "cannot start: no model feed-ranker:latest" in server_output(proc)


def test_bentoml_serve_starts_from_the_bentoml_store_when_mlflow_is_down(
    served_workspace: Workspace, world_end_iso: str, auth: dict[str, str]
) -> None:
    from serving.model_store import import_champion  # pylint: disable=import-outside-toplevel

    tag = import_champion(served_workspace)  # what an earlier start (or a Bento) left there
    env = serving_environ(served_workspace, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    port = free_port()
    proc = start_server(env, port)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        response = httpx.post(
            f"http://127.0.0.1:{port}/rank",
            json={"user_id": 1, "request_time": world_end_iso},
            timeout=30,
            headers=auth,
        )
    finally:
        stop_server(proc)
    assert response.status_code == 200
    assert response.json()["model_version"] == tag
    assert "unreachable" in server_output(proc)


# Issue 17, items 2 and 5: attacks on a real `bentoml serve`, each a 500 or a
# silent acceptance before. The session's server: its log is read from where it
# was when these tests began (and its startup), so other tests' requests are not in it.


@pytest.fixture(scope="module", name="guarded")
def _guarded_server(served: SharedServer) -> tuple[str, SharedServer, int]:
    """The session's server, and where its output stood before the first attack."""
    return served.url, served, served.mark()


@pytest.mark.parametrize(
    "timestamp",
    [
        "2200-01-01T00:00:00Z",
        "2262-04-12T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2000-01-01T00:00:00Z",
    ],
    ids=["far-future", "year-2262", "year-9999", "too-old"],
)
def test_event_times_outside_the_window_are_a_400_naming_the_field(
    guarded: tuple[str, SharedServer, int], world_end_iso: str, timestamp: str, auth: dict[str, str]
) -> None:
    url, _, _ = guarded
    batch = [
        _event(f"window-ok-{timestamp}", 3, 11, "impression", world_end_iso),
        _event(f"window-bad-{timestamp}", 3, 11, "impression", timestamp),
    ]
    response = httpx.post(f"{url}/events", json=batch, timeout=30, headers=auth)
    assert response.status_code == 400, response.text
    assert [err["loc"] for err in response.json()["detail"]] == [[1, "timestamp"]]
    # Refused whole: the valid event of the batch was not logged either.
    retry = httpx.post(f"{url}/events", json=batch[:1], timeout=30, headers=auth).json()
    assert retry["accepted"] == 1


def test_an_event_id_resent_with_other_content_is_a_409(
    guarded: tuple[str, SharedServer, int], world_end_iso: str, auth: dict[str, str]
) -> None:
    url, _, _ = guarded
    first = _event("conflict-1", 3, 11, "impression", world_end_iso)
    assert (
        httpx.post(f"{url}/events", json=[first], timeout=30, headers=auth).json()["accepted"] == 1
    )
    same = httpx.post(f"{url}/events", json=[first], timeout=30, headers=auth)
    assert same.status_code == 200 and same.json()["duplicates"] == 1
    forged = httpx.post(
        f"{url}/events", json=[{**first, "action": "hide"}], timeout=30, headers=auth
    )
    assert forged.status_code == 409, forged.text
    assert "conflict-1" in forged.json()["error"]


def test_a_json_body_nested_5000_deep_is_a_prompt_400(
    guarded: tuple[str, SharedServer, int], auth: dict[str, str]
) -> None:
    url, _, _ = guarded
    for route in ("/events", "/rank"):
        response = httpx.post(
            f"{url}{route}",
            content=b"[" * 5000,
            headers={**auth, "content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 400, (route, response.text)


def test_multipart_without_a_boundary_is_a_400(
    guarded: tuple[str, SharedServer, int], auth: dict[str, str]
) -> None:
    url, _, _ = guarded
    response = httpx.post(
        f"{url}/rank",
        content=b'--x\r\nContent-Disposition: form-data; name="user_id"\r\n\r\n1\r\n--x--\r\n',
        headers={**auth, "content-type": "multipart/form-data"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "boundary" in response.json()["error"]


def test_long_bad_values_are_not_echoed(
    guarded: tuple[str, SharedServer, int], world_end_iso: str, auth: dict[str, str]
) -> None:
    url, _, _ = guarded
    long_action = _event("echo-1", 3, 11, "a" * 1_000_000, world_end_iso)
    long_field = {**_event("echo-2", 3, 11, "like", world_end_iso), "b" * 1_000_000: 1}
    for body, route in ((long_action, "/events"), (long_field, "/events")):
        response = httpx.post(f"{url}{route}", json=[body], timeout=30, headers=auth)
        assert response.status_code == 400
        assert len(response.content) < 2_000, len(response.content)
    long_rank = httpx.post(
        f"{url}/rank", json={"user_id": 1, "c" * 1_000_000: 1}, timeout=30, headers=auth
    )
    assert long_rank.status_code == 400 and len(long_rank.content) < 2_000


def test_the_action_enum_is_in_the_openapi_schema(guarded: tuple[str, SharedServer, int]) -> None:
    url, _, _ = guarded
    schema = httpx.get(f"{url}/docs.json", timeout=30).text
    assert '"long_dwell"' in schema and '"impression"' in schema


def test_refused_requests_log_one_warning_line_without_a_traceback(
    guarded: tuple[str, SharedServer, int], world_end_iso: str, auth: dict[str, str]
) -> None:
    url, server, mark = guarded
    bad_event = _event("log-1", 3, 11, "love", world_end_iso)
    assert (
        httpx.post(f"{url}/events", json=[bad_event], timeout=30, headers=auth).status_code == 400
    )
    assert (
        httpx.post(f"{url}/rank", json={"user_id": -1}, timeout=30, headers=auth).status_code == 400
    )
    conflict = _event("log-2", 3, 11, "like", world_end_iso)
    httpx.post(f"{url}/events", json=[conflict], timeout=30, headers=auth)
    changed = {**conflict, "action": "reply"}
    assert httpx.post(f"{url}/events", json=[changed], timeout=30, headers=auth).status_code == 409
    output = server.startup_output() + server.output_since(mark)
    assert "Traceback" not in output, output[-3000:]
    warnings = [line for line in output.splitlines() if "Exception on /" in line]
    assert len(warnings) >= 3 and all("WARNING" in line for line in warnings), warnings


def test_class_explores_its_share_with_exact_propensities_and_reproducible_seeds(
    ranker: Any, served_workspace: Workspace, world_end_iso: str
) -> None:
    candidates = read_table(TWEETS, served_workspace.world)["tweet_id"].to_numpy()[:150]

    def feed(seed: int) -> dict[str, Any]:
        request = RankRequest(
            user_id=5,
            candidate_tweet_ids=candidates.tolist(),
            request_time=world_end_iso,
            limit=200,
            seed=seed,
        )
        return asyncio.run(ranker.rank(request, CTX)).model_dump()

    greedy = feed(11)
    assert not greedy["explored"] and greedy["seed"] == 11
    assert all(i["propensity"] == 1.0 for i in greedy["items"])
    config = ranker.config
    # Every request explores; diversity off, so the draw is over the scores shown.
    ranker.config = config.model_copy(update={"explore_share": 1.0, "diversity": 1.0})
    try:
        first, again = feed(11), feed(11)
        others = [feed(seed) for seed in range(12, 16)]
    finally:
        ranker.config = config
    assert first["explored"] and not first["degraded"]

    def tweets(body: dict[str, Any]) -> list[int]:
        return [i["tweet_id"] for i in body["items"]]

    assert tweets(first) == tweets(again)
    assert any(tweets(other) != tweets(first) for other in others)
    # The whole feed is shown (limit >= candidates): each slot's propensity is
    # exp(l) over the sum of exp(l) of that slot and the slots below it.
    assert sorted(tweets(first)) == sorted(candidates.tolist()) == sorted(tweets(greedy))
    scores = np.array([i["score"] for i in first["items"]])
    logits = (scores - scores.max()) / (config.explore_temperature * scores.std())
    weights = np.exp(logits)
    expected = weights / np.cumsum(weights[::-1])[::-1]
    np.testing.assert_allclose([i["propensity"] for i in first["items"]], expected, rtol=1e-6)


def test_an_impression_event_keeps_the_propensity_its_feed_gave_it(
    ranker: Any, asgi: TestClient, served_workspace: Workspace, world_end_iso: str
) -> None:
    config = ranker.config
    ranker.config = config.model_copy(update={"explore_share": 1.0})
    try:
        request = RankRequest(
            user_id=6,
            candidate_tweet_ids=list(range(20, 60)),
            request_time=world_end_iso,
            limit=5,
            seed=3,
        )
        feed = asyncio.run(ranker.rank(request, CTX)).model_dump()
    finally:
        ranker.config = config
    assert feed["explored"] and any(i["propensity"] < 1 for i in feed["items"])
    sent = {
        f"prop-{i['tweet_id']}": {
            **_event(f"prop-{i['tweet_id']}", 6, i["tweet_id"], "impression", world_end_iso),
            "request_id": feed["request_id"],
            "propensity": i["propensity"],
        }
        for i in feed["items"]
    }
    answer = asgi.post("/events", json=list(sent.values()))
    assert answer.status_code == 200 and answer.json()["accepted"] == len(sent), answer.text
    log = EventLog(served_workspace.data / "serving" / "events.db", load_actions())
    try:
        table = log.to_table().to_pandas().set_index("event_id").loc[list(sent)]
    finally:
        log.close()
    assert (table["request_id"] == feed["request_id"]).all()
    assert table["propensity"].tolist() == [e["propensity"] for e in sent.values()]
