"""``feedrank monitor drift``: how far served features and scores moved from the training data.

The comparison is :mod:`metrics.drift`'s; this command picks the two samples
and, with ``--model``, scores both with a registered model, since a model's
score distribution drifts too and only the orchestration sees both the
registry and the metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from core.config_options import workspace_option
from core.workspace import Workspace
from feedrank.options import Group

if TYPE_CHECKING:
    import pandas as pd

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel

SCORE_COLUMN = "model_score"


@click.group(name="monitor", cls=Group)
def monitor() -> None:
    """Watch what is served: drift of features and scores from the training data (PSI)."""


def add_model_scores(workspace: Workspace, ref: str, *frames: pd.DataFrame) -> None:
    """Add the weighted score of registered model ``ref`` to each frame as ``model_score``."""
    from core.model_registry import load_ranker
    from core.policy import weighted_scores

    ranker = load_ranker(workspace, ref)
    for frame in frames:
        named = {c: frame[c].to_numpy() for c in frame.columns}
        frame[SCORE_COLUMN] = weighted_scores(ranker.predict_proba(named))


@monitor.command()
@click.option(
    "--current",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Served feature samples (data/serving/feature_samples/ or a .jsonl) or a parquet "
    "training set from newer data.",
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The training distribution (default: the training set of WORKSPACE).",
)
@workspace_option
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="PSI above which a feature counts as drifted (exit code 1; default: "
    "metrics.drift.DEFAULT_THRESHOLD, 0.2 as credit-risk teams use it).",
)
@click.option(
    "--model",
    "ref",
    default=None,
    help="Also compare the weighted-score distribution of this registered model "
    "(alias or version, e.g. champion).",
)
def drift(
    current: Path,
    reference: Path | None,
    workspace: Path,
    threshold: float | None,
    ref: str | None,
) -> None:
    """PSI of every model feature between the training set and CURRENT; exit 1 on drift.

    A drift alarm is meant to trigger the continuous-training workflow
    (repository_dispatch `drift-detected`, see docs/deploy.md).
    """
    from core.feast_store import training_set_path
    from metrics.drift import DEFAULT_THRESHOLD, drift_columns, drift_report, read_sample

    ws = Workspace(workspace)
    threshold = threshold or DEFAULT_THRESHOLD
    ref_rows = read_sample(reference or training_set_path(ws))
    cur_rows = read_sample(current)
    columns = drift_columns(ref_rows, cur_rows)
    if ref is not None:
        add_model_scores(ws, ref, ref_rows, cur_rows)
        columns.append(SCORE_COLUMN)
    psi_report = drift_report(ref_rows, cur_rows, columns, threshold)
    click.echo(psi_report.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if psi_report.drifted:
        raise click.ClickException(f"drift above PSI {threshold}: {', '.join(psi_report.drifted)}")
    click.echo(f"no drift above PSI {threshold} ({len(psi_report.table)} columns)")
