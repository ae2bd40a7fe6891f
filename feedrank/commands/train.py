"""``feedrank train | evaluate [replay | offpolicy] | promote``: a model in the MLflow registry.

``feedrank train`` is the training stage's own command
(:mod:`training.command`, which ``python -m training`` runs under torchrun),
given the CLI's error policy here. Each command ends with a ``RESULT {json}``
line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from core.config_options import workspace_option
from core.results import result_line
from core.workspace import Workspace
from feedrank.options import Command, ConfigCommand, Group
from training.command import train_command

if TYPE_CHECKING:
    from training.gate import OffPolicyEvidence

# Each command imports its stage inside the function (see feedrank.commands).
# pylint: disable=import-outside-toplevel

train = train_command(ConfigCommand)
"""``feedrank train``: the training stage's command, with the CLI's error policy."""


@click.group("evaluate", cls=Group, invoke_without_command=True)
@workspace_option
@click.option(
    "--model",
    "ref",
    default=None,
    help="Registered version number or alias of feed-ranker to evaluate (default: the challenger).",
)
@click.option(
    "--plots-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write calibration, ROC and lift plots here (default: no plots).",
)
@click.pass_context
def evaluate(ctx: click.Context, workspace: Path, ref: str | None, plots_dir: Path | None) -> None:
    """Evaluate a registered model on the workspace's test day against the oracle.

    `feedrank evaluate replay` replays the held-out visits under every policy.
    """
    if ctx.invoked_subcommand is not None:
        return
    from core import model_registry
    from core.actions import load_actions
    from training import registry

    evaluation = registry.evaluate_version(
        Workspace(workspace), ref or model_registry.CHALLENGER, plots_dir=plots_dir
    )
    click.echo(result_line(evaluation.result(load_actions())))


@evaluate.command("replay")
@workspace_option
@click.option(
    "--model",
    "ref",
    default=None,
    help="Registered version number or alias of feed-ranker to replay (default: the champion).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    help="Tweets shown per visit.",
)
@click.option(
    "--explore-share",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of the shown slots that model+explore gives to fresh tweets.",
)
@click.option(
    "--draws",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Independent simulations of each held-out visit (narrower intervals).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the replay.")
def replay(
    workspace: Path, ref: str | None, limit: int, explore_share: float, draws: int, seed: int
) -> None:
    """Replay held-out visits: chrono, model, model+explore and oracle, as an A/B table.

    The table and a PNG plot are printed/written and logged to the MLflow run
    of the model version.
    """
    from core import model_registry
    from metrics import replay as replaying
    from training import registry

    ws = Workspace(workspace)
    ref = ref or model_registry.CHAMPION
    result = replaying.replay(
        ws,
        model_registry.load_ranker(ws, ref),
        limit=limit,
        explore_share=explore_share,
        draws=draws,
        seed=seed,
    )
    out = ws.data / "replay"
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "replay.csv"
    result.table.to_csv(csv, index=False)
    png = replaying.plot(result, out / "replay.png")
    registry.log_analysis(ws, ref, "replay", result.result(), [csv, png])
    click.echo(result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(f"plot: {png}")
    click.echo(result_line(result.result()))


@evaluate.command("offpolicy")
@workspace_option
@click.option(
    "--model",
    "ref",
    default=None,
    help="Version or alias of the logging policy's model (default: the champion).",
)
@click.option(
    "--candidate",
    "candidates",
    multiple=True,
    help="A policy to evaluate, repeatable: champion, a version number or alias, "
    "no-diversity, chrono, or an actions-format YAML of other weights "
    "(default: champion, no-diversity, chrono).",
)
@click.option(
    "--limit", type=click.IntRange(1, 500), default=10, show_default=True, help="Feed slots."
)
@click.option(
    "--explore-share",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="Share of the logged requests that explored (FEEDRANK_EXPLORE_SHARE).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Exploration temperature of the logging policy (FEEDRANK_EXPLORE_TEMPERATURE).",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Logged days: each held-out visit is logged this many times (narrower intervals).",
)
@click.option(
    "--mc-draws",
    type=click.IntRange(min=10),
    default=5000,
    show_default=True,
    help="Plackett-Luce draws per visit to estimate each tweet's chance of being shown "
    "(fewer bias the estimate of a policy far from the logs upward: 1/mu of rarely shown tweets).",
)
@click.option(
    "--estimator",
    type=click.Choice(["ips", "snips", "dr"]),
    default="dr",
    show_default=True,
    help="The estimator of the RESULT line (the table shows all three).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of logs and bootstrap.")
def offpolicy(  # pylint: disable=too-many-arguments,too-many-locals
    workspace: Path,
    ref: str | None,
    candidates: tuple[str, ...],
    limit: int,
    explore_share: float,
    temperature: float,
    days: int,
    mc_draws: int,
    estimator: str,
    seed: int,
) -> None:
    """Off-policy evaluation: each candidate's weighted engagement per user, from explored logs.

    The logs are the served policy's (greedy, or a Plackett-Luce draw on the
    explored share) on the held-out day, acted on by the simulator. IPS,
    SNIPS and doubly robust estimates with bootstrap intervals are printed
    next to each candidate's true value, written to data/offpolicy/, and
    logged to the MLflow run of the logging model.
    """
    from core import model_registry
    from core.actions import load_actions
    from metrics import offpolicy as ope
    from training import registry

    ws = Workspace(workspace)
    ref = ref or model_registry.CHAMPION
    actions = load_actions()
    data = ope.held_out(ws, model_registry.load_ranker(ws, ref), actions)
    logging = ope.LoggingPolicy(share=explore_share, temperature=temperature, limit=limit)
    policies = ope.candidates(
        candidates or ("champion", "no-diversity", "chrono"),
        data,
        lambda r: model_registry.load_ranker(ws, r),
        actions,
        limit,
        logging.diversity,
    )
    result = ope.evaluate(data, policies, logging, actions, mc_draws=mc_draws, days=days, seed=seed)
    out = ws.data / "offpolicy"
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "offpolicy.csv"
    table = result.table()
    table.to_csv(csv, index=False)
    png = ope.plot(result, out / "offpolicy.png", estimator)
    figures = result.result(estimator)
    registry.log_analysis(
        ws,
        ref,
        "offpolicy",
        {k: float(v) for k, v in figures.items() if isinstance(v, int | float)},
        [csv, png],
    )
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(f"plot: {png}")
    click.echo(result_line(figures))


def _offpolicy_evidence(ws: Workspace) -> Callable[[str, str], OffPolicyEvidence]:
    """The gate's off-policy check: both versions estimated from the champion's explored logs."""

    def evidence(challenger: str, champion: str) -> OffPolicyEvidence:
        from core import model_registry
        from core.actions import load_actions
        from metrics import offpolicy as ope
        from training.gate import OffPolicyEvidence as Evidence

        actions = load_actions()
        data = ope.held_out(ws, model_registry.load_ranker(ws, champion), actions)
        logging = ope.LoggingPolicy()
        candidates = ope.candidates(
            (challenger, champion),
            data,
            lambda r: model_registry.load_ranker(ws, r),
            actions,
            logging.limit,
            logging.diversity,
        )
        new, old = ope.evaluate(data, candidates, logging, actions, mc_draws=500).policies
        dr = new.estimates["dr"]
        return Evidence("dr", dr.value, dr.ci_low, dr.ci_high, old.estimates["dr"].value)

    return evidence


PROMOTE_EXIT_CODES = {"promoted": 0, "unchanged": 0, "refused": 3, "pending": 4, "rejected": 5}
"""``feedrank promote``'s exit status per decision (a user error exits 1).

