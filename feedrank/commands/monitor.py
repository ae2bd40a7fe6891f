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


DRIFT_EXIT_CODES = {"quiet": 0, "drift": 3, "too_few_samples": 4}
"""``feedrank monitor drift``'s exit statuses; 1 is bad input (a file, a window, a setting)."""


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
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="What CURRENT is compared with: served samples or a parquet training set "
    "(default: CURRENT itself, in the reference window; for a parquet CURRENT, the "
    "training set of WORKSPACE).",
)
@click.option(
    "--current-window",
    default=None,
    metavar="START/END",
    help="ISO 8601 interval of CURRENT's rows to judge (default: the last day of CURRENT).",
)
@click.option(
    "--reference-window",
    default=None,
    metavar="START/END",
    help="ISO 8601 interval of the reference's rows (default: the reference_days of "
    "metrics/drift.yaml before the current window when both are the same samples; "
    "else all rows).",
)
@workspace_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Drift settings: threshold, per-feature thresholds, minimum users, bins "
    "(default: metrics/drift.yaml).",
)
@click.option(
    "--outputs",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write outcome, exit_code, drifted, worst_psi, reference_users and "
    "current_users here as key=value lines (also appended to $GITHUB_OUTPUT when set).",
)
@click.option(
    "--model",
    "ref",
    default=None,
    help="Also compare the weighted-score distribution of this registered model "
    "(alias or version, e.g. champion).",
)
def drift(  # pylint: disable=too-many-arguments  # one click option each
    current: Path,
    reference: Path | None,
    current_window: str | None,
    reference_window: str | None,
    workspace: Path,
    config_file: Path | None,
    outputs: Path | None,
    ref: str | None,
) -> None:
    """PSI of every model feature between a reference and CURRENT.

    Exit status: 0 no drift, 3 drift (the continuous-training trigger:
    repository_dispatch `drift-detected`, see docs/deploy.md), 4 too few
    users on either side to judge, 1 bad input.
    """
    from core.feast_store import training_set_path
    from feedrank.outputs import output_lines, publish_outputs
    from metrics.drift import (
        Window,
        default_windows,
        drift_columns,
        drift_report,
        load_drift_config,
        read_sample,
    )

    ws = Workspace(workspace)
    config = load_drift_config(config_file)
    served = current.is_dir() or current.suffix == ".jsonl"
    reference = reference or (current if served else training_set_path(ws))
    cur_all = read_sample(current)
    same = served and reference == current  # one samples folder: two time windows of it
    ref_all = cur_all if reference == current else read_sample(reference)
    default_now, default_before = default_windows(cur_all, same, config)
    now = Window.parse(current_window) if current_window else default_now
    before = Window.parse(reference_window) if reference_window else default_before
    cur_rows = cur_all if now is None else cur_all.window(now)
    ref_rows = ref_all if before is None else ref_all.window(before)
    columns = drift_columns(ref_rows.rows, cur_rows.rows)
    if ref is not None:
        add_model_scores(ws, ref, ref_rows.rows, cur_rows.rows)
        columns.append(SCORE_COLUMN)
    report = drift_report(ref_rows, cur_rows, columns, config)
    click.echo(
        f"reference: {ref_rows.users} users in {before or 'all rows'}; "
        f"current: {cur_rows.users} users in {now or 'all rows'}"
    )
    click.echo(report.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if not report.judged:
        outcome = "too_few_samples"
        click.echo(
            f"too few samples to judge: each side needs {config.min_users} users "
            "(min_users in the drift settings)",
            err=True,
        )
    elif report.drifted:
        outcome = "drift"
        click.echo(f"drift: {', '.join(report.drifted)}", err=True)
    else:
        outcome = "quiet"
        click.echo(f"no drift ({len(report.table)} columns within their thresholds)")
    values = {
        "outcome": outcome,
        "exit_code": DRIFT_EXIT_CODES[outcome],
        "drifted": ",".join(report.drifted),
        "worst_psi": f"{report.table.psi.max():.4f}" if len(report.table) else "",
        "reference_users": report.reference_users,
        "current_users": report.current_users,
    }
    publish_outputs(output_lines(values, list(values)), outputs)
    if outcome != "quiet":
        raise SystemExit(DRIFT_EXIT_CODES[outcome])
