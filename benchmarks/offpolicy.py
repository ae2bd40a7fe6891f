"""Exploration served and logged, and off-policy estimates checked against the simulator's truth.

Copies a workspace (default: the repository's demo world) to a temporary
folder, trains a quick champion there if it has none, and then:

1. **Served exploration.** ``bentoml serve`` with ``FEEDRANK_EXPLORE_SHARE``
   (default 0.2). ``--requests`` feeds of random users are ranked. The
   impression of every shown tweet is sent back to ``/events`` with the
   answer's ``request_id`` and the item's ``propensity``. The event log is then
   read: the share of explored feeds, and the share of explored impressions
   whose propensity was logged.
2. **Off-policy evaluation** (:mod:`metrics.offpolicy`) on the held-out day,
   once per seed (``--seeds``, each its own logs and bootstrap). The logging
   policy explores every feed. The candidates are the champion, no diversity,
   newest first, and two other weightings of the actions (replies x4, no
   negatives). Each interval is checked against the candidate's exact value
   under the simulator, and how often it holds the truth is counted.

    .venv/bin/python benchmarks/offpolicy.py [--workspace DIR] [--seeds N] [--requests N] [--days N]

Ends with ``RESULT {json}``: ``explore_share``, ``propensity_logged_share``,
the first seed's ``ope_estimate``, ``ope_ci_low``, ``ope_ci_high`` and
``true_value`` per candidate, ``ope_ci_covers_truth`` (candidates covered in
the first seed), and ``ope_coverage_rate`` per estimator over all seeds.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from core import model_registry
from core.actions import DEFAULT_ACTIONS_FILE, load_actions
from core.workspace import REPO_ROOT, Workspace
from load.harness import auth_headers, copy_workspace, ensure_champion, rank_requests, serve
from metrics import offpolicy as ope


def served_exploration(ws: Workspace, share: float, n_requests: int) -> dict[str, float]:
    """Rank feeds with exploration on, send their impressions back, read the event log."""
    headers = auth_headers(ws)
    bodies = rank_requests(ws, n_requests, seed=11)
    explored, events, served_propensity = 0, [], {}
    with (
        serve(ws, {"FEEDRANK_EXPLORE_SHARE": str(share)}) as served,
        httpx.Client(base_url=served.url, headers=headers, timeout=30) as client,
    ):
        for i, body in enumerate(bodies):
            answer = client.post("/rank", json={**body, "limit": 20}).json()
            explored += answer["explored"]
            batch = [
                {
                    "event_id": f"bench-{i}-{item['tweet_id']}",
                    "user_id": body["user_id"],
                    "tweet_id": item["tweet_id"],
                    "action": "impression",
                    "dwell_seconds": 1.0,
                    "timestamp": body["request_time"],
                    "request_id": answer["request_id"],
                    "propensity": item["propensity"],
                }
                for item in answer["items"]
            ]
            if answer["explored"]:
                served_propensity.update({e["event_id"]: e["propensity"] for e in batch})
            events += batch
        for start in range(0, len(events), 500):
            client.post("/events", json=events[start : start + 500]).raise_for_status()
    with sqlite3.connect(ws.data / "serving" / "events.db") as db:
        logged = dict(
            db.execute("SELECT event_id, propensity FROM events WHERE event_id LIKE 'bench-%'")
        )
    kept = sum(logged.get(i) == p for i, p in served_propensity.items())
    return {
        "explore_share": round(explored / n_requests, 3),
        "explored_feeds": explored,
        "impressions_logged": len(logged),
        "explored_impressions": len(served_propensity),
        "explored_impressions_below_1": sum(p < 1 for p in served_propensity.values()),
        # The propensity /rank gave each explored impression, as the event log holds it.
        "propensity_logged_share": round(kept / len(served_propensity), 4)
        if served_propensity
        else 0.0,
    }


def _weights_file(folder: Path, name: str, change: dict[str, float]) -> str:
    spec = yaml.safe_load(DEFAULT_ACTIONS_FILE.read_text(encoding="utf-8"))
    for action, weight in change.items():
        spec["actions"][action]["weight"] = weight
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return str(path)


def main() -> None:
    """Run both parts and print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--seeds", type=int, default=10, help="OPE repetitions.")
    parser.add_argument("--requests", type=int, default=200, help="Feeds ranked by the server.")
    parser.add_argument("--share", type=float, default=0.2, help="FEEDRANK_EXPLORE_SHARE served.")
    parser.add_argument("--limit", type=int, default=10, help="Feed slots in the OPE.")
    parser.add_argument("--mc-draws", type=int, default=500)
    parser.add_argument("--days", type=int, default=1, help="Logged days per seed.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feedrank-bench-") as tmp:
        ws = copy_workspace(args.workspace, Path(tmp) / "ws")
        ensure_champion(ws)
        served = served_exploration(ws, args.share, args.requests)
        print(f"served exploration: {served}", flush=True)

        actions = load_actions()
        started = time.perf_counter()
        data = ope.held_out(ws, model_registry.load_ranker(ws, model_registry.CHAMPION), actions)
        logging = ope.LoggingPolicy(share=1.0, limit=args.limit)
        specs = [
            "champion",
            "no-diversity",
            "chrono",
            _weights_file(Path(tmp), "replies_x4", {"reply": 54.0}),
            _weights_file(Path(tmp), "no_negatives", {"hide": 0.0, "report": 0.0}),
        ]
        candidates = ope.candidates(
            specs,
            data,
            lambda r: model_registry.load_ranker(ws, r),
            actions,
            args.limit,
            logging.diversity,
        )
        covered = {name: 0 for name in ope.ESTIMATORS}
        first: dict[str, Any] = {}
        for seed in range(args.seeds):
            result = ope.evaluate(
                data,
                candidates,
                logging,
                actions,
                mc_draws=args.mc_draws,
                days=args.days,
                seed=seed,
            )
            for name in ope.ESTIMATORS:
                covered[name] += sum(p.covered(name) for p in result.policies)
            if seed == 0:
                first = result.result("dr")
                print(result.table().round(3).to_string(index=False), flush=True)
        trials = args.seeds * len(candidates)
        rates = {name: round(covered[name] / trials, 3) for name in ope.ESTIMATORS}
        print(
            f"coverage of the 95% intervals over {args.seeds} seeds x {len(candidates)} "
            f"candidates: {rates} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        figures = {
            **served,
            **first,
            "ope_coverage_rate": rates,
            "ope_trials": trials,
            "ope_visits_per_seed": len(data.visits),
            "ope_limit": args.limit,
            "ope_days": args.days,
            "ope_truth_champion_over_chrono": round(
                first["champion"]["true_value"] / first["chrono"]["true_value"], 3
            ),
        }
        print("RESULT " + json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
