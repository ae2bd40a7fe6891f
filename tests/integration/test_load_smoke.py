"""A short headless locust run against `bentoml serve`: the load test itself works, no failures."""

import json
import shutil
import subprocess  # nosec B404
import sys
from pathlib import Path

import pytest

from core.workspace import Workspace
from tests.integration.conftest import (
    free_port,
    serving_environ,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_locust_smoke_run_has_no_failures(served_workspace: Workspace, tmp_path: Path) -> None:
    # A copy: the load posts /events, which change the counters other tests compare.
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(served_workspace.root, ws.root)
    port = free_port()
    server = start_server(serving_environ(ws), port, "--arg", "workers=2")
    try:
        wait_ready(server, f"http://127.0.0.1:{port}")
        done = subprocess.run(  # nosec B603
            [
                sys.executable,
                "-m",
                "load.smoke",
                "--url",
                f"http://127.0.0.1:{port}",
                "--workspace",
                str(ws.root),
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
    finally:
        stop_server(server)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    # Not a throughput bar. The service is warmed before the clock starts: a fresh
    # server's first requests take seconds, and a 10 s run once got none under CI load.
    assert "warm-up:" in done.stdout
    assert result["locust_requests"] > 10
    assert result["locust_failures"] == 0
    assert result["locust_p99_ms"] > 0
