"""``feedrank promote``'s contract with CI: exit status per decision, outputs, the approval record.

Every exit code comes from a real situation on the tiny world with a real
MLflow store: a first promotion (0), the gate refusing an identical challenger
(3), a challenger waiting for approval (4), an approval (0, tagged with who,
when and why), a rejection (5, tagged the same way) and a user error (1). The
outputs are read from the ``--outputs`` file and from ``$GITHUB_OUTPUT``, as
train.yml reads them, never from the printed lines.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mlflow import MlflowClient

from core import model_registry
from core.workspace import Workspace
from feedrank.commands.train import PROMOTE_EXIT_CODES, PROMOTE_OUTPUTS, output_lines
from feedrank.commands.train import promote as promote_command
from training.pipeline import run_training_pipeline
from training.train import TrainConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK = TrainConfig(
    max_epochs=2, batch_size=1024, refit=False
)  # the gate's contract, not the refit
GITHUB_VARIABLES = (
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_ACTOR",
    "GITHUB_TRIGGERING_ACTOR",
    "MLFLOW_TRACKING_URI",
)


@pytest.fixture(name="ws", scope="module")
def fixture_ws(
    tiny_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workspace]:
    """A copy of the tiny workspace with its own (empty) MLflow store."""
    root = tmp_path_factory.mktemp("promote") / "ws"
    shutil.copytree(
        tiny_workspace.root, root, ignore=shutil.ignore_patterns("mlflow", "__pycache__")
    )
    with pytest.MonkeyPatch.context() as env:
        for name in GITHUB_VARIABLES:
            env.delenv(name, raising=False)
        yield Workspace(root)


@pytest.fixture(name="github_output")
def fixture_github_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runner's ``$GITHUB_OUTPUT`` and step summary, as GitHub Actions sets them."""
    path = tmp_path / "github_output"
    path.touch()
    monkeypatch.setenv("GITHUB_OUTPUT", str(path))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    return path


def read_outputs(path: Path) -> dict[str, str]:
    """``key=value`` lines as GitHub Actions reads ``$GITHUB_OUTPUT`` (the last value wins)."""
    return dict(line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())


def promote(ws: Workspace, *args: str) -> Result:
    return CliRunner().invoke(promote_command, ["--workspace", str(ws.root), *args])


def train_challenger(ws: Workspace) -> str:
    return str(run_training_pipeline(ws.root, QUICK, promote=False, progress=False)["version"])


def tags(ws: Workspace, version: str) -> dict[str, str]:
    client = MlflowClient(model_registry.tracking_uri(ws))
    return dict(client.get_model_version(model_registry.MODEL_NAME, version).tags)


def champion(ws: Workspace) -> str:
    client = MlflowClient(model_registry.tracking_uri(ws))
    found = client.get_model_version_by_alias(model_registry.MODEL_NAME, model_registry.CHAMPION)
    return str(found.version)


def test_output_lines_are_one_line_per_key() -> None:
    text = output_lines({"version": "7", "decision": "refused", "reason": "a\nb", "exit_code": 3})
    assert text == "version=7\ndecision=refused\nreason=a b\nexit_code=3\n"
    assert PROMOTE_EXIT_CODES == {
        "promoted": 0,
        "unchanged": 0,
        "refused": 3,
        "pending": 4,
        "rejected": 5,
    }


def test_first_promotion_exits_0_and_writes_the_outputs(
    ws: Workspace, github_output: Path, tmp_path: Path
) -> None:
    version = train_challenger(ws)
    outputs = tmp_path / "out" / "promote.env"
    result = promote(ws, "--outputs", str(outputs))
    assert result.exit_code == 0, result.output
    for found in (read_outputs(outputs), read_outputs(github_output)):
        assert set(PROMOTE_OUTPUTS) <= set(found)
        assert found["version"] == version
        assert found["decision"] == "promoted"
        assert found["reason"] == "no champion yet"
        assert found["exit_code"] == "0"
    assert champion(ws) == version
    assert "**promoted**" in github_output.with_name("summary.md").read_text(encoding="utf-8")


