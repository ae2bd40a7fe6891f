"""Drift: how far the features served in one time window moved from another's.

The population stability index (PSI) of a feature compares the share of rows
in each bin of the reference with the share in the current sample:
``sum((cur - ref) * ln(cur / ref))``. Bins are the reference's deciles, plus
one bin for missing values, so a feature that goes missing is drift too.
Rule of thumb used by credit-risk teams: < 0.1 stable, 0.1-0.2 moderate,
> 0.2 a real shift, the default alarm here.

Three things keep the alarm honest (``metrics/drift.yaml`` sets them):

- **The reference matches serving's population.** The default reference is
  the served samples of the week before the current window, not the training
  set: training rows are the impressions the old policy showed, served rows
  are the candidates of a feed, and the two differ with no drift at all.
- **A minimum sample size**, counted in distinct users: the 20 rows of one
  request, and every request of one user, share that user's features, so
  rows (or requests) overstate the evidence. Below it nothing is judged.
- **Per-feature thresholds**, for features whose PSI is noisy by nature.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.actions import ActionSet, load_actions
from core.errors import InputError
from core.tables import TableError

DEFAULT_CONFIG_FILE = Path(__file__).with_name("drift.yaml")
_EPSILON = 1e-4  # floor of a bin's share: an empty bin must not make the PSI infinite
_DAY_US = 86_400 * 10**6


class DriftConfig(BaseModel):
    """The alarm's settings (``metrics/drift.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.2, gt=0, description="PSI above which a feature has drifted.")
    min_users: int = Field(
        400, ge=1, description="Distinct users each side needs before anything is judged."
    )
    bins: int = Field(10, ge=2, le=100, description="Quantile bins of the reference.")
    reference_days: float = Field(
        7, gt=0, description="Default reference: this many days of samples before the current."
    )
    features: dict[str, float] = Field(
        default_factory=dict, description="Per-feature PSI thresholds, overriding `threshold`."
    )

    def threshold_for(self, feature: str) -> float:
        """The PSI threshold of one feature."""
        return self.features.get(feature, self.threshold)


class DriftConfigError(InputError):
    """The drift settings file is unreadable or invalid; the message names file and field."""


def load_drift_config(path: Path | None = None) -> DriftConfig:
    """Read the drift settings (default: ``metrics/drift.yaml``).

    Raises:
        DriftConfigError: naming the file and the offending field.
    """
    path = path or DEFAULT_CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return DriftConfig.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise DriftConfigError(f"{path}: cannot read drift settings: {exc}") from exc
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise DriftConfigError(f"{path}: {fields}") from exc


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
class Window:
    """A half-open time window [start, end) in epoch microseconds."""

    start_us: int
    end_us: int

    @classmethod
    def parse(cls, text: str) -> Window:
        """An ISO 8601 interval ``START/END`` (e.g. ``2026-01-10T00:00Z/2026-01-11T00:00Z``).

        Raises:
            InputError: not two ISO datetimes with START before END.
        """
        start, sep, end = text.partition("/")
        try:
            if not sep:
                raise ValueError("expected START/END")
            bounds = [_to_us(datetime.fromisoformat(part)) for part in (start, end)]
        except ValueError as exc:
            raise InputError(
                f"window {text!r}: not an ISO 8601 interval START/END ({exc})"
            ) from None
        if bounds[0] >= bounds[1]:
            raise InputError(f"window {text!r}: START must be before END")
        return cls(*bounds)

    def __str__(self) -> str:
        start, end = (_iso(us) for us in (self.start_us, self.end_us))
        return f"{start}/{end}"


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no time zone (add Z or +00:00)")
    return int(moment.timestamp() * 10**6)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 10**6, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Sample:
    """Feature rows, with each row's time and user."""

    rows: pd.DataFrame
    times_us: np.ndarray
    user_ids: np.ndarray

    @property
    def users(self) -> int:
        """Distinct users: the sample's independent units."""
        return len(np.unique(self.user_ids))

    def window(self, window: Window) -> Sample:
        """The rows whose time is in ``window``."""
        keep = (self.times_us >= window.start_us) & (self.times_us < window.end_us)
        return Sample(
            self.rows.loc[keep].reset_index(drop=True), self.times_us[keep], self.user_ids[keep]
        )

    def last_day(self) -> Window:
        """The day that ends with the newest row (the default current window)."""
        newest = int(self.times_us.max()) + 1 if len(self.times_us) else 1
        return Window(newest - _DAY_US, newest)


