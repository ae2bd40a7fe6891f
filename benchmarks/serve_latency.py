"""Latency of ``POST /rank`` with 500 candidates over HTTP, next to the naive path.

Copies a workspace (default: the repository's demo world) to a temporary
folder, trains a quick champion there if it has none, fills the Redis
profile (a Feast project and candidate keys of its own), and starts
``bentoml serve`` (2 workers) once per profile. Each request is a random user
with 500 tweets of the last two simulated days as candidates. Both workers are
warmed with 100 other requests before anything is timed. Measured:

- sequential p50/p95/p99 for the SQLite (embedded) and Redis (production) profiles;
- on Redis, the same phase with the champion's network recorded with the
  previous FeatureService (``ranker_v2``: the pair features from a key per
  user-author pair, not from the user's top-author list), and the ``HMGET``
  commands Redis executed per request for each (``*_v2``, ``hmget_per_rank*``);
  ``--ab-rounds N`` alternates the two N times and reports the median ratios
  (``redis_p50_ratio_over_v2``, ``redis_p99_ratio_over_v2``). Skipped, with
  the reason printed and no ``*_v2`` keys, when the champion reads features
  ``ranker_v2`` does not serve (a ``ranker_v4`` model's all-history rates);
- concurrency 8 on the SQLite profile: requests per second and p99;
- the SQLite sequential phase again with ``FEEDRANK_AUTH=off``: the cost of the
  API key check and rate limit (``*_auth_off``);
- the SQLite sequential phase again with ``FEEDRANK_EXPLORE_SHARE=1``: every
  feed a Plackett-Luce draw with its propensities, the cost of exploring
  (``*_explore``; the other phases explore nothing, the default);
- the naive path on the same requests, in process: Feast
  ``get_online_features(...).to_dict()`` plus the model forward.

Bars: p99 <= 20 ms sequential, p50 >= 15x faster than naive, >= 150 rps with
p99 <= 50 ms at concurrency 8.

Two clients measure each phase, on the same requests to the same server.
The lean one (the keys without a suffix, since 2026-12-02) is one asyncio
loop on raw HTTP/1.1 keep-alive connections, with the bodies encoded before
the clock starts; it reads the status line and the body, nothing more. The
``httpx`` one (keys ending in ``_httpx``; these were the unsuffixed keys
before) runs concurrency 8 as 8 threads of this process: they share its GIL,
and their CPU (JSON encoding, httpx's machinery) takes the same 2 cores the
server's 2 workers need. At concurrency 8 it spent 1.5-2.0 ms of CPU a
request against the lean client's 0.4, and left the server 1.5 cores instead
of 1.8 (``client_cpu_ms_c8*`` in the RESULT); the gap between the two clients
is the client, not the server. The lean sequential phases also report the
CPU the server's workers spent per request (``server_cpu_ms_*``).

    .venv/bin/python benchmarks/serve_latency.py [--workspace DIR] [--requests N] [--ab-rounds N]

Needs Redis and PostgreSQL on 127.0.0.1 for the production profile. Ends with
``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from core.actions import load_actions
from core.feast_store import FEATURE_SERVICE, Workspace, drop_project, entity_rows, open_store
from core.tables import TWEETS, read_table
from core.workspace import REPO_ROOT
from feedrank.pipeline import publish_features
from load.harness import (
    Served,
    auth_headers,
    copy_workspace,
    ensure_champion,
    rank_requests,
    serve,
)
from serving.auth import AUTH_ENV
from serving.candidates import load_redis_candidates
from serving.model_store import BENTO_MODEL, RANKER_FOLDER
from serving.service import MODEL_SOURCE_ENV, MODEL_TAG_ENV

WARM_CONNECTIONS = 4
PREVIOUS_SERVICE = "ranker_v2"
"""The FeatureService before the pair features moved into the user's top-author list."""
BARS = {"p99_ms": 20.0, "naive_ratio_p50": 15.0, "rps_c8": 150.0, "p99_ms_c8": 50.0}


