"""The deploy jobs' smoke test (scripts/cd/smoke_rank.sh) against a real ``bentoml serve``."""

from __future__ import annotations

import os
import subprocess  # nosec B404  # runs the repository's own script
from collections.abc import Mapping

import pytest

from core.workspace import REPO_ROOT
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
SCRIPT = REPO_ROOT / "scripts" / "cd" / "smoke_rank.sh"


def _smoke(url: str, key: str | None, **extra: str) -> subprocess.CompletedProcess[str]:
    env: Mapping[str, str] = {**os.environ, "SMOKE_RETRIES": "2", **extra}
    if key is not None:
        env = {**env, "SMOKE_API_KEY": key}
    return subprocess.run(  # nosec B603  # fixed argv: the script and a URL
        [str(SCRIPT), url], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_ready_service_with_a_ranked_feed_passes(server_url: str, auth: dict[str, str]) -> None:
    done = _smoke(server_url, auth["Authorization"].removeprefix("Bearer "))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("smoke: ") and " items from feed-ranker:" in done.stdout


def test_a_refused_key_a_missing_service_and_no_key_fail(server_url: str) -> None:
    done = _smoke(server_url, "frk_nope_nope")
    assert done.returncode == 1
    assert "POST" in done.stderr and "/rank failed" in done.stderr and "401" in done.stderr
    done = _smoke(f"http://127.0.0.1:{free_port()}", "frk_nope_nope", SMOKE_RETRIES="0")
    assert done.returncode == 1 and "/readyz never answered 200" in done.stderr
    done = _smoke(server_url, None)
    assert done.returncode == 2 and "usage:" in done.stderr
