"""A headless locust run of load/locustfile.py against a running service.

    .venv/bin/python -m load.smoke --url http://127.0.0.1:3000 \\
        --users 16 --seconds 60

The workspace (FEEDRANK_WORKSPACE or --workspace) supplies the user ids and
the simulated "now". Prints locust's summary and ends with
``RESULT {"locust_requests": ..., "locust_failures": ..., "locust_p99_ms": ...}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess  # nosec B404: runs locust with a fixed argv
import sys
import tempfile
from pathlib import Path

from core.workspace import REPO_ROOT

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def run_locust(url: str, workspace: Path, users: int, seconds: int) -> dict[str, float]:
    """Run locust headless; return the totals of its stats (all endpoints)."""
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
            "--csv",
            str(prefix),
            "--only-summary",
            "--exit-code-on-error",
            "0",
        ]
        env = {**os.environ, "FEEDRANK_WORKSPACE": str(workspace)}
        subprocess.run(command, env=env, check=True, timeout=seconds + 120)  # nosec B603
        with (Path(f"{prefix}_stats.csv")).open(encoding="utf-8") as stats:
            total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
    return {
        "locust_requests": int(total["Request Count"]),
        "locust_failures": int(total["Failure Count"]),
        "locust_rps": round(float(total["Requests/s"]), 1),
        "locust_p50_ms": float(total["50%"]),
        "locust_p95_ms": float(total["95%"]),
        "locust_p99_ms": float(total["99%"]),
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
    result = run_locust(args.url, args.workspace, args.users, args.seconds)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
