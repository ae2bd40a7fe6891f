"""``feast ui`` runs from the README's install and shows the feature repo (issue 20, item 6).

It crashed before with ``No module named 'grpc'``: Feast's UI server imports
its registry's gRPC stubs, which come with the ``grpcio`` extra of feast.
The test starts the real ``feast ui`` on the tiny world's registry and reads
the page and the registry API the page calls.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess  # nosec B404  # starts feast ui with fixed argv
import sys
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import yaml

from core.workspace import Workspace
from load.harness import free_port

pytestmark = [pytest.mark.integration]


def test_feast_ui_serves_the_page_and_the_registry(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(tiny_workspace.root, root, ignore=shutil.ignore_patterns("__pycache__"))
    repo = Workspace(root).repo
    project = yaml.safe_load((repo / "feature_store.yaml").read_text())["project"]
    port = free_port()
    feast = str(Path(sys.executable).with_name("feast"))
    log = tmp_path / "feast-ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # nosec B603  # fixed argv
            [feast, "ui", "--host", "127.0.0.1", "--port", str(port)],
            cwd=repo,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        page = None
        while page is None:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            with suppress(httpx.HTTPError):
                page = httpx.get(f"{url}/", timeout=2)
            time.sleep(0.3)
        assert page.status_code == 200 and "<html" in page.text
        views = httpx.get(f"{url}/api/v1/feature_views", params={"project": project}, timeout=30)
        assert views.status_code == 200, views.text[:500]
        names = {v["spec"]["name"] for v in views.json()["featureViews"]}
        assert {"user_stats", "tweet_engagement", "user_author_affinity"} <= names
        services = httpx.get(
            f"{url}/api/v1/feature_services", params={"project": project}, timeout=30
        )
        assert any(
            s["spec"]["name"].startswith("ranker_") for s in services.json()["featureServices"]
        )
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
