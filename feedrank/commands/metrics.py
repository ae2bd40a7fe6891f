"""``feedrank metrics report``: weighted engagement per user and A/B comparisons from the event log.

The command parses the options, calls :mod:`metrics.engagement` and
:mod:`metrics.ab`, and prints or writes the result. Bad input ends in a
one-line error naming the file and the column, never a traceback.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from feedrank.options import Group

if TYPE_CHECKING:
    import pandas as pd

    from metrics.ab import ExperimentResult
    from metrics.engagement import Denominator, EngagementReport, Granularity, Period

# The stage and pandas are imported inside the functions (see feedrank.commands).
# pylint: disable=import-outside-toplevel

_DENOMINATOR_HELP = {
    "active": "active users (at least one event of any kind in the period)",
    "exposed": "exposed users (at least one impression in the period)",
}


def _instant(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    from metrics.engagement import as_utc

    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2024-01-31 or 2024-01-31T12:00Z)",
            param=param,
        ) from None


def _names(_ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise click.BadParameter(f"need two or more distinct names, got {value!r}", param=param)
    return names


def _shares(_ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...]:
    if value is None:
        return ()
    try:
        weights = [float(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of numbers", param=param) from None
    if min(weights) <= 0:
        raise click.BadParameter(f"shares must be positive, got {value!r}", param=param)
    return tuple(w / sum(weights) for w in weights)


def _output_file(_ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() not in {".csv", ".json"}:
        raise click.BadParameter(f"{value!r}: the file must end in .csv or .json", param=param)
    return path


@click.group(name="metrics", cls=Group)
def metrics() -> None:
    """Business metrics over the event log: weighted engagement per user and A/B tests."""


@metrics.command()
@click.option(
    "--events",
    "events_path",
    required=True,
    metavar="PATH",
    help="Event log: a parquet file, a data folder holding events.parquet, or a quoted glob.",
)
@click.option(
    "--period",
    type=click.Choice(["day", "week", "all"]),
    default="all",
    show_default=True,
    help="One row per UTC day, per ISO week (from Monday), or one row for the whole range.",
)
@click.option(
    "--start",
    callback=_instant,
    metavar="ISO",
    help="First instant included, ISO 8601 (UTC if no zone). Default: the first event.",
)
@click.option(
    "--end",
    callback=_instant,
    metavar="ISO",
    help="First instant excluded, ISO 8601 (UTC if no zone). Default: just after the last event.",
)
@click.option(
    "--by",
    type=click.Choice(["variant"]),
    help="Split every row by experiment variant and compare the variants (needs --experiment).",
)
@click.option(
    "--experiment",
    "experiment_name",
    metavar="NAME",
    help="Experiment name: users are assigned to variants by a hash of (name, user_id).",
)
@click.option(
    "--variants",
    default="control,treatment",
    show_default=True,
    callback=_names,
    metavar="NAMES",
    help="Comma-separated variant names, control first.",
)
@click.option(
    "--split",
    "shares",
    callback=_shares,
    metavar="SHARES",
    help="Traffic share per variant, comma-separated (e.g. 90,10). Default: equal shares.",
)
@click.option(
    "--denominator",
    type=click.Choice(["active", "exposed"]),
    default="active",
    show_default=True,
    help="Per-user figures divide by active users (any event in the period) "
    "or by exposed users (at least one impression).",
)
@click.option(
    "--output",
    callback=_output_file,
    metavar="FILE",
    help="Also write the report to this .csv file (the rows) or .json file "
    "(the rows and, with --by variant, the comparison).",
)
def report(
    events_path: str,
    period: str,
    start: datetime | None,
    end: datetime | None,
    by: str | None,
    experiment_name: str | None,
    variants: tuple[str, ...],
    shares: tuple[float, ...],
    denominator: str,
    output: Path | None,
) -> None:
    """Weighted engagement per user, per period (and per variant), from the event log.

    Each action's count is multiplied by its weight from core/actions.yaml;
    the sum is divided by the number of users, so that periods and groups of
    different size compare. With --by variant, each variant is compared with
    the control on per-user weighted engagement (Welch's t, 95% interval) and
    the split is checked for a sample-ratio mismatch.
    """
    from metrics.ab import Experiment, analyze_experiment
    from metrics.engagement import engagement_report

    if (by is None) != (experiment_name is None):
        raise click.UsageError("--by variant and --experiment go together")
    if start is not None and end is not None and end <= start:
        raise click.BadParameter(f"{end.isoformat()} is not after --start", param_hint="--end")
    try:
        experiment = (
            Experiment(experiment_name, variants, shares or None) if experiment_name else None
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--variants/--split") from exc
    result = engagement_report(
        events_path,
        granularity=cast("Granularity", period),
        start=start,
        end=end,
        cohorts=experiment.assign if experiment else None,
        denominator=cast("Denominator", denominator),
    )
    comparison = (
        analyze_experiment(
            events_path,
            experiment,
            start=start,
            end=end,
            denominator=cast("Denominator", denominator),
        )
        if experiment
        else None
    )

    _print_report(result)
    if comparison is not None:
        _print_comparison(comparison)
    if output is not None:
        _write(result, comparison, output)
        click.echo(f"\nWrote {output}")


def _print_report(result: EngagementReport) -> None:
    if not result.rows:
        click.echo("No events in the range: nothing to report.")
        return
    frame = result.to_frame()
    frame.insert(0, "period", [_period_label(row.period) for row in result.rows])
    everyone = frame["cohort"].isna().all()
    frame["cohort"] = frame["cohort"].fillna("(all users)" if everyone else "(unassigned)")
    summary = frame[
        [
            "period",
            "cohort",
            "users",
            "impressions",
            "score",
            "score_per_user",
            "score_per_1000_impressions",
            "negative_actions_per_user",
            "dwell_seconds_per_user",
        ]
    ].rename(
        columns={
            "score_per_user": "score/user",
            "score_per_1000_impressions": "score/1k impr",
            "negative_actions_per_user": "negative/user",
            "dwell_seconds_per_user": "dwell s/user",
        }
    )
    from core.actions import load_actions

    weights = load_actions()
    click.echo(f"Weighted engagement per user; users = {_DENOMINATOR_HELP[result.denominator]}")
    click.echo(_table(summary))
    click.echo("\nActions: count (weighted impact = count x weight)")
    breakdown = frame[["period", "cohort"]].copy()
    for name in result.actions:
        header = f"{name} (x{weights.weight(name):g})"
        breakdown[header] = [
            f"{count} ({impact:g})"
            for count, impact in zip(frame[f"count_{name}"], frame[f"impact_{name}"], strict=True)
        ]
    click.echo(_table(breakdown))
    for row in result.rows:
        if row.note:
            click.echo(f"Note ({_period_label(row.period)}): {row.note}")


def _print_comparison(result: ExperimentResult) -> None:
    import pandas as pd

    from metrics.ab import SRM_THRESHOLD

    confidence = next((r.difference.confidence for r in result.variants if r.difference), 0.95)
    click.echo(
        f"\nExperiment {result.experiment.name!r}: per-user weighted engagement vs "
        f"{result.experiment.control!r} (Welch's t, {confidence:.0%} interval)"
    )
    frame = result.to_frame()
    table = frame[["variant", "users", "mean_score", "difference", "relative_difference"]].copy()
    table["relative_difference"] = [
        "" if pd.isna(v) else f"{v:+.2%}" for v in frame["relative_difference"]
    ]
    table["interval"] = [
        "" if pd.isna(low) else f"[{low:+.4g}, {high:+.4g}]"
        for low, high in zip(frame["ci_low"], frame["ci_high"], strict=True)
    ]
    table["p_value"] = ["" if pd.isna(p) else f"{p:.3g}" for p in frame["p_value"]]
    click.echo(_table(table))
    check = result.sample_ratio
    verdict = (
        f"MISMATCH (p < {SRM_THRESHOLD}): the split is broken, do not trust the effects"
        if check.mismatch
        else "ok"
    )
    observed = ", ".join(f"{v}={n}" for v, n in check.observed.items())
    expected = ", ".join(f"{v}={n:.0f}" for v, n in check.expected.items())
    click.echo(
        f"Sample ratio: observed {observed}; expected {expected}; "
        f"chi-square p={check.p_value:.3g}: {verdict}"
    )


def _write(result: EngagementReport, comparison: ExperimentResult | None, path: Path) -> None:
    frame = result.to_frame()
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(path, index=False)
            return
        payload: dict[str, Any] = {"denominator": result.denominator, "rows": _records(frame)}
        if comparison is not None:
            payload["experiment"] = {
                "name": comparison.experiment.name,
                "control": comparison.experiment.control,
                "variants": _records(comparison.to_frame()),
                "sample_ratio": {
                    "observed": dict(comparison.sample_ratio.observed),
                    "expected": dict(comparison.sample_ratio.expected),
                    "p_value": comparison.sample_ratio.p_value,
                    "mismatch": comparison.sample_ratio.mismatch,
                },
            }
        path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot write the report: {exc.strerror}") from exc


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: ISO timestamps, NaN as null."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return records


def _period_label(period: Period) -> str:
    return f"{period.start:%Y-%m-%d %H:%M} .. {period.end:%Y-%m-%d %H:%M}"


def _table(frame: pd.DataFrame) -> str:
    return str(frame.to_string(index=False, float_format=lambda v: f"{v:,.4g}", na_rep="n/a"))
