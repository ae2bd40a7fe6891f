"""The ``bentoml serve`` parent's death takes its workers with it (issue 17, item 5).

``bentoml serve`` forks its workers as direct children (the circus arbiter
runs in the serving process itself), each in a process group of its own. A
SIGKILL of the parent alone used to leave them serving, unsupervised, on the
port: a new ``bentoml serve`` there failed with ``Address already in use``.
The workers now ask the kernel for SIGTERM when their parent dies
(:mod:`serving.lifetime`); here the parent is killed and the workers must
go, the port must free up, and a new server on the same port must start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from core.feast_store import Workspace
from serving.lifetime import die_with_parent
from tests.integration.conftest import (
    REPO_ROOT,
    free_port,
    serving_environ,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = [pytest.mark.integration]

GONE_WAIT_SECONDS = 60.0
"""How long the workers may take to stop after SIGTERM (uvicorn's graceful shutdown)."""


def _workers(pid: int) -> list[psutil.Process]:
    """Live worker processes whose parent is ``pid``."""
    found = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker" in " ".join(
                child.cmdline()
            ):
                found.append(child)
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_CHILD = (
    "import time\n"
    "from serving.lifetime import die_with_parent\n"
    "print('armed' if die_with_parent(force=True) else 'not armed', flush=True)\n"
    "time.sleep(300)\n"
)
_PARENT = (
    "import subprocess, sys, time\n"
    f"child = subprocess.Popen([sys.executable, '-c', {_CHILD!r}], stdout=subprocess.PIPE, "
    "text=True)\n"
    "print(child.pid, child.stdout.readline().strip() or 'failed', flush=True)\n"
    "time.sleep(300)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_process_armed_with_the_death_signal_dies_with_its_parent() -> None:
    """The mechanism alone: a child armed with PR_SET_PDEATHSIG, its parent SIGKILLed."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    child: psutil.Process | None = None
    try:
        assert parent.stdout is not None
        pid, state = parent.stdout.readline().split()
        child = psutil.Process(int(pid))
        assert state == "armed"
        parent.kill()
        parent.wait()
        child.wait(timeout=GONE_WAIT_SECONDS)  # psutil.TimeoutExpired: it outlived its parent
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait()
        if child is not None:
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_outside_a_bentoml_worker_nothing_is_armed() -> None:
    """The service class built in a test or a script is not tied to its parent."""
    assert die_with_parent() is False


def test_killing_the_serve_parent_stops_its_workers_and_frees_the_port(
    served_workspace: Workspace,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = serving_environ(served_workspace)
    proc = start_server(env, port, "--arg", "workers=2")
    workers: list[psutil.Process] = []
    try:
        wait_ready(proc, url)
        workers = _workers(proc.pid)
        assert len(workers) == 2, [w.cmdline() for w in workers]
        # The arbiter is the serving process itself: the workers are its children,
        # each leading a process group of its own (a group kill would miss them).
        assert all(w.ppid() == proc.pid for w in workers)
        assert all(os.getpgid(w.pid) != os.getpgid(proc.pid) for w in workers)

        os.kill(proc.pid, signal.SIGKILL)  # the parent only
        proc.wait()
        deadline = time.monotonic() + GONE_WAIT_SECONDS
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w.pid for w in workers if _alive(w)], "workers outlived their parent"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/readyz", timeout=2)
        assert _port_free(port)  # a new server can bind it
    finally:
        stop_server(proc)
        for worker in workers:  # whatever outlived a failed assertion
            with contextlib.suppress(psutil.Error):
                worker.kill()
