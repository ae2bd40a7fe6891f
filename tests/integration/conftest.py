"""Fixtures of the serving tests: a workspace with a champion, and the service three ways."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from core.feast_store import Workspace
from load.harness import auth_headers, copy_workspace, keys_file, serve, server_bentoml_home
from serving.auth import KEYS_FILE_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
_SAVED_HOME: list[str | None] = []


def pytest_configure(config: pytest.Config) -> None:  # pytest hook signature
    """A BentoML home of the test session: the model store never touches ~/bentoml."""
    _SAVED_HOME.append(os.environ.get("BENTOML_HOME"))
    os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="feedrank-bentoml-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop the session's BentoML home."""
    shutil.rmtree(os.environ["BENTOML_HOME"], ignore_errors=True)
    previous = _SAVED_HOME.pop() if _SAVED_HOME else None
    if previous is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = previous


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def served_workspace(
    tiny_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> Workspace:
    """A copy of the tiny workspace with a quickly trained champion in its own MLflow store."""
    # pylint: disable=import-outside-toplevel
    from training.pipeline import run_training_pipeline
    from training.train import TrainConfig

    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_workspace.root, root, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        # The model serving tests read; the refit is tested with the training.
        summary = run_training_pipeline(
            root,
            TrainConfig(max_epochs=2, refit=False),
            register=True,
            promote=True,
            progress=False,
        )
    assert summary["promotion"] == "promoted", summary
    return Workspace(root)


@pytest.fixture(scope="session")
def auth(served_workspace: Workspace) -> dict[str, str]:
    """``Authorization`` headers with a key of every scope for the served workspace."""
    return auth_headers(served_workspace)


@pytest.fixture(scope="session")
def world_end_iso(served_workspace: Workspace) -> str:
    """The simulated world's end: "now" for feed requests."""
    from simulation.world import load_world_config, world_end  # pylint: disable=import-outside-toplevel

    return world_end(load_world_config(served_workspace.world)).isoformat()


def serving_environ(ws: Workspace, **extra: str) -> dict[str, str]:
    """Environment variables pointing the service at a workspace."""
    env = {
        "FEEDRANK_WORKSPACE": str(ws.root),
        "FEEDRANK_FEAST_PROFILE": "embedded",
        "FEEDRANK_FEATURE_DEADLINE_MS": "2000",  # CI machines are slow; outages still fail fast
        "FEEDRANK_FEATURE_SAMPLE_RATE": "1.0",
        KEYS_FILE_ENV: str(keys_file(ws)),
    }
    auth_headers(ws)  # the key file exists before the service reads it
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def ranker(served_workspace: Workspace) -> Iterator[object]:
    """The service class instantiated directly (embedded profile)."""
    from serving.service import FeedRanker  # pylint: disable=import-outside-toplevel

    with pytest.MonkeyPatch.context() as env:
        for key, value in serving_environ(served_workspace).items():
            env.setenv(key, value)
        env.delenv("FEEDRANK_MODEL_TAG", raising=False)
        env.delenv("FEEDRANK_MODEL_SOURCE", raising=False)
        service = FeedRanker()
        yield service
        service.close()


_LOGS: dict[int, Path] = {}
"""Server pid -> the file its output goes to."""


def start_server(env: dict[str, str], port: int, *extra: str) -> subprocess.Popen[bytes]:
    """``bentoml serve serving.service:FeedRanker`` from the repo root, as a subprocess.

    Each server has a BentoML home of its own inside the session's (sharing its
    model store): one that started later would otherwise empty this one's
    Prometheus directory (load.harness.server_bentoml_home).
    """
    if "BENTOML_HOME" not in env:
        home = Path(tempfile.mkdtemp(prefix="server-", dir=os.environ["BENTOML_HOME"]))
        env = {**env, **server_bentoml_home(os.environ, home)}
    log = Path(tempfile.gettempdir()) / f"feedrank-bentoml-{port}.log"
    with log.open("wb") as output:
        proc = _popen(env, port, output, *extra)
    _LOGS[proc.pid] = log
    return proc


def _popen(
    env: dict[str, str], port: int, output: IO[bytes], *extra: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # fixed argv
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "serving.service:FeedRanker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        cwd=REPO_ROOT,
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: do not leak the
        # test process's store into the server (it derives it from the workspace).
        env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **env},
        # A file, not a pipe: nobody reads a pipe while the server runs, and a
        # full pipe would block the server's logging under load.
        stdout=output,
        stderr=subprocess.STDOUT,
        # Its own process group, so stop_server ends the workers too.
        start_new_session=True,
    )


def server_output(proc: subprocess.Popen[bytes]) -> str:
    """What the server printed so far."""
    log = _LOGS.get(proc.pid)
    return log.read_text(errors="replace") if log is not None and log.exists() else ""


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 90.0) -> None:
    """Poll /readyz until 200; fail with the server's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = server_output(proc)
            pytest.fail(f"bentoml serve exited with {proc.returncode}:\n{output[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    pytest.fail(f"bentoml serve not ready after {timeout} s:\n{server_output(proc)[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server we started, its workers included, and wait for it."""
    group = proc.pid  # start_new_session: the server leads its own process group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        proc.wait()
    # Workers that outlive the arbiter's shutdown go with the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


@dataclass(frozen=True)
class SharedServer:
    """The session's ``bentoml serve``: where it listens, its process, its output.

    Tests share it, so a test that reads its output reads what it printed
    while starting (:meth:`startup_output`) and what it printed after a
    :meth:`mark` the test took (:meth:`output_since`), never what other
    tests' requests made it print.
    """

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_at: int
    """The size of its output (bytes) when it was ready."""

    def _output(self) -> bytes:
        return self.log.read_bytes() if self.log.exists() else b""

    def mark(self) -> int:
        """Where its output ends now."""
        return len(self._output())

    def output_since(self, mark: int) -> str:
        """What it printed after :meth:`mark` returned ``mark``."""
        return self._output()[mark:].decode(errors="replace")

    def startup_output(self) -> str:
        """What it printed until it was ready."""
        return self._output()[: self.ready_at].decode(errors="replace")


@pytest.fixture(scope="session", name="served")
def fixture_served(served_workspace: Workspace) -> Iterator[SharedServer]:
    """A running ``bentoml serve`` (2 workers) on a free port, shared by the session."""
    port = free_port()
    proc = start_server(serving_environ(served_workspace), port, "--arg", "workers=2")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        log = _LOGS[proc.pid]
        yield SharedServer(url, proc, log, log.stat().st_size)
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def server_url(served: SharedServer) -> str:
    """The URL of the session's ``bentoml serve`` (2 workers)."""
    return served.url


@pytest.fixture(scope="session", name="scratch_workspace")
def fixture_scratch_workspace(
    served_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> Workspace:
    """A copy of the served workspace for the tests that post events at will (fuzzing,
    load): the feeds and counters they change, tests on the served workspace never see."""
    return copy_workspace(served_workspace.root, tmp_path_factory.mktemp("scratch"))


@pytest.fixture(scope="session")
def scratch_url(scratch_workspace: Workspace) -> Iterator[str]:
    """``bentoml serve`` (2 workers) on the scratch workspace, with the load harness's
    settings (``load.harness.serve``: events for unknown ids accepted, its output in a
    temporary file). Not for fault injection: tests that kill or slow a server start
    their own. Tests on it assert only on their own requests and events."""
    with serve(scratch_workspace, {}) as served_scratch:
        yield served_scratch.url
