"""A service to drive: a workspace copy, a champion, ``bentoml serve``, Redis, and requests.

Shared by the fault-injection suite (:mod:`load.reliability`), the serving
benchmarks (``benchmarks/serve_latency.py``, ``benchmarks/feature_reader.py``)
and the reliability tests, all of which import it as the installed ``load``
package.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess  # nosec B404  # starts bentoml serve and redis-server with fixed argv
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from core.feast_store import Workspace
from core.tables import TWEETS, read_table
from core.workspace import REPO_ROOT
from simulation.world import load_world_config, world_end

RANK_CANDIDATES = 500
"""Candidates in each body of :func:`rank_requests`; the serving latency bars are set for 500."""


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


def rank_requests(ws: Workspace, n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` ``/rank`` bodies: random users, each with 500 random tweets of the last two days.

    The same requests (same ``seed``) time ``/rank`` over HTTP and the feature
    read in process, so the two benchmarks' figures are comparable.
    """
    end = world_end(load_world_config(ws.world))
    tweets = read_table(TWEETS, ws.world)
    created = tweets["created_at"].cast(pa.int64()).to_numpy()
    recent = tweets["tweet_id"].to_numpy()[created > (end.timestamp() - 2 * 86_400) * 1e6]
    rng = np.random.default_rng(seed)
    n_users = load_world_config(ws.world).n_users
    return [
        {
            "user_id": int(rng.integers(n_users)),
            "candidate_tweet_ids": rng.choice(recent, RANK_CANDIDATES, replace=False).tolist(),
            "limit": 50,
            "request_time": end.isoformat(),
        }
        for _ in range(n)
    ]


def ensure_champion(ws: Workspace) -> None:
    """Train a quick champion (1 epoch) if the workspace has none."""
    # pylint: disable=import-outside-toplevel
    from core import model_registry
    from training.pipeline import run_training_pipeline
    from training.train import TrainConfig

    try:
        model_registry.model_version(model_registry.connect(ws), model_registry.CHAMPION)
        return
    except model_registry.ModelNotFound:
        pass
    print("no champion: training a quick one (1 epoch)", flush=True)
    run_training_pipeline(ws.root, TrainConfig(max_epochs=1), progress=False)


@dataclass(frozen=True)
class Served:
    """A running ``bentoml serve``."""

    url: str
    pid: int

    def worker_pids(self) -> set[int]:
        """PIDs of its live worker processes (BentoML's circus arbiter respawns them)."""
        import psutil  # pylint: disable=import-outside-toplevel  # a BentoML dependency

        pids = set()
        for child in psutil.Process(self.pid).children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker" in " ".join(
                    child.cmdline()
                ):
                    pids.add(child.pid)
            except psutil.Error:  # gone (or a zombie) between the listing and the look
                continue
        return pids


@contextmanager
def serve(ws: Workspace, env: dict[str, str], workers: int = 2) -> Iterator[Served]:
    """``bentoml serve`` of ``ws`` on a free port, started and stopped with the context.

    Defaults: the embedded profile, a 2 s feature deadline (slow CI machines
    must not turn answers into fallbacks), no feature sampling; ``env``
    overrides them. The server's output goes to a temporary file (an unread
    pipe would fill and block it); its tail is in the error if it never gets ready.
    """
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
            yield Served(url, proc.pid)
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