def test_gate_refusal_exits_3_then_pending_exits_4(ws: Workspace, github_output: Path) -> None:
    before = champion(ws)
    version = train_challenger(ws)  # same seed and data: identical, so not better
    refused = promote(ws)
    assert refused.exit_code == PROMOTE_EXIT_CODES["refused"] == 3, refused.output
    found = read_outputs(github_output)
    assert found["version"] == version and found["decision"] == "refused"
    assert "does not beat" in found["reason"]
    assert tags(ws, version)["promotion.decision"] == "refused"
    assert champion(ws) == before

    pending = promote(ws, "--require-approval", "--min-gain", "-1")
    assert pending.exit_code == PROMOTE_EXIT_CODES["pending"] == 4, pending.output
    found = read_outputs(github_output)  # appended: the last value of each key wins
    assert found["version"] == version and found["decision"] == "pending"
    assert found["exit_code"] == "4"
    assert tags(ws, version)["promotion.decision"] == "pending"
    assert champion(ws) == before


def test_approval_exits_0_and_records_who_when_and_why(
    ws: Workspace, github_output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = str(
        MlflowClient(model_registry.tracking_uri(ws))
        .get_model_version_by_alias(model_registry.MODEL_NAME, model_registry.CHALLENGER)
        .version
    )
    assert tags(ws, version)["promotion.decision"] == "pending"  # left by the test above
    monkeypatch.setenv("GITHUB_ACTOR", "someone-else")
    monkeypatch.setenv("GITHUB_TRIGGERING_ACTOR", "model-owner")
    started = datetime.now(UTC).replace(microsecond=0)
    result = promote(ws, "--approve", version, "--reason", "lift checked by hand")
    assert result.exit_code == 0, result.output
    found = read_outputs(github_output)
    assert found["version"] == version and found["decision"] == "promoted"
    assert "model-owner" in found["reason"]
    assert champion(ws) == version
    recorded = tags(ws, version)
    assert recorded["approval.decision"] == "approved"
    assert recorded["approval.by"] == "model-owner"
    assert recorded["approval.reason"] == "lift checked by hand"
    at = datetime.strptime(recorded["approval.at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert started - timedelta(seconds=1) <= at <= datetime.now(UTC)
    assert recorded["promotion.decision"] == "promoted"

    again = promote(ws, "--approve", version)
    assert again.exit_code == 1 and "no pending promotion" in again.output


def test_rejection_exits_5_and_keeps_the_champion(
    ws: Workspace, github_output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = champion(ws)
    version = train_challenger(ws)
    assert promote(ws, "--require-approval", "--min-gain", "-1").exit_code == 4
    monkeypatch.setenv("GITHUB_ACTOR", "reviewer")
    result = promote(ws, "--refuse", version, "--reason", "AUC of reply too low")
    assert result.exit_code == PROMOTE_EXIT_CODES["rejected"] == 5, result.output
    found = read_outputs(github_output)
    assert found["version"] == version and found["decision"] == "rejected"
    assert found["reason"] == "rejected by reviewer: AUC of reply too low"
    recorded = tags(ws, version)
    assert recorded["approval.decision"] == "rejected"
    assert recorded["approval.by"] == "reviewer"
    assert recorded["approval.reason"] == "AUC of reply too low"
    assert recorded["approval.at"].endswith("Z")
    assert recorded["promotion.decision"] == "rejected"
    assert champion(ws) == before
    # A rejected version can be neither approved nor rejected again.
    late = promote(ws, "--approve", version)
    assert late.exit_code == 1 and "decision: rejected" in late.output


def test_user_errors_exit_1_and_usage_errors_2(ws: Workspace) -> None:
    both = promote(ws, "--approve", "1", "--refuse", "1")
    assert both.exit_code == 2  # click's usage error
    missing = promote(ws, "--refuse", "999")
    assert missing.exit_code == 1 and "Traceback" not in missing.output
