"""Reliability of the served API: fuzzing, an online-store outage, retried events.

Copies a workspace (default: the repository root) to a temporary folder,
trains a quick champion there if it has none, and runs three scenarios
against ``bentoml serve`` processes it starts itself (127.0.0.1 only):

- **fuzzing**: schemathesis generates requests for ``POST /rank`` and
  ``POST /events`` from the service's own OpenAPI document (``/docs.json``),
  valid and invalid ones, derandomised. Bar: no 5xx, every 4xx has a message.
- **outage**: the production profile on a private ``redis-server``; /rank in
  a loop, the Redis killed, then restarted on the same port and refilled.
  Counted: 5xx and degraded answers; measured: seconds from the restart until
  answers are ranked (not degraded) again.
- **duplicate events**: 10k unique events sent in batches from a thread pool,
  20% of them sent again (single ids and whole batches, as retries do). Bar:
  exactly 10k rows in the event log.

    .venv/bin/python benchmarks/reliability.py [--workspace DIR] [--fuzz-cases N] [--events N]

The outage scenario needs ``redis-server`` on the PATH and PostgreSQL on
127.0.0.1 (the SQL registry of the production profile); without them it is
skipped (its figures are null). Ends with ``RESULT {json}``.

The functions :func:`fuzz`, :func:`send_events` and :func:`logged_events` are
also used by ``tests/integration/test_reliability.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess  # nosec B404  # starts bentoml serve and redis-server with fixed argv
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the project's packages
    sys.path.insert(0, str(REPO_ROOT))

# pylint: disable=wrong-import-position
from features.store import Workspace  # noqa: E402
from metrics.actions import IMPRESSION, load_actions  # noqa: E402

FUZZ_ROUTES = ("/rank", "/events")
TEXT_LIMIT = 300


# --------------------------------------------------------------------------- fuzzing


@dataclass
class FuzzReport:
    """What the fuzzer sent and what came back."""

    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    silent_4xx: list[dict[str, Any]] = field(default_factory=list)
    transport_errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count_5xx(self) -> int:
        """Responses with a 5xx status."""
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> dict[str, Any]:
        """Counts, and the first few problems (request and response) for the report."""
        return {
            "cases": self.cases,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "5xx": self.count_5xx,
            "silent_4xx": len(self.silent_4xx),
            "transport_errors": len(self.transport_errors),
            "examples": [
                {**e, "request": e["request"][:TEXT_LIMIT]}
                for e in (self.server_errors + self.silent_4xx + self.transport_errors)[:5]
            ],
        }


def has_message(body: bytes) -> bool:
    """A 4xx body says something: non-empty text, or JSON with a non-empty value."""
    text = body.decode(errors="replace").strip()
    if not text:
        return False
    try:
        parsed = json.loads(text)
    except ValueError:
        return True
    if isinstance(parsed, dict):
        return any(v not in (None, "", [], {}) for v in parsed.values())
    return parsed not in (None, "", [], {})


def _describe(case: Any, status: int | str, body: bytes | str) -> dict[str, Any]:
    request_body = getattr(case, "body", None)
    try:
        shown = json.dumps(request_body, default=str)
    except (TypeError, ValueError):
        shown = repr(request_body)
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    return {
        "route": case.operation.path,
        "media_type": getattr(case, "media_type", None),
        "headers": {k: str(v)[:80] for k, v in (case.headers or {}).items()},
        "request": shown,
        "status": status,
        "response": text[:TEXT_LIMIT],
    }


def fuzz(url: str, examples_per_route: int, seed: int = 7, timeout: float = 30.0) -> FuzzReport:
    """Fuzz /rank and /events from the served OpenAPI document.

    Half of each route's examples are valid requests (positive generation),
    half invalid ones (negative). Derandomised with ``seed`` so a run repeats;
    no Hypothesis database, no shrinking (every case is one request).
    """
    # pylint: disable=import-outside-toplevel  # heavy, and only this scenario needs them
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/docs.json", timeout=timeout)
    report = FuzzReport()
    session = requests.Session()
    half = max(1, examples_per_route // 2)

    def check(case: Any) -> None:
        report.cases += 1
        try:
            response = case.call(base_url=url, session=session, timeout=timeout)
        except requests.RequestException as exc:
            report.transport_errors.append(_describe(case, "error", repr(exc)))
            return
        report.statuses[response.status_code] += 1
        if response.status_code >= 500:
            report.server_errors.append(_describe(case, response.status_code, response.content))
        elif response.status_code >= 400 and not has_message(response.content):
            report.silent_4xx.append(_describe(case, response.status_code, response.content))

    try:
        for route in FUZZ_ROUTES:
            operation = schema[route]["POST"]
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @hypothesis_seed(seed)
                @settings(
                    max_examples=half,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                    print_blob=False,
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    check(case)

                run()  # pylint: disable=no-value-for-parameter  # given() supplies it
    finally:
        session.close()
    return report


# --------------------------------------------------------------------------- events


@dataclass
class EventsReport:  # pylint: disable=too-many-instance-attributes  # a record
    """Totals of a duplicate-events run, from the /events answers."""

    prefix: str
    unique: int
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    failed_batches: int = 0
    per_tweet: dict[int, Counter[str]] = field(default_factory=dict)


def make_batches(
    n: int,
    *,
    prefix: str,
    now_iso: str,
    batch_size: int = 20,
    dup_share: float = 0.2,
    seed: int = 1,
) -> tuple[list[list[dict[str, Any]]], dict[int, Counter[str]]]:
    """``n`` unique events in batches, plus resends totalling ``dup_share * n`` events.

    Half the resent events are single ids mixed into later batches, half are
    whole batches sent again. Tweet ids are far outside any world (``10**12``
    and up) so nothing else touches their counters. Returns the batches (in a
    shuffled order) and the expected count per tweet and action.
    """
    rng = random.Random(seed)  # nosec B311  # test data, not security
    actions = [IMPRESSION, *load_actions().names]
    base_tweet = 10**12 + rng.randrange(10**9)
    events = [
        {
            "event_id": f"{prefix}{i}",
            "user_id": rng.randrange(1000),
            "tweet_id": base_tweet + rng.randrange(max(1, n // 10)),
            "action": rng.choice(actions),
            "dwell_seconds": None,
            "timestamp": now_iso,
        }
        for i in range(n)
    ]
    expected: dict[int, Counter[str]] = {}
    for event in events:
        expected.setdefault(event["tweet_id"], Counter())[event["action"]] += 1
    batches = [events[i : i + batch_size] for i in range(0, n, batch_size)]
    dup_total = round(n * dup_share)
    whole = []
    resent = 0
    for batch in rng.sample(batches, len(batches)):
        if resent + len(batch) > dup_total // 2:
            break
        whole.append(list(batch))
        resent += len(batch)
    singles = rng.choices(events, k=dup_total - resent)
    mixed = [list(b) for b in batches]
    for event in singles:
        mixed[rng.randrange(len(mixed))].append(dict(event))
    out = mixed + whole
    rng.shuffle(out)
    return out, expected


def send_events(
    url: str,
    n: int,
    *,
    threads: int = 8,
    batch_size: int = 20,
    dup_share: float = 0.2,
    now_iso: str = "2026-01-01T00:00:00+00:00",
    seed: int = 1,
    max_seconds: float = 300.0,
) -> EventsReport:
    """Send ``n`` unique events plus 20% resends concurrently; retry 5xx and transport errors."""
    prefix = f"rel-{uuid.uuid4().hex[:10]}-"
    batches, expected = make_batches(
        n, prefix=prefix, now_iso=now_iso, batch_size=batch_size, dup_share=dup_share, seed=seed
    )
    report = EventsReport(prefix=prefix, unique=n, per_tweet=expected)
    report.sent = sum(len(b) for b in batches)
    deadline = time.monotonic() + max_seconds

    def post(client: httpx.Client, batch: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        for attempt in range(5):
            if time.monotonic() > deadline:
                break
            try:
                response = client.post("/events", json=batch)
            except httpx.HTTPError:
                time.sleep(0.1 * (attempt + 1))
                continue
            if response.status_code < 500:
                response.raise_for_status()
                return response.json(), attempt
            time.sleep(0.1 * (attempt + 1))
        return {}, 5

    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(threads)]
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            results = list(
                pool.map(lambda i: post(clients[i % threads], batches[i]), range(len(batches)))
            )
    finally:
        for client in clients:
            client.close()
    for body, retries in results:
        report.retries += min(retries, 4)
        if not body:
            report.failed_batches += 1
            continue
        report.accepted += body["accepted"]
        report.duplicates += body["duplicates"]
    return report


def logged_events(db_path: Path, prefix: str) -> tuple[int, int]:
    """(rows, distinct ids) of the event log whose ``event_id`` starts with ``prefix``."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
            " WHERE substr(event_id, 1, ?) = ?",
            (len(prefix), prefix),
        ).fetchone()
    finally:
        conn.close()
    return int(rows), int(distinct)


