"""A short headless locust run against `bentoml serve`: the load test itself works, no failures."""

import json
import subprocess  # nosec B404
import sys
from pathlib import Path

import pytest

from feedrank.workspace import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_smoke.py"


def test_locust_smoke_run_has_no_failures(server_url: str, served_workspace: Workspace) -> None:
    done = subprocess.run(  # nosec B603
        [
            sys.executable,
            str(SCRIPT),
            "--url",
            server_url,
            "--workspace",
            str(served_workspace.root),
            "--users",
            "4",
            "--seconds",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    assert result["locust_requests"] > 20
    assert result["locust_failures"] == 0
    assert result["locust_p99_ms"] > 0
