"""Drift alarms on served samples: quiet on a world's own traffic, loud on a shifted world.

Copies a workspace (default: the repository's demo world) to a temporary
folder, trains a quick champion there if it has none, and serves it with
``bentoml serve``, sampling every request's features. It sends four batches
of ``--requests`` feed requests (random users at the world's end, no
candidates given), each batch's samples kept in a folder of its own: three
reference windows and a current one. ``feedrank monitor drift`` then judges
the current batch against each reference batch. Every alarm there is a false
one: the world did not change.

Then it generates the same world with users whose interests moved
(``interest_shift``; the same seed and sizes otherwise), builds its features,
serves it with the same model, sends a batch of the same size, and judges it
against the first world's three reference batches: each should alarm.

The demo world is one snapshot: its candidate store knows every impression of
the world, so a request dated back into the world would find the tweets its
user is later shown already "seen". Batches at the world's end stand in for
successive windows of production traffic; in production the windows are
time windows of one samples folder (``--current-window``, ``--reference-window``).

    .venv/bin/python benchmarks/drift.py [--workspace DIR] [--requests N] [--shift S]

Ends with ``RESULT {json}``: ``drift_false_alarms`` (of
``drift_reference_windows`` comparisons), ``drift_detected`` (of the same
number on the shifted world), the features flagged and the largest PSI of each world.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from core.workspace import REPO_ROOT, Workspace
from feedrank.commands.monitor import DRIFT_EXIT_CODES, monitor
from feedrank.pipeline import build_foundation
from load.harness import auth_headers, copy_workspace, ensure_champion, feed_requests, serve
from simulation.world import load_world_config

WINDOWS = 4
"""Three reference windows and the current one."""


def serve_batches(
    ws: Workspace, batches: int, per_batch: int, env: dict[str, str] | None = None
) -> tuple[str, list[Path]]:
    """Serve ``ws`` with every request sampled: ``batches`` folders of ``per_batch`` requests.

    Returns the served model's BentoML tag and the folders, oldest first.
    """
    samples = ws.data / "serving" / "feature_samples"
    folders, tag = [], ""
    with (
        serve(ws, {"FEEDRANK_FEATURE_SAMPLE_RATE": "1.0", **(env or {})}) as served,
        httpx.Client(base_url=served.url, headers=auth_headers(ws), timeout=30) as client,
    ):
        for batch in range(batches):
            for body in feed_requests(ws, per_batch, seed=batch):
                answer = client.post("/rank", json=body)
                answer.raise_for_status()
                tag = answer.json()["model_version"]
            # Each sampled request is one appended line, written before its answer.
            folders.append(samples.rename(ws.data / "serving" / f"window-{batch}"))
    return tag, folders


def judge(current: Path, reference: Path) -> dict[str, Any]:
    """``feedrank monitor drift`` of two sample folders: its outcome and flagged features."""
    outputs = current.parent / f"{current.name}-vs-{reference.name}.txt"
    args = ["drift", "--current", str(current), "--reference", str(reference)]
    done = CliRunner().invoke(monitor, [*args, "--outputs", str(outputs)])
    if done.exit_code not in DRIFT_EXIT_CODES.values():
        raise RuntimeError(f"monitor drift failed ({done.exit_code}): {done.output}")
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return {
        "outcome": values["outcome"],
        "flagged": [name for name in values["drifted"].split(",") if name],
        "worst_psi": float(values["worst_psi"]),
        "users": (int(values["reference_users"]), int(values["current_users"])),
    }


def measure(source: Path, per_batch: int, shift: float, tmp: Path) -> dict[str, Any]:
    """The whole run; the RESULT's figures."""
    ws = copy_workspace(source, tmp / "world")
    ensure_champion(ws)
    tag, (*references, now) = serve_batches(ws, WINDOWS, per_batch)
    quiet = [judge(now, reference) for reference in references]
    for reference, run in zip(references, quiet, strict=True):
        print(f"unshifted, reference {reference.name}: {run}", flush=True)

    shifted = Workspace(tmp / "shifted")
    shutil.copytree(
        source / "feature_repo", shifted.repo, ignore=shutil.ignore_patterns("__pycache__")
    )
    config = load_world_config(ws.world).model_copy(update={"interest_shift": shift})
    build_foundation(shifted, config)
    _, (moved,) = serve_batches(
        shifted, 1, per_batch, {"FEEDRANK_MODEL_SOURCE": "bentoml", "FEEDRANK_MODEL_TAG": tag}
    )
    loud = [judge(moved, reference) for reference in references]
    for reference, run in zip(references, loud, strict=True):
        print(f"shifted by {shift}, reference {reference.name}: {run}", flush=True)
    return {
        "requests_per_window": per_batch,
        "drift_reference_windows": len(quiet),
        "drift_false_alarms": sum(run["outcome"] != "quiet" for run in quiet),
        "drift_worst_psi_unshifted": max(run["worst_psi"] for run in quiet),
        "sampled_users_min": min(min(run["users"]) for run in quiet),
        "interest_shift": shift,
        "drift_detected": sum(run["outcome"] == "drift" for run in loud),
        "drift_flagged_shifted": sorted({f for run in loud for f in run["flagged"]}),
        "drift_worst_psi_shifted": min(run["worst_psi"] for run in loud),
    }


def main() -> None:
    """Serve, judge, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=REPO_ROOT)
    parser.add_argument("--requests", type=int, default=600, help="Feed requests per window.")
    parser.add_argument("--shift", type=float, default=0.8, help="interest_shift of the world.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feedrank-drift-") as tmp:
        result = measure(args.workspace, args.requests, args.shift, Path(tmp))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
