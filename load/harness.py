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
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from core.actions import load_actions
from core.tables import TWEETS, read_table
from core.workspace import REPO_ROOT, Workspace
from serving.auth import KEYS_FILE, KEYS_FILE_ENV, SCOPES, create_key
from simulation.world import load_world_config, world_end

RANK_CANDIDATES = 500
"""Candidates in each body of :func:`rank_requests`; the serving latency bars are set for 500."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HARNESS_KEY = Path("data") / "serving" / "harness_key"
"""Where the harness keeps its own key in plain text (test and benchmark workspaces only)."""


def keys_file(ws: Workspace) -> Path:
    """The workspace's API key file (the service's default place for it)."""
    return ws.root / KEYS_FILE


def auth_headers(ws: Workspace) -> dict[str, str]:
    """``Authorization`` headers with the harness's key: every scope, any user, no real limit.

    Created on first use (a key in :func:`keys_file`, its plain text beside it,
    readable by the owner only); later calls reuse it.
    """
    stored = ws.root / HARNESS_KEY
    if not stored.exists():
        key, _ = create_key(keys_file(ws), "harness", SCOPES, rate_limit="1000000/second")
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.touch(mode=0o600)
        stored.write_text(key)
    return {"Authorization": f"Bearer {stored.read_text().strip()}"}


def load_headers(ws: Workspace) -> dict[str, str]:
    """The API key of a load run: ``FEEDRANK_API_KEY`` if set, else the harness's key."""
    key = os.environ.get("FEEDRANK_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else auth_headers(ws)


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


def feed_requests(ws: Workspace, n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` feed ``/rank`` bodies: random users at the world's end, no candidates given.

    The service builds each user's feed (followees' tweets since the last
    visit, or cold start): the population a drift monitor sees in production.
    """
    end = world_end(load_world_config(ws.world)).isoformat()
    users = np.random.default_rng(seed).integers(load_world_config(ws.world).n_users, size=n)
    return [{"user_id": int(user), "limit": 50, "request_time": end} for user in users]


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
    run_training_pipeline(ws.root, TrainConfig(max_epochs=1, refit=False), progress=False)


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


def server_bentoml_home(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """``BENTOML_HOME`` of one ``bentoml serve``: ``home``, sharing ``environ``'s model store.

    ``bentoml serve`` empties ``BENTOML_HOME/prometheus_multiproc_dir`` when it
    starts, so a second server on the same home deletes the first one's metric
    files and its ``/metrics`` loses what its workers recorded. Each server
    gets its own home; ``models`` links to the shared store, so the champion
    is imported once.
    """
    shared_home = Path(environ.get("BENTOML_HOME") or Path.home() / "bentoml").resolve()
    home = home.resolve()
    if home != shared_home:
        (shared_home / "models").mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        (home / "models").symlink_to(shared_home / "models", target_is_directory=True)
    return {"BENTOML_HOME": str(home)}


@contextmanager
def serve(ws: Workspace, env: dict[str, str], workers: int = 2) -> Iterator[Served]:
    """``bentoml serve`` of ``ws`` on a free port, started and stopped with the context.

    Defaults: the embedded profile, a 2 s feature deadline (slow CI machines
    must not turn answers into fallbacks), no feature sampling, events for
    unknown ids accepted, the harness's API key file; ``env``
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
            # the fault and load runs write to tweets 10**12 and up, outside any
            # world, so that nothing else touches the counters they check
            "FEEDRANK_UNKNOWN_EVENTS": "accept",
            KEYS_FILE_ENV: str(keys_file(ws)),
        }
    )
    auth_headers(ws)  # the key file exists before the service reads it
    full.update(env)
    argv = [sys.executable, "-m", "bentoml", "serve", "serving.service:FeedRanker"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--arg", f"workers={workers}"]
    with (
        tempfile.TemporaryDirectory(prefix="feedrank-bentoml-") as home,
        tempfile.TemporaryFile() as log_file,
    ):
        if "BENTOML_HOME" not in env:
            full.update(server_bentoml_home(full, Path(home)))
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


def start_redis(port: int, folder: Path, extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """A private ``redis-server`` on ``port``; returns once it answers PING.

    Non-persistent unless ``extra_args`` say otherwise (they come last, so
    ``("--appendonly", "yes", "--appendfsync", "always")`` turns AOF on).
    """
    import redis  # pylint: disable=import-outside-toplevel

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(folder), *extra_args]
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


def _fill_online(ws: Workspace, project: str, redis_port: int) -> None:
    """Feast apply plus the daily online fill, into the Redis on ``redis_port``."""
    # pylint: disable=import-outside-toplevel
    from core.feast_store import open_store
    from feedrank.pipeline import publish_features

    saved = os.environ.get("FEEDRANK_REDIS_URL")
    os.environ["FEEDRANK_REDIS_URL"] = f"127.0.0.1:{redis_port}"
    try:
        store = open_store(ws, "production", project=project)
        publish_features(store, ws)
    finally:
        if saved is None:
            os.environ.pop("FEEDRANK_REDIS_URL", None)
        else:
            os.environ["FEEDRANK_REDIS_URL"] = saved


def _drop_registry_project(ws: Workspace, project: str) -> None:
    """Remove the scenario's project from the shared SQL registry (its Redis goes anyway)."""
    from feast.errors import ProjectNotFoundException  # pylint: disable=import-outside-toplevel

    from core.feast_store import open_store  # pylint: disable=import-outside-toplevel

    store = open_store(ws, "production", project=project)
    with suppress(ProjectNotFoundException):
        store.registry.delete_project(project, commit=True)


@dataclass
class PrivateOnlineStore:
    """The production profile on a private ``redis-server``: a Feast project of its own."""

    ws: Workspace
    project: str
    port: int
    folder: Path
    proc: subprocess.Popen[bytes]

    def env(self, redis_port: int | None = None, deadline_ms: float = 300) -> dict[str, str]:
        """Service settings: features from this Redis (or a proxy's port), candidates shared."""
        return {
            "FEEDRANK_FEAST_PROFILE": "production",
            "FEEDRANK_FEAST_PROJECT": self.project,
            "FEEDRANK_REDIS_URL": f"127.0.0.1:{redis_port or self.port}",
            "FEEDRANK_CANDIDATES_REDIS_URL": "redis://127.0.0.1:6379/0",
            "FEEDRANK_FEATURE_DEADLINE_MS": f"{deadline_ms:g}",
        }

    def kill(self) -> None:
        """The outage: SIGKILL, no goodbye."""
        stop_process(self.proc, hard=True)

    def restart(self) -> None:
        """Start it again on the same port and refill it (it keeps nothing on disk)."""
        self.proc = start_redis(self.port, self.folder)
        _fill_online(self.ws, self.project, self.port)


@contextmanager
def private_online_store(ws: Workspace) -> Iterator[PrivateOnlineStore]:
    """A filled private online store, and the world's candidates in the shared Redis."""
    import redis  # pylint: disable=import-outside-toplevel

    from serving.candidates import load_redis_candidates  # pylint: disable=import-outside-toplevel

    project = f"rel{uuid.uuid4().hex[:8]}"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="feedrank-rel-redis-") as folder:
        online = PrivateOnlineStore(
            ws, project, port, Path(folder), start_redis(port, Path(folder))
        )
        candidates = redis.Redis("127.0.0.1", 6379)
        try:
            _fill_online(ws, project, port)
            load_redis_candidates(
                candidates, ws.world, load_actions(), prefix=f"feedrank:{project}:"
            )
            yield online
        finally:
            _drop_registry_project(ws, project)
            stop_process(online.proc)
            for key in candidates.scan_iter(match=f"feedrank:{project}:*"):
                candidates.unlink(key)
            candidates.close()