def _percentiles(ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
    }


def _sequential(
    url: str, requests: list[dict[str, Any]], warmup: int, headers: Mapping[str, str]
) -> tuple[dict[str, float], int]:
    degraded = 0
    with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
        for body in requests[:warmup]:
            client.post("/rank", json=body)
        times = []
        for body in requests[warmup:]:
            start = time.perf_counter()
            response = client.post("/rank", json=body)
            times.append((time.perf_counter() - start) * 1000)
            degraded += bool(response.json()["degraded"])
    return _percentiles(times), degraded


def _concurrent(
    url: str, requests: list[dict[str, Any]], workers: int, headers: Mapping[str, str]
) -> tuple[dict[str, float], float, int]:
    clients = [httpx.Client(base_url=url, timeout=10, headers=headers) for _ in range(workers)]
    opened = [threading.Event() for _ in range(workers + 1)]
    opened[0].set()

    def call(i: int) -> tuple[float, bool]:
        if i < workers:  # the ramp (see _lean): connection i opens once i - 1 is busy
            opened[i].wait()
            threading.Timer(0.002, opened[i + 1].set).start()
        start = time.perf_counter()
        response = clients[i % workers].post("/rank", json=requests[i])
        return (time.perf_counter() - start) * 1000, bool(response.json()["degraded"])

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(call, range(len(requests))))
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    return (
        _percentiles([t for t, _ in results]),
        len(requests) / elapsed,
        sum(d for _, d in results),
    )


def _encode(url: str, body: dict[str, Any], headers: Mapping[str, str]) -> bytes:
    """A whole ``POST /rank`` HTTP/1.1 request (keep-alive is HTTP/1.1's default)."""
    payload = json.dumps(body).encode()
    host = httpx.URL(url).netloc.decode()
    head = f"POST /rank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response (BentoML sends JSON bodies chunked)."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head:
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        return status, await reader.readexactly(length)
    chunks = []
    while size := int((await reader.readline()).split(b";", 1)[0], 16):
        chunks.append((await reader.readexactly(size + 2))[:-2])
    await reader.readline()  # the blank line after the last chunk
    return status, b"".join(chunks)


