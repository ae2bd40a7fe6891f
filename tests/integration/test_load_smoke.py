"""A short headless locust run against `bentoml serve`: the load test itself works, no failures."""

import json
import subprocess  # nosec B404
import sys

import pytest

from core.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_locust_smoke_run_has_no_failures(scratch_workspace: Workspace, scratch_url: str) -> None:
    # The session's scratch server (a copy of the served workspace): the load posts
    # /events, which change the counters other tests compare.
    done = subprocess.run(  # nosec B603
        [
            sys.executable,
            "-m",
            "load.smoke",
            "--url",
            scratch_url,
            "--workspace",
            str(scratch_workspace.root),
            "--users",
            "4",
            "--seconds",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    # Not a throughput bar. The service is warmed before the clock starts: a fresh
    # server's first requests take seconds, and a 10 s run once got none under CI load.
    assert "warm-up:" in done.stdout
    assert result["locust_requests"] > 10
    assert result["locust_failures"] == 0
    assert result["locust_p99_ms"] > 0
