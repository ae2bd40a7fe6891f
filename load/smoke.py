"""A headless locust run of load/locustfile.py against a running service.

    .venv/bin/python -m load.smoke --url http://127.0.0.1:3000 \\
        --users 16 --seconds 60

The workspace (FEEDRANK_WORKSPACE or --workspace) supplies the user ids and
the simulated "now". The service is warmed first (:func:`warm_up`), so the
timed run starts on a service that has answered. Prints locust's summary and ends with
``RESULT {"locust_requests": ..., "locust_failures": ..., "locust_p99_ms": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404: runs locust with a fixed argv
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq

from core.workspace import REPO_ROOT, Workspace
from load.harness import load_headers
from simulation.world import load_world_config, world_end

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def warm_up(url: str, workspace: Path, answers: int = 4, timeout: float = 120.0) -> float:
    """Send /rank, each on a new connection, until ``answers`` came back 200; return the seconds.

    A fresh ``bentoml serve`` takes seconds over its first requests on each
    worker (first code paths, cold caches): on a slow CI machine a 10 s run
    once got no answer at all. New connections spread the requests over the
    workers.

    Raises:
        SystemExit: no ``answers`` answers within ``timeout`` seconds.
    """
    ws = Workspace(workspace)
    user = int(pq.read_table(ws.world / "users.parquet", columns=["user_id"])["user_id"][0].as_py())
    body = {
        "user_id": user,
        "limit": 50,
        "request_time": world_end(load_world_config(ws.world)).isoformat(),
    }
    headers = load_headers(ws)
    start = time.monotonic()
    ok = 0
    while ok < answers:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{url}: {ok} of {answers} warm-up /rank answers in {timeout:g} s")
        try:
            ok += (
                httpx.post(f"{url}/rank", json=body, headers=headers, timeout=30).status_code == 200
            )
        except httpx.HTTPError:
            time.sleep(0.5)
    return time.monotonic() - start


def run_locust(url: str, workspace: Path, users: int, seconds: int) -> dict[str, float]:
    """Run locust headless; return the totals of its stats (all endpoints).

    The figures come from ``--json-file``, which locust writes once at
    shutdown from its final stats. Its ``--csv`` files are rewritten every
    second but flushed every 10 s, so a short run can leave them empty.
    """
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "locust"
        command = [
            str(Path(sys.executable).with_name("locust")),
            "-f",
            str(LOCUSTFILE),
            "--host",
            url,
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--json-file",
            str(prefix),
            "--only-summary",
            "--exit-code-on-error",
            "0",
        ]
        env = {**os.environ, "FEEDRANK_WORKSPACE": str(workspace)}
        subprocess.run(command, env=env, check=True, timeout=seconds + 120)  # nosec B603
        entries = json.loads(Path(f"{prefix}.json").read_text(encoding="utf-8"))
    return totals(entries)


def totals(entries: list[dict]) -> dict[str, float]:
    """Sum locust's per-endpoint stats (its ``--json-file`` entries) into one row.

    Percentiles are taken over the merged ``response_times`` histograms (ms,
    rounded as locust rounds them). Not with locust's own helper: importing
    ``locust`` gevent-patches the whole process.
    """
    times = np.array([int(ms) for entry in entries for ms in entry["response_times"]], dtype=float)
    counts = np.array([n for entry in entries for n in entry["response_times"].values()], dtype=int)
    samples = np.repeat(times, counts)
    ends = [entry["last_request_timestamp"] for entry in entries if entry["last_request_timestamp"]]
    span = max(ends, default=0.0) - min((entry["start_time"] for entry in entries), default=0.0)
    requests = sum(entry["num_requests"] for entry in entries)

    def percentile(share: float) -> float:
        return float(np.percentile(samples, 100 * share, method="higher")) if samples.size else 0.0

    return {
        "locust_requests": requests,
        "locust_failures": sum(entry["num_failures"] for entry in entries),
        "locust_rps": round(requests / span, 1) if span > 0 else 0.0,
        "locust_p50_ms": percentile(0.50),
        "locust_p95_ms": percentile(0.95),
        "locust_p99_ms": percentile(0.99),
    }


def main() -> None:
    """Parse options, run, print the RESULT line."""
    parser = argparse.ArgumentParser(prog="python -m load.smoke", description=__doc__)
    parser.add_argument("--url", required=True, help="Base URL of the running service.")
    parser.add_argument(
        "--workspace",
        type=Path,
        default=Path(os.environ.get("FEEDRANK_WORKSPACE", REPO_ROOT)),
        help="Workspace whose users the load uses (default: FEEDRANK_WORKSPACE or the repo).",
    )
    parser.add_argument("--users", type=int, default=16, help="Concurrent simulated users.")
    parser.add_argument("--seconds", type=int, default=60, help="Length of the run.")
    args = parser.parse_args()
    warmed = warm_up(args.url, args.workspace)
    print(f"warm-up: {warmed:.1f} s", flush=True)
    result = run_locust(args.url, args.workspace, args.users, args.seconds)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
