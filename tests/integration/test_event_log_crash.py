"""A process killed in the middle of writing the event log leaves it whole.

A child process appends 2000-event batches to an :class:`serving.events.EventLog` as fast
as it can and prints each batch number once ``append`` has returned (the
point at which ``POST /events`` answers 200). The test kills it with SIGKILL
at an arbitrary moment, several times over, then checks the file: SQLite's
integrity check passes, every batch is there whole or not at all, every
acknowledged batch is there, and the counters agree with the logged events.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core.actions import load_actions
from serving.events import EventLog, counter_names

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = 2000
"""Events per batch: an append takes tens of ms, so most kills land inside one."""
TWEETS = 7
KILLS = 6

WRITER = """
import sys
from pathlib import Path
from core.actions import load_actions
from serving.events import EventLog, EventRecord
db, run, tweets, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = EventLog(db, load_actions())
for batch in range(10**6):
    action = ("like", "like", "impression")
    log.append(
        [EventRecord(f"{run}-{batch}-{i}", i, i % tweets, action[i % 3], None, 1_000 + batch)
         for i in range(size)],
        lambda fresh: {},
    )
    print(f"{run}-{batch}", flush=True)
"""


def _run_and_kill(db: Path, run: str, after_acks: int, rng: random.Random) -> set[str]:
    """Start a writer, let it acknowledge ``after_acks`` batches, SIGKILL it mid-stream."""
    proc = subprocess.Popen(  # fixed argv
        [sys.executable, "-c", WRITER, str(db), run, str(TWEETS), str(BATCH)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    acked = []
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= after_acks:
            break
    time.sleep(rng.uniform(0, 0.03))  # somewhere inside a later batch
    os.kill(proc.pid, signal.SIGKILL)
    acked += [line.strip() for line in proc.stdout]  # acknowledged before the kill landed
    proc.stdout.close()
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return set(acked)


def test_sigkill_mid_append_never_corrupts_or_splits_a_batch(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    rng = random.Random(11)
    acked: set[str] = set()
    for run in range(KILLS):
        acked |= _run_and_kill(db, f"r{run}", after_acks=rng.randint(1, 5), rng=rng)

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [row[0] for row in conn.execute("SELECT event_id FROM events")]
        totals = dict(
            conn.execute("SELECT counter, sum(value) FROM tweet_counters GROUP BY counter")
        )
        by_action = dict(conn.execute("SELECT action, count(*) FROM events GROUP BY action"))
    finally:
        conn.close()
    per_batch = Counter(event_id.rsplit("-", 1)[0] for event_id in ids)
    assert set(per_batch.values()) == {BATCH}  # whole batches only
    assert acked <= set(per_batch), sorted(acked - set(per_batch))[:5]  # nothing acked is lost
    assert len(set(per_batch) - acked) <= KILLS  # at most the batch in flight at each kill
    assert totals["tweet_impressions"] == by_action["impression"]
    assert totals["tweet_like_count"] == by_action["like"]

    reopened = EventLog(db, load_actions())  # and the service can open it again
    assert reopened.count() == len(ids)
    assert set(counter_names(load_actions())) >= set(totals)
    reopened.close()