0: ``champion`` moved (or the challenger already is champion); 3: the gate
refused the challenger; 4: the challenger passed the gate and waits for
approval; 5: an approver rejected the pending promotion.
"""
PROMOTE_OUTPUTS = ("version", "decision", "reason")
"""The keys ``feedrank promote`` writes to ``--outputs FILE`` and ``$GITHUB_OUTPUT``."""


def approver_identity(explicit: str | None = None) -> str:
    """Who approves: ``explicit``, else the GitHub Actions actor, else the local user."""
    import getpass
    import os

    for name in (
        explicit,
        os.environ.get("GITHUB_TRIGGERING_ACTOR"),
        os.environ.get("GITHUB_ACTOR"),
    ):
        if name and name.strip():
            return name.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def output_lines(outcome: dict[str, object]) -> str:
    """``key=value`` lines of the contract's keys, one line each (newlines become spaces)."""
    from feedrank.outputs import output_lines as lines

    return lines(outcome, (*PROMOTE_OUTPUTS, "exit_code"))


def _publish(outcome: dict[str, object], outputs: Path | None) -> None:
    """Write the outputs to ``outputs`` and append them to ``$GITHUB_OUTPUT`` (and the summary)."""
    import os

    from feedrank.outputs import publish_outputs

    publish_outputs(output_lines(outcome), outputs)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as out:
            out.write(
                f"Model version {outcome.get('version')}: **{outcome.get('decision')}** "
                f"({outcome.get('reason')}).\n"
            )


