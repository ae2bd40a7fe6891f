"""Workers that die with their ``bentoml serve`` parent.

``bentoml serve`` runs a circus arbiter in its own process and forks the
workers (``_bentoml_impl.worker.service``) as its direct children, each in a
session and process group of its own, all sharing the listening socket. When
the parent is killed with SIGKILL (the OOM killer, ``kill -9``, a crashed
supervisor) nothing stops the workers: they keep serving unsupervised, hold
the port, and the next ``bentoml serve`` on it fails with ``Address already
in use`` (issue 17). Killing the parent's process group does not reach them
either.

:func:`die_with_parent` asks the Linux kernel to send the worker SIGTERM when
its parent dies (``prctl(PR_SET_PDEATHSIG)``, through ctypes: no thread, no
polling). SIGTERM, not SIGKILL: uvicorn then shuts the worker down as on a
normal stop, in-flight requests finish and ``@bentoml.on_shutdown`` runs.
The parent is the arbiter, whose main thread forks every worker, respawns
included (the kernel's "parent" is the forking thread).

One race is closed with the parent's help: a parent killed while a worker
is still importing (seconds) is gone before the worker can ask. The serving
process records its pid in ``FEEDRANK_SERVE_PID`` (:func:`mark_parent`, in
the deployment hook that runs in the ``bentoml serve`` process before any
worker is forked, so every worker inherits it); a worker whose parent is no
longer that pid stops at once.

Only inside a BentoML worker: the service class instantiated in a test or a
script is not tied to whatever started that process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""
PARENT_ENV = "FEEDRANK_SERVE_PID"
"""The ``bentoml serve`` process's pid, inherited by its workers."""

log = logging.getLogger("feedrank.serving")


def mark_parent(environ: dict[str, str] | None = None) -> None:
    """Record this process as the workers' parent (call in the ``bentoml serve`` process)."""
    env = os.environ if environ is None else environ
    env[PARENT_ENV] = str(os.getpid())


def in_bentoml_worker() -> bool:
    """Whether this process is a worker that ``bentoml serve`` started."""
    # pylint: disable-next=import-outside-toplevel  # BentoML internals, only when asked
    from bentoml._internal.context import server_context

    return server_context.worker_index is not None


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` for this process; False where Linux's prctl is missing."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    return True


def die_with_parent(sig: int = signal.SIGTERM, *, force: bool = False) -> bool:
    """Make this process receive ``sig`` when its parent dies; True when armed.

    Does nothing outside a BentoML worker unless ``force``. If the parent
    recorded by :func:`mark_parent` is already gone, sends ``sig`` to this
    process at once.
    """
    if not (force or in_bentoml_worker()):
        return False
    if not set_parent_death_signal(sig):
        log.warning("workers cannot follow their parent's death on %s", sys.platform)
        return False
    expected = os.environ.get(PARENT_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        log.error("worker %d: its bentoml serve parent %s is gone; stopping", os.getpid(), expected)
        os.kill(os.getpid(), sig)
    return True