def logged_counters(db_path: Path, tweets: list[int]) -> dict[int, dict[str, int]]:
    """The event log's cumulative counters of these tweets."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        out: dict[int, dict[str, int]] = {}
        for tweet in tweets:
            rows = conn.execute(
                "SELECT counter, value FROM tweet_counters WHERE tweet_id = ?", (tweet,)
            )
            out[tweet] = dict(rows.fetchall())
    finally:
        conn.close()
    return out


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_workspace(source: Path, target: Path) -> Workspace:
    """The parts of a workspace the service reads (not its serving/ log)."""
    shutil.copytree(
        source / "feature_repo",
        target / "feature_repo",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for part in ("world", "truth", "feast", "features", "datasets", "mlflow"):
        if (source / "data" / part).exists():
            shutil.copytree(source / "data" / part, target / "data" / part)
    return Workspace(target)


def ensure_champion(ws: Workspace) -> None:
    """Train a quick champion (1 epoch) if the workspace has none."""
    # pylint: disable=import-outside-toplevel
    from training import registry
    from training.commands import run_training_pipeline
    from training.train import TrainConfig

    try:
        registry.model_version(registry.connect(ws), registry.CHAMPION)
        return
    except registry.PromotionError:
        pass
    print("no champion: training a quick one (1 epoch)", flush=True)
    run_training_pipeline(ws.root, TrainConfig(max_epochs=1), progress=False)


@contextmanager
def serve(ws: Workspace, env: dict[str, str], workers: int = 2) -> Iterator[str]:
    """``bentoml serve`` on a free port; yields its URL, stops it (by PID) on exit."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full.update(
        {
            "FEEDRANK_WORKSPACE": str(ws.root),
            "FEEDRANK_FEAST_PROFILE": "embedded",
            "FEEDRANK_FEATURE_DEADLINE_MS": "2000",
            "FEEDRANK_FEATURE_SAMPLE_RATE": "0",
        }
    )
    full.update(env)
    argv = [sys.executable, "-m", "bentoml", "serve", "serving.service:FeedRanker"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--arg", f"workers={workers}"]
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.Popen(  # nosec B603  # fixed argv
            argv, cwd=REPO_ROOT, env=full, stdout=log_file, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_file.seek(0)
                    tail = log_file.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"bentoml serve did not become ready:\n{tail}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    """A private, non-persistent ``redis-server`` on ``port``; returns once it answers PING."""
    import redis  # pylint: disable=import-outside-toplevel

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(folder)]
    # pylint: disable-next=consider-using-with  # the caller stops it
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)  # nosec B603  # fixed argv
    client = redis.Redis("127.0.0.1", port)
    try:
        for _ in range(200):
            try:
                client.ping()
                return proc
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    raise RuntimeError(f"redis-server on port {port} did not start")


def stop_process(proc: subprocess.Popen[bytes], hard: bool = False) -> None:
    """Kill (outage) or terminate a process we started, and reap it."""
    if proc.poll() is None:
        if hard:
            proc.kill()
        else:
            proc.terminate()
    proc.wait(timeout=20)


# --------------------------------------------------------------------------- outage


def _fill_online(ws: Workspace, project: str, redis_port: int) -> None:
    """Feast apply plus the daily online fill, into the Redis on ``redis_port``."""
    # pylint: disable=import-outside-toplevel
    from features.online import apply_repo, fill_online
    from features.store import open_store
    from simulation.world import load_world_config, world_end

    saved = os.environ.get("FEEDRANK_REDIS_URL")
    os.environ["FEEDRANK_REDIS_URL"] = f"127.0.0.1:{redis_port}"
    try:
        store = open_store(ws, "production", project=project)
        apply_repo(store, ws)
        fill_online(store, ws, world_end(load_world_config(ws.world)))
    finally:
        if saved is None:
            os.environ.pop("FEEDRANK_REDIS_URL", None)
        else:
            os.environ["FEEDRANK_REDIS_URL"] = saved


@dataclass
class OutagePhase:
    """Answers of one phase of the outage loop."""

    requests: int = 0
    status_5xx: int = 0
    degraded: int = 0
    errors: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def record(self, response: httpx.Response | None) -> bool | None:
        """Count one answer; returns whether it was ranked (None: no usable answer)."""
        self.requests += 1
        if response is None:
            self.errors += 1
            return None
        if response.status_code >= 500:
            self.status_5xx += 1
            return None
        body = response.json()
        if body["degraded"]:
            self.degraded += 1
            self.reasons[str(body["reason"])] += 1
            return False
        return True


def outage(
    ws: Workspace, requests_per_phase: int = 60, recovery_timeout: float = 60.0
) -> dict[str, Any]:
    """Kill the online store's Redis under /rank traffic, restart it, time the recovery."""
    # pylint: disable=import-outside-toplevel,too-many-locals
    import redis

    from serving.candidates import load_redis_candidates
    from simulation.world import load_world_config, world_end

    project = f"rel{uuid.uuid4().hex[:8]}"
    redis_port = free_port()
    end = world_end(load_world_config(ws.world))
    with tempfile.TemporaryDirectory(prefix="feedrank-rel-redis-") as folder:
        online = start_redis(redis_port, Path(folder))
        candidates = redis.Redis("127.0.0.1", 6379)  # the shared Redis keeps the candidates
        try:
            _fill_online(ws, project, redis_port)
            load_redis_candidates(
                candidates, ws.world, load_actions(), prefix=f"feedrank:{project}:"
            )
            env = {
                "FEEDRANK_FEAST_PROFILE": "production",
                "FEEDRANK_FEAST_PROJECT": project,
                "FEEDRANK_REDIS_URL": f"127.0.0.1:{redis_port}",
                "FEEDRANK_CANDIDATES_REDIS_URL": "redis://127.0.0.1:6379/0",
                "FEEDRANK_FEATURE_DEADLINE_MS": "300",
            }
            users = list(range(20, 20 + requests_per_phase * 4))
            with serve(ws, env) as url, httpx.Client(base_url=url, timeout=30) as client:

                def ask(i: int) -> httpx.Response | None:
                    body = {"user_id": users[i % len(users)], "request_time": end.isoformat()}
                    try:
                        return client.post("/rank", json={**body, "limit": 30})
                    except httpx.HTTPError:
                        return None

                before, during, after = OutagePhase(), OutagePhase(), OutagePhase()
                for i in range(requests_per_phase):
                    before.record(ask(i))
                stop_process(online, hard=True)
                for i in range(requests_per_phase):
                    during.record(ask(requests_per_phase + i))
                restarted = time.monotonic()
                online = start_redis(redis_port, Path(folder))
                _fill_online(ws, project, redis_port)  # a restarted Redis without --save is empty
                recovery: float | None = None
                i = 0
                while time.monotonic() - restarted < recovery_timeout and i < 10_000:
                    ranked = after.record(ask(2 * requests_per_phase + i))
                    i += 1
                    if ranked:
                        recovery = time.monotonic() - restarted
                        break
                    time.sleep(0.05)
                for j in range(requests_per_phase):  # and it stays recovered
                    after.record(ask(3 * requests_per_phase + j))
        finally:
            stop_process(online)
            for key in candidates.scan_iter(match=f"feedrank:{project}:*"):
                candidates.unlink(key)
            candidates.close()
    phases = {"before": before, "during": during, "after": after}
    return {
        "phases": {
            name: {
                "requests": p.requests,
                "5xx": p.status_5xx,
                "degraded": p.degraded,
                "errors": p.errors,
                "reasons": dict(p.reasons),
            }
            for name, p in phases.items()
        },
        "outage_5xx": sum(p.status_5xx + p.errors for p in phases.values()),
        "outage_degraded_responses": sum(p.degraded for p in phases.values()),
        "recovery_seconds": None if recovery is None else round(recovery, 3),
        "project": project,
    }


# --------------------------------------------------------------------------- main


def _world_end_iso(ws: Workspace) -> str:
    from simulation.world import load_world_config, world_end  # pylint: disable=import-outside-toplevel

    return world_end(load_world_config(ws.world)).isoformat()


def main() -> None:
    """Run the three scenarios and print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--fuzz-cases", type=int, default=600, help="Across both routes.")
    parser.add_argument("--events", type=int, default=10_000, help="Unique events.")
    parser.add_argument("--skip-outage", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_HOME", tempfile.mkdtemp(prefix="feedrank-rel-bentoml-"))
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="feedrank-rel-") as tmp:
        ws = copy_workspace(args.workspace, Path(tmp))
        ensure_champion(ws)
        with serve(ws, {}) as url:
            started = time.monotonic()
            report = fuzz(url, args.fuzz_cases // len(FUZZ_ROUTES))
            print(f"fuzzing ({time.monotonic() - started:.0f} s): {report.summary()}", flush=True)
            started = time.monotonic()
            events = send_events(url, args.events, now_iso=_world_end_iso(ws))
        rows, distinct = logged_events(ws.data / "serving" / "events.db", events.prefix)
        print(
            f"events ({time.monotonic() - started:.1f} s): sent {events.sent}, "
            f"accepted {events.accepted}, duplicates {events.duplicates}, "
            f"failed batches {events.failed_batches}; log rows {rows} (distinct {distinct})",
            flush=True,
        )
        result.update(
            fuzz_cases=report.cases,
            fuzz_5xx=report.count_5xx,
            fuzz_4xx_without_message=len(report.silent_4xx),
            events_sent=events.sent,
            events_unique=events.unique,
            events_accepted=events.accepted,
            events_unique_in_log=rows,
        )
        outage_result: dict[str, Any] = {
            "outage_5xx": None,
            "outage_degraded_responses": None,
            "recovery_seconds": None,
        }
        if args.skip_outage:
            print("outage: skipped (--skip-outage)", flush=True)
        else:
            try:
                outage_result = outage(ws)
                print(f"outage: {json.dumps(outage_result['phases'])}", flush=True)
            except Exception as exc:  # pylint: disable=broad-exception-caught  # reported, not fatal
                print(f"outage: skipped ({exc})", flush=True)
        result.update(
            {k: outage_result[k] for k in ("outage_5xx", "outage_degraded_responses")},
            recovery_seconds=outage_result["recovery_seconds"],
        )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