@click.command("promote", cls=Command)
@workspace_option
@click.option(
    "--require-approval",
    is_flag=True,
    help="Stop at a pending state (tag, exit 4) instead of moving the champion alias.",
)
@click.option(
    "--approve",
    "approve_version",
    default=None,
    metavar="VERSION",
    help="Grant the pending promotion of VERSION (skips the gate, already passed).",
)
@click.option(
    "--refuse",
    "refuse_version",
    default=None,
    metavar="VERSION",
    help="Reject the pending promotion of VERSION (exit 5); the champion stays.",
)
@click.option(
    "--reason",
    default="",
    help="Why VERSION is approved or refused (tagged approval.reason on the version).",
)
@click.option(
    "--approver",
    default=None,
    help="Who approves or refuses (default: $GITHUB_TRIGGERING_ACTOR, $GITHUB_ACTOR, "
    "else the local user).",
)
@click.option(
    "--outputs",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write version, decision, reason and exit_code here as key=value lines "
    "(also appended to $GITHUB_OUTPUT when it is set).",
)
@click.option(
    "--auc-tolerance",
    type=click.FloatRange(min=0),
    default=0.005,
    show_default=True,
    help="Refuse when any head's expected AUC (against the oracle's probabilities at "
    "each row's slot, not the test day's labels) is lower than the champion's by more than this.",
)
@click.option(
    "--min-gain",
    type=float,
    default=0.0,
    show_default=True,
    help="Required gain in share of oracle lift at 50 over the champion.",
)
@click.option(
    "--offpolicy/--no-offpolicy",
    "offpolicy_check",
    default=False,
    show_default=True,
    help="Also refuse a challenger whose off-policy interval (DR, from the champion's "
    "explored logs of the held-out day) lies below the champion's estimate.",
)
@click.option(
    "--approval-ttl-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=72.0,
    show_default=True,
    help="A pending promotion older than this expires instead of being approved.",
)
@click.pass_context
def promote(  # pylint: disable=too-many-arguments
    ctx: click.Context,
    workspace: Path,
    require_approval: bool,
    approve_version: str | None,
    refuse_version: str | None,
    reason: str,
    approver: str | None,
    outputs: Path | None,
    auc_tolerance: float,
    min_gain: float,
    offpolicy_check: bool,
    approval_ttl_hours: float,
) -> None:
    """Give the champion alias to the challenger if it passes the gate.

    Exit status: 0 promoted (or already champion), 3 refused by the gate, 4
    waiting for approval (--require-approval), 5 rejected by an approver
    (--refuse), 1 a user error (nothing pending, an expired request, no model).
    """
    from training import registry

    if approve_version is not None and refuse_version is not None:
        raise click.UsageError("--approve and --refuse exclude each other")
    ws = Workspace(workspace)
    if approve_version is not None:
        outcome = registry.approve(
            ws, approve_version, approval_ttl_hours, approver_identity(approver), reason
        )
    elif refuse_version is not None:
        outcome = registry.refuse(ws, refuse_version, approver_identity(approver), reason)
    else:
        outcome = registry.promote(
            ws,
            require_approval,
            auc_tolerance,
            min_gain,
            offpolicy=_offpolicy_evidence(ws) if offpolicy_check else None,
        )
    code = PROMOTE_EXIT_CODES[outcome["decision"]]
    outcome = {**outcome, "exit_code": code}
    _publish(outcome, outputs)
    click.echo(result_line(outcome))
    ctx.exit(code)