def _lean(
    url: str, requests: list[dict[str, Any]], workers: int, headers: Mapping[str, str]
) -> tuple[dict[str, float], float, int]:
    """The lean client (see the module docstring): ``workers`` connections, one asyncio loop."""
    bodies = [_encode(url, body, headers) for body in requests]
    parsed = httpx.URL(url)
    results: list[tuple[float, int, bytes]] = []
    pending = iter(bodies)

    async def connection(opened: asyncio.Event, busy: asyncio.Event) -> None:
        # The ramp: a connection opens once the one before has a request in
        # flight. The 2 workers share one listening socket, and an idle worker
        # accepts every connection that is pending when it wakes, so 8
        # connections opened at once often all landed on one worker (81 vs
        # 181-217 req/s from run to run). Opened while the others are busy,
        # each goes to the worker that is free to accept it.
        await opened.wait()
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        try:
            for body in pending:  # shared: each request is sent once, by the first free connection
                start = time.perf_counter()
                writer.write(body)
                busy.set()
                status, answer = await _response(reader)
                results.append(((time.perf_counter() - start) * 1000, status, answer))
        finally:
            writer.close()
            await writer.wait_closed()

    async def run() -> float:
        events = [asyncio.Event() for _ in range(workers + 1)]
        events[0].set()
        started = time.perf_counter()
        await asyncio.gather(*(connection(events[i], events[i + 1]) for i in range(workers)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    failed = [status for _, status, _ in results if status != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} /rank requests failed (HTTP {failed[0]})")
    degraded = sum(bool(json.loads(answer)["degraded"]) for _, _, answer in results)
    return _percentiles([ms for ms, _, _ in results]), len(results) / elapsed, degraded


def _lean_with_cpu(
    served: Served, requests: list[dict[str, Any]], headers: Mapping[str, str]
) -> tuple[dict[str, float], int, float]:
    """The lean client's sequential phase, and the CPU its workers spent per request (ms).

    Server CPU per request: user + system time of the worker processes over
    the phase (background threads included), divided by the requests. It
    leaves out the client and the time a request waits for a core, though not
    the machine's own speed (8.7-11.5 ms for the same SQLite server in four
    runs of 2026-12-01 and 02).
    """
    import psutil  # pylint: disable=import-outside-toplevel  # a BentoML dependency

    workers = [psutil.Process(pid) for pid in served.worker_pids()]

    def cpu_s() -> float:
        return sum(sum(w.cpu_times()[:2]) for w in workers)

    before = cpu_s()
    latency, _, degraded = _lean(served.url, requests, 1, headers)
    return latency, degraded, round((cpu_s() - before) / len(requests) * 1000, 2)


def _warm(url: str, requests: list[dict[str, Any]], headers: Mapping[str, str]) -> None:
    """Warm both workers (their row caches and first code paths) before anything is timed.

    A sequential phase runs on one connection, so on one worker; warmed through
    it alone, the other worker stayed cold, and a phase that landed there timed
    its first ~15 requests at 16-30 ms (about 4% of 400: the p99). Four
    connections opened one at a time under load (see :func:`_lean`) reach both.
    """
    _lean(url, requests, WARM_CONNECTIONS, headers)


def _naive(ws: Workspace, requests: list[dict[str, Any]]) -> dict[str, float]:
    """Feast's own online read plus the model, in process, on the same requests."""
    from core.model_registry import load_ranker  # pylint: disable=import-outside-toplevel

    store = open_store(ws)
    service = store.get_feature_service(FEATURE_SERVICE)
    ranker = load_ranker(ws, "champion")
    tweets = read_table(TWEETS, ws.world)
    author_of = dict(
        zip(tweets["tweet_id"].to_pylist(), tweets["author_id"].to_pylist(), strict=True)
    )
    times = []
    for body in requests:
        start = time.perf_counter()
        ts = int(datetime.fromisoformat(body["request_time"]).timestamp())
        tweet_ids = body["candidate_tweet_ids"]
        candidates = {
            "user_id": [body["user_id"]] * len(tweet_ids),
            "author_id": [author_of[t] for t in tweet_ids],
            "tweet_id": tweet_ids,
        }
        rows = entity_rows(store, FEATURE_SERVICE, candidates, ts)
        features = store.get_online_features(features=service, entity_rows=rows).to_dict()
        ranker.predict_proba(
            {k: np.asarray(features[k], dtype=float) for k in ranker.preprocessor.feature_names}
        )
        times.append((time.perf_counter() - start) * 1000)
    return _percentiles(times)


def _print_bars(result: dict[str, float]) -> None:
    """One line per bar of the serving issue: the figure, the bar, met or missed (both clients)."""
    checks = [
        (f"p99 {store} ({client})", result[f"p99_ms_{store}{suffix}"], "<=", BARS["p99_ms"])
        for store in ("sqlite", "redis")
        for client, suffix in (("lean", ""), ("httpx", "_httpx"))
    ]
    for client, suffix in (("lean", ""), ("httpx", "_httpx")):
        ratio = result[f"naive_ratio_p50{suffix}"]
        checks.append((f"p50 x naive ({client})", ratio, ">=", BARS["naive_ratio_p50"]))
    for client, suffix in (("lean", ""), ("httpx", "_httpx")):
        checks.append((f"c8 req/s ({client})", result[f"rps_c8{suffix}"], ">=", BARS["rps_c8"]))
        checks.append((f"c8 p99 ({client})", result[f"p99_ms_c8{suffix}"], "<=", BARS["p99_ms_c8"]))
    for name, value, op, target in checks:
        met = value <= target if op == "<=" else value >= target
        print(f"bar {name}: {value} (bar {op} {target}) {'met' if met else 'missed'}", flush=True)


def _against_previous(runs: Mapping[str, Mapping[str, Any]], rounds: int) -> dict[str, float]:
    """The ``*_v2`` keys: the twin's figures and the median ratios over alternated rounds."""
    ratios = {
        q: float(
            np.median(
                [runs[f"current{i}"]["lean"][q] / runs[f"v2{i}"]["lean"][q] for i in range(rounds)]
            )
        )
        for q in ("p50_ms", "p99_ms")
    }
    print(
        f"redis p50 / p99, current service over {PREVIOUS_SERVICE}, median of "
        f"{rounds} alternated round(s): {ratios['p50_ms']:.2f}x / {ratios['p99_ms']:.2f}x",
        flush=True,
    )
    previous = runs["v20"]
    return {
        "p50_ms_redis_v2": previous["lean"]["p50_ms"],
        "p99_ms_redis_v2": previous["lean"]["p99_ms"],
        "server_cpu_ms_redis_v2": previous["cpu"],
        "hmget_per_rank_redis_v2": previous["hmget_per_rank"],
        "redis_p50_ratio_over_v2": round(ratios["p50_ms"], 3),
        "redis_p99_ratio_over_v2": round(ratios["p99_ms"], 3),
    }


def _client_cpu_s() -> float:
    """CPU seconds this process (the clients) has used, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _twin(ws: Workspace, service: str) -> str | None:
    """The champion's network recorded with FeatureService ``service``, as a BentoML model.

    ``ranker_v2`` and ``ranker_v3`` hand the model the same feature names
    (v3 computes the pair features from the user's top-author list), so the
    twin serves the same network through the older feature read: an A/B of
    the two feature paths alone. Returns its tag, or None (and says why) when
    the champion reads features ``service`` does not serve, as a ``ranker_v4``
    model does (its all-history rates): every answer of that twin would be a
    degraded one, which times the fallback, not the feature read.
    """
    import bentoml  # pylint: disable=import-outside-toplevel

    from core.model_registry import load_ranker  # pylint: disable=import-outside-toplevel
    from training.dataset import feature_names  # pylint: disable=import-outside-toplevel

    ranker = load_ranker(ws, "champion")
    missing = sorted(
        set(ranker.preprocessor.feature_names) - set(feature_names(open_store(ws), service))
    )
    if missing:
        print(
            f"A/B against {service} skipped: the champion ({ranker.feature_service}) reads "
            f"{len(missing)} features it does not serve ({', '.join(missing[:3])}, ...)",
            flush=True,
        )
        return None
    ranker.feature_service = service
    tag = f"{BENTO_MODEL}:{service.replace('_', '-')}-twin"
    with bentoml.models.create(tag, metadata={"feature_service": service}) as model:
        ranker.save(Path(model.path) / RANKER_FOLDER)
    return tag


def _redis_profile(
    ws: Workspace,
    variants: Mapping[str, Mapping[str, str]],
    requests: list[dict[str, Any]],
    warmup: list[dict[str, Any]],
    headers: Mapping[str, str],
) -> dict[str, dict[str, Any]]:
    """The sequential phases on the production profile, in a Feast project of their own.

    Each variant (server settings) is served in turn on the same data. Returns
    per variant the httpx and lean percentiles, the workers' CPU per request,
    the degraded answers and the ``HMGET`` commands Redis executed per
    request of the lean phase; the project and its candidate keys are dropped after.
    """
    import redis  # pylint: disable=import-outside-toplevel

    project = f"bench{uuid.uuid4().hex[:8]}"
    store = open_store(ws, "production", project=project)
    client = redis.Redis("127.0.0.1", 6379)
    production = {"FEEDRANK_FEAST_PROFILE": "production", "FEEDRANK_FEAST_PROJECT": project}

    def hmgets() -> int:
        return int(client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))

    out = {}
    try:
        publish_features(store, ws)
        load_redis_candidates(client, ws.world, load_actions(), prefix=f"feedrank:{project}:")
        for name, settings in variants.items():
            with serve(ws, {**settings, **production}) as served:
                _warm(served.url, warmup, headers)
                sequential, degraded = _sequential(served.url, requests, 50, headers)
                before = hmgets()
                lean, degraded_lean, cpu = _lean_with_cpu(served, requests[50:], headers)
                out[name] = {
                    "sequential": sequential,
                    "lean": lean,
                    "cpu": cpu,
                    "degraded": degraded + degraded_lean,
                    "hmget_per_rank": round((hmgets() - before) / len(requests[50:]), 1),
                }
    finally:
        drop_project(store)
        for key in client.scan_iter(match=f"feedrank:{project}:*"):
            client.unlink(key)
    return out


def main() -> None:
    """Run the benchmark and print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--requests", type=int, default=400, help="Timed requests per run.")
    parser.add_argument("--naive-requests", type=int, default=60)
    parser.add_argument(
        "--ab-rounds",
        type=int,
        default=1,
        help=f"Redis rounds of the current service and {PREVIOUS_SERVICE}, alternated.",
    )
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="feedrank-bench-bentoml-"))
    # The production settings: the 15 ms deadline, 1% of feature vectors sampled.
    settings = {"FEEDRANK_FEATURE_DEADLINE_MS": "15", "FEEDRANK_FEATURE_SAMPLE_RATE": "0.01"}
    with tempfile.TemporaryDirectory(prefix="feedrank-bench-") as tmp:
        ws = copy_workspace(args.workspace, Path(tmp))
        ensure_champion(ws)
        requests = rank_requests(ws, args.requests + 50)
        warmup = rank_requests(ws, 100, seed=4)
        headers = auth_headers(ws)

        with serve(ws, settings) as served:
            _warm(served.url, warmup, headers)
            sqlite, degraded = _sequential(served.url, requests, 50, headers)
            sqlite_lean, degraded_lean, cpu_sqlite = _lean_with_cpu(served, requests[50:], headers)
            client_cpu = _client_cpu_s()
            c8, rps, degraded_c8 = _concurrent(served.url, requests[50:], 8, headers)
            client_cpu_httpx = _client_cpu_s() - client_cpu
            client_cpu = _client_cpu_s()
            c8_lean, rps_lean, degraded_c8_lean = _lean(served.url, requests[50:], 8, headers)
            client_cpu_lean = _client_cpu_s() - client_cpu
        # The same sequential phase with authentication off: what a key check costs.
        with serve(ws, settings | {AUTH_ENV: "off"}) as served:
            _warm(served.url, warmup, {})
            open_lean, _, cpu_open = _lean_with_cpu(served, requests[50:], {})
        # And with every feed explored: what the draw and its propensities cost.
        with serve(ws, settings | {"FEEDRANK_EXPLORE_SHARE": "1"}) as served:
            _warm(served.url, warmup, headers)
            explore_lean, _, cpu_explore = _lean_with_cpu(served, requests[50:], headers)
        degraded += degraded_lean + degraded_c8_lean
        print(f"sqlite sequential {sqlite} degraded={degraded}", flush=True)
        print(f"sqlite sequential, lean {sqlite_lean} CPU/request {cpu_sqlite} ms", flush=True)
        print(f"sqlite concurrency 8: {c8} rps={rps:.0f} degraded={degraded_c8}", flush=True)
        print(f"sqlite concurrency 8, lean client: {c8_lean} rps={rps_lean:.0f}", flush=True)
        print(
            f"sqlite sequential, lean, auth off {open_lean} CPU/request {cpu_open} ms "
            f"(auth on / off p50: {sqlite_lean['p50_ms'] / open_lean['p50_ms']:.2f}x)",
            flush=True,
        )
        print(
            f"sqlite sequential, lean, every feed explored {explore_lean} CPU/request "
            f"{cpu_explore} ms (explored / greedy p99: "
            f"{explore_lean['p99_ms'] / sqlite_lean['p99_ms']:.2f}x)",
            flush=True,
        )
        per_request = 1000 / len(requests[50:])

        twin_tag = _twin(ws, PREVIOUS_SERVICE)
        twin = {MODEL_SOURCE_ENV: "bentoml", MODEL_TAG_ENV: twin_tag or ""}
        # Alternated, so that the machine's drift falls on both sides alike.
        variants = {}
        for i in range(args.ab_rounds if twin_tag else 1):
            variants |= {f"current{i}": settings}
            if twin_tag:
                variants |= {f"v2{i}": settings | twin}
        runs = _redis_profile(ws, variants, requests, warmup, headers)
        for name, run in runs.items():
            print(
                f"redis ({name}) sequential {run['sequential']} degraded={run['degraded']}\n"
                f"redis ({name}) sequential, lean {run['lean']} CPU/request {run['cpu']} ms, "
                f"HMGET/request {run['hmget_per_rank']}",
                flush=True,
            )
        redis_seq, redis_lean = runs["current0"]["sequential"], runs["current0"]["lean"]
        against_previous = _against_previous(runs, args.ab_rounds) if twin_tag else {}

        naive = _naive(ws, requests[: args.naive_requests])
        print(f"naive (get_online_features + model) {naive}", flush=True)
        result = {
            "p50_ms_sqlite": sqlite_lean["p50_ms"],
            "p95_ms_sqlite": sqlite_lean["p95_ms"],
            "p99_ms_sqlite": sqlite_lean["p99_ms"],
            "p50_ms_redis": redis_lean["p50_ms"],
            "p95_ms_redis": redis_lean["p95_ms"],
            "p99_ms_redis": redis_lean["p99_ms"],
            "naive_p50_ms": naive["p50_ms"],
            "naive_ratio_p50": round(naive["p50_ms"] / sqlite_lean["p50_ms"], 1),
            "rps_c8": round(rps_lean, 1),
            "p99_ms_c8": c8_lean["p99_ms"],
            "p50_ms_sqlite_httpx": sqlite["p50_ms"],
            "p99_ms_sqlite_httpx": sqlite["p99_ms"],
            "p50_ms_redis_httpx": redis_seq["p50_ms"],
            "p99_ms_redis_httpx": redis_seq["p99_ms"],
            "naive_ratio_p50_httpx": round(naive["p50_ms"] / sqlite["p50_ms"], 1),
            "rps_c8_httpx": round(rps, 1),
            "p99_ms_c8_httpx": c8["p99_ms"],
            "client_cpu_ms_c8": round(client_cpu_lean * per_request, 2),
            "client_cpu_ms_c8_httpx": round(client_cpu_httpx * per_request, 2),
            "server_cpu_ms_sqlite": cpu_sqlite,
            "server_cpu_ms_redis": runs["current0"]["cpu"],
            "hmget_per_rank_redis": runs["current0"]["hmget_per_rank"],
            **against_previous,
            "p50_ms_sqlite_auth_off": open_lean["p50_ms"],
            "p99_ms_sqlite_auth_off": open_lean["p99_ms"],
            "server_cpu_ms_sqlite_auth_off": cpu_open,
            "p50_ms_sqlite_explore": explore_lean["p50_ms"],
            "p99_ms_sqlite_explore": explore_lean["p99_ms"],
            "server_cpu_ms_sqlite_explore": cpu_explore,
            "degraded": degraded + degraded_c8 + sum(r["degraded"] for r in runs.values()),
        }
        _print_bars(result)
        print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
