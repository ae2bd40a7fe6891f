"""Drift: how far served features (and scores) moved from the training distribution.

The population stability index (PSI) of a feature compares the share of rows
in each bin of the reference (the training set) with the share in the
current sample (served feature vectors, or a newer training set):
``sum((cur - ref) * ln(cur / ref))``. Bins are the reference's deciles, plus
one bin for missing values, so a feature that goes missing is drift too.
Rule of thumb used by credit-risk teams: < 0.1 stable, 0.1-0.2 moderate,
> 0.2 a real shift, the default alarm here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from core.actions import ActionSet, load_actions
from core.tables import TableError

DEFAULT_THRESHOLD = 0.2
_EPSILON = 1e-4  # floor of a bin's share: an empty bin must not make the PSI infinite


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (NaN = missing)."""
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    known = reference[~np.isnan(reference)]
    edges = np.unique(np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1])) if len(known) else []

    def shares(values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        counts = np.bincount(
            np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1
        )
        counts = np.append(counts, missing.sum()).astype(np.float64)
        return np.maximum(counts / max(len(values), 1), _EPSILON)

    ref, cur = shares(reference), shares(current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class DriftReport:
    """PSI per column, and whether any crossed the threshold."""

    table: pd.DataFrame
    threshold: float

    @property
    def drifted(self) -> list[str]:
        """Columns whose PSI exceeds the threshold."""
        return self.table.loc[self.table.psi > self.threshold, "feature"].tolist()


_NOT_FEATURES = (
    "impression_id",
    "visit_id",
    "user_id",
    "author_id",
    "tweet_id",
    "position",
    "tweet_created_s",
)
"""Ids and raw times: not distributions a model reads."""


def drift_columns(
    reference: pd.DataFrame, current: pd.DataFrame, actions: ActionSet | None = None
) -> list[str]:
    """Numeric columns of the reference that the current sample also has, less ids and labels."""
    skip = {*_NOT_FEATURES, *(actions or load_actions()).names}
    return [
        c
        for c in reference.columns
        if c in current.columns and c not in skip and pd.api.types.is_numeric_dtype(reference[c])
    ]


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> DriftReport:
    """PSI of every numeric column present in both frames, worst first."""
    rows = []
    for name in columns:
        if name not in reference or name not in current:
            continue
        ref = pd.to_numeric(reference[name], errors="coerce").to_numpy(np.float64)
        cur = pd.to_numeric(current[name], errors="coerce").to_numpy(np.float64)
        rows.append({"feature": name, "psi": psi(ref, cur)})
    table = pd.DataFrame(rows, columns=["feature", "psi"])
    table = table.sort_values("psi", ascending=False, ignore_index=True)
    table["drifted"] = table.psi > threshold
    return DriftReport(table=table, threshold=threshold)


def read_sample(path: Path) -> pd.DataFrame:
    """Feature rows from a parquet file (a training set) or served samples (JSONL folder/file).

    Raises:
        TableError: naming the path (and line) when it holds no readable rows.
    """
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
    elif path.suffix == ".jsonl":
        files = [path]
    else:
        try:
            return pq.read_table(path).to_pandas()
        except (OSError, ValueError) as exc:
            raise TableError(f"{path}: not a readable parquet file: {exc}") from exc
    rows = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                rows.extend(json.loads(line)["rows"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise TableError(f"{file}:{number}: not a feature-sample record: {exc}") from exc
    if not rows:
        raise TableError(f"{path}: no feature samples found")
    return pd.DataFrame(rows)
