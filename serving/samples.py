"""Served feature vectors, sampled for drift and skew checks.

A share of /rank requests (``FEEDRANK_FEATURE_SAMPLE_RATE``) writes a few of
the feature rows it scored to ``<folder>/<day>-<pid>.jsonl``: what the model
actually saw. ``feedrank monitor drift`` compares the samples of two time
windows; the served-vs-training parity test joins them to Feast's
``get_historical_features`` rows of the same impressions. One line per
request::

    {"request_id": "9f0c...", "request_us": 1768003200000000, "user_id": 6,
     "model": "feed-ranker:abc", "rows": [{"tweet_id": 11, "author_id": 3, ...}]}

``request_id`` is the one /rank answered with; a row's impression is
(``user_id``, ``tweet_id``, ``request_us``). One file per process and day, so
worker processes never interleave their lines and no file grows without bound.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from serving.candidates import Candidates

SAMPLE_ROWS = 20
"""Rows kept per sampled request: enough for the distributions, small on disk."""


def _plain(column: Any, i: int) -> Any:
    """A JSON-ready cell: non-finite floats become null (JSON has no NaN)."""
    v = column[i]
    if isinstance(v, float | np.floating):
        return float(v) if np.isfinite(v) else None
    return v


class FeatureSampler:
    """Appends a few served feature rows of a random share of requests to JSONL files.

    Args:
        folder: where the files go (created on the first sample).
        rate: share of requests sampled, 0 to 1.
        model_tag: the served model, named in every record.
        rng: the random draws (seeded in tests).
    """

    def __init__(
        self, folder: Path, rate: float, model_tag: str, rng: np.random.Generator | None = None
    ) -> None:
        self.folder = folder
        self.rate = rate
        self.model_tag = model_tag
        self._rng = np.random.default_rng() if rng is None else rng
        self._lock = threading.Lock()

    def offer(
        self,
        request_id: str,
        user_id: int,
        request_us: int,
        candidates: Candidates,
        features: Mapping[str, Any],
    ) -> bool:
        """Write this request's sample if it is drawn; True if it was.

        One random draw for the requests not drawn, so /rank pays nothing more.
        """
        tweet_ids, author_ids = candidates.tweet_ids, candidates.author_ids
        if self._rng.random() >= self.rate:
            return False
        rows = self._rng.choice(
            len(tweet_ids), size=min(SAMPLE_ROWS, len(tweet_ids)), replace=False
        )
        record = {
            "request_id": request_id,
            "request_us": request_us,
            "user_id": user_id,
            "model": self.model_tag,
            "rows": [
                {"tweet_id": int(tweet_ids[i]), "author_id": int(author_ids[i])}
                | {name: _plain(col, int(i)) for name, col in features.items()}
                for i in rows
            ],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        day = datetime.fromtimestamp(request_us / 1e6, UTC).strftime("%Y-%m-%d")
        with self._lock, (self.folder / f"{day}-{os.getpid()}.jsonl").open("a") as out:
            out.write(json.dumps(record) + "\n")
        return True