def default_windows(
    current: Sample, same_source: bool, config: DriftConfig
) -> tuple[Window | None, Window | None]:
    """The current and the reference window (None: every row).

    With one source of served samples for both, the current window is its
    last day and the reference the ``reference_days`` before it; with two
    sources (a newer training set against the workspace's, say), all rows of each.
    """
    if not same_source:
        return None, None
    now = current.last_day()
    span = int(config.reference_days * _DAY_US)
    return now, Window(now.start_us - span, now.start_us)


_NOT_FEATURES = (
    "impression_id",
    "visit_id",
    "user_id",
    "author_id",
    "tweet_id",
    "position",
    "tweet_created_s",
    "request_us",
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


@dataclass(frozen=True)
class DriftReport:
    """PSI per column against its threshold, and whether the samples were big enough."""

    table: pd.DataFrame
    reference_users: int
    current_users: int
    min_users: int

    @property
    def judged(self) -> bool:
        """Both sides hold at least ``min_users`` distinct users."""
        return min(self.reference_users, self.current_users) >= self.min_users

    @property
    def drifted(self) -> list[str]:
        """Columns whose PSI exceeds their threshold (none when not judged)."""
        if not self.judged:
            return []
        return self.table.loc[self.table.drifted, "feature"].tolist()


def drift_report(
    reference: Sample,
    current: Sample,
    columns: Sequence[str],
    config: DriftConfig | None = None,
) -> DriftReport:
    """PSI of every column present in both samples, worst first."""
    config = config or load_drift_config()
    rows = []
    for name in columns:
        if name not in reference.rows or name not in current.rows:
            continue
        ref = pd.to_numeric(reference.rows[name], errors="coerce").to_numpy(np.float64)
        cur = pd.to_numeric(current.rows[name], errors="coerce").to_numpy(np.float64)
        value = psi(ref, cur, config.bins) if len(ref) and len(cur) else float("nan")
        rows.append({"feature": name, "psi": value, "threshold": config.threshold_for(name)})
    table = pd.DataFrame(rows, columns=["feature", "psi", "threshold"])
    table = table.sort_values("psi", ascending=False, ignore_index=True)
    table["drifted"] = table.psi > table.threshold
    return DriftReport(table, reference.users, current.users, config.min_users)


def read_sample(path: Path) -> Sample:
    """Feature rows from a parquet file (a training set) or served samples (JSONL folder/file).

    Raises:
        TableError: naming the path (and line) when it holds no readable rows.
    """
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
    elif path.suffix == ".jsonl":
        files = [path]
    else:
        return _training_sample(path)
    rows, times, users = [], [], []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
                count = len(record["rows"])
                times.extend([int(record["request_us"])] * count)
                users.extend([int(record["user_id"])] * count)
                rows.extend(record["rows"])
            except KeyError as exc:
                raise TableError(f"{file}:{number}: feature-sample record without {exc}") from exc
            except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
                raise TableError(f"{file}:{number}: not a feature-sample record: {exc}") from exc
    if not rows:
        raise TableError(f"{path}: no feature samples found")
    return Sample(pd.DataFrame(rows), np.asarray(times, np.int64), np.asarray(users, np.int64))


def _training_sample(path: Path) -> Sample:
    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: not a readable parquet file: {exc}") from exc
    for column in ("event_timestamp", "user_id"):
        if column not in frame:
            raise TableError(f"{path}: column {column}: required (the rows' times and users)")
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    since_epoch = stamps - pd.Timestamp(0, tz="UTC")
    times = (since_epoch // pd.Timedelta(microseconds=1)).to_numpy(np.int64)
    return Sample(frame, times, frame["user_id"].to_numpy(np.int64))
