"""Where the model's missing lift is: the length of the history, and each hidden term.

The model's features estimate hidden per-user and per-author quantities of the
simulator from history, so the share of the oracle's lift it captures is
limited by how much history there is. Both sides are measured on the demo
preset, each variant a full pipeline on a fresh workspace (world, feature
tables, Feast training set, ``train`` with the default config, ``evaluate``):

- history: the demo preset with ``--days`` days (default 10, the preset, and
  16). The test day's features rest on all earlier days, and the training set
  grows with them;
- hidden terms (``--no-latents`` skips them): the first world's training set
  with one of the simulator's hidden terms added as a feature column: the
  user's interest in the tweet's topic, the author's quality, the author's
  toxicity. What a perfect estimate of that one term would add: an upper
  bound on any feature that estimates it better.

    .venv/bin/python -m analysis.lift_gap [--days 10 16] [--seed 7] [--no-latents]

Ends with ``RESULT {json}``: ``lift_share_at_50_days<N>``,
``lift_share_at_10_days<N>`` and ``auc_gap_max_days<N>`` per length, and
``lift_share_at_50_true_<term>`` per hidden term (~8 minutes in all).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.feast_store import training_set_path
from core.workspace import REPO_ROOT, Workspace
from feedrank.pipeline import build_foundation
from simulation.config import world_config
from simulation.truth import Latent, topic_interest
from training.evaluate import evaluate
from training.train import TrainConfig, train

HIDDEN_TERMS = {
    "interest": lambda latent, t: topic_interest(
        latent, t["user_id"].to_numpy(), t["tweet_topic"].to_numpy()
    ),
    "quality": lambda latent, t: latent.quality[t["author_id"].to_numpy()],
    "toxicity": lambda latent, t: latent.toxicity[t["author_id"].to_numpy()],
}


def fit_and_score(
    dataset: Path, ws: Workspace, config: TrainConfig | None = None
) -> dict[str, float]:
    """Train on ``dataset`` (default config unless given) and evaluate on its test day."""
    start = time.perf_counter()
    result = train(dataset, config or TrainConfig(), progress=False)
    metrics = evaluate(result.ranker, result.splits.test, ws).metrics
    return {
        "lift_share_at_50": metrics["oracle_lift_share_at_50"],
        "lift_share_at_10": metrics["oracle_lift_share_at_10"],
        "auc_gap_max": metrics["auc_gap_max"],
        "seconds": time.perf_counter() - start,
    }


def build_world(root: Path, days: int, seed: int) -> Workspace:
    """The demo preset with ``days`` days and world seed ``seed``, up to its training set."""
    shutil.copytree(
        REPO_ROOT / "feature_repo",
        root / "feature_repo",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    ws = Workspace(root)
    build_foundation(ws, world_config("demo", days=days, seed=seed), fill=False)
    return ws


def with_hidden_term(dataset: Path, latent: Latent, term: str, out: Path) -> Path:
    """A copy of the training set with the hidden term as one more float32 feature."""
    table = pq.read_table(dataset)
    values = HIDDEN_TERMS[term](latent, table).astype(np.float32)
    pq.write_table(table.append_column(f"true_{term}", pa.array(values)), out)
    return out


def main() -> None:
    """Run every variant and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(prog="python -m analysis.lift_gap", description=__doc__)
    parser.add_argument("--days", type=int, nargs="+", default=[10, 16], help="World lengths.")
    parser.add_argument("--seed", type=int, default=7, help="World seed (the demo's: 7).")
    parser.add_argument("--no-latents", action="store_true", help="Skip the hidden-term rows.")
    args = parser.parse_args()
    result: dict[str, float] = {}
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        first: Workspace | None = None
        for days in args.days:
            ws = build_world(Path(tmp) / f"days{days}", days, args.seed)
            first = first or ws
            scores = fit_and_score(training_set_path(ws), ws)
            rows.append((f"{days} days", scores))
            for key in ("lift_share_at_50", "lift_share_at_10", "auc_gap_max"):
                result[f"{key}_days{days}"] = scores[key]
            print(f"{days} days: {json.dumps({k: round(v, 4) for k, v in scores.items()})}")
        if first is not None and not args.no_latents:
            latent = Latent.load(first.truth / "latent.npz")
            for term in HIDDEN_TERMS:
                dataset = with_hidden_term(
                    training_set_path(first), latent, term, Path(tmp) / f"true_{term}.parquet"
                )
                scores = fit_and_score(dataset, first)
                rows.append((f"{args.days[0]} days + true {term}", scores))
                result[f"lift_share_at_50_true_{term}"] = scores["lift_share_at_50"]
                print(f"true {term}: {json.dumps({k: round(v, 4) for k, v in scores.items()})}")
    base = rows[0][1]["lift_share_at_50"]
    print(f"\n{'variant':<28} {'lift@50':>8} {'lift@10':>8} {'AUC gap':>8} {'vs first':>9}")
    for name, s in rows:
        print(
            f"{name:<28} {s['lift_share_at_50']:8.3f} {s['lift_share_at_10']:8.3f} "
            f"{s['auc_gap_max']:8.3f} {s['lift_share_at_50'] - base:+9.3f}"
        )
    print("RESULT " + json.dumps({k: round(v, 4) for k, v in result.items()}))


if __name__ == "__main__":
    main()
