"""train.yml's job chain, run as the YAML names it, on the tiny world (issue 20, item 1).

Jobs run in ``needs`` order: data, features, dataset, train, evaluate,
register (the gate), approval, promote, then deploy, which calls cd.yml,
whose build job runs up to the Bento. Every ``run`` step is read from the
YAML and run with bash from the repository root, with the env the YAML
gives it. Expressions (``${{ ... }}``) are evaluated against the trigger's
inputs, the repository's variables and secrets (empty here, as an unset one
is on GitHub), and the outputs of earlier steps and jobs as written to
``$GITHUB_OUTPUT``. What a hosted runner does itself is stood in for:
``actions/*`` steps are skipped (one checkout and one workspace carry the
artifacts between jobs), and ``scripts/bootstrap.sh`` is this checkout's
``.venv``. A renamed step, a changed exit-code contract or an output nobody
writes fails here.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess  # nosec B404  # runs the workflow's own steps
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import model_registry
from core.workspace import REPO_ROOT
from tests.conftest import new_workspace
from tests.unit.test_workflows import TRAINING_STAGES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
SETUP = "./scripts/bootstrap.sh"
"""The runner's venv step: this checkout's .venv stands in for it."""
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
CHAIN = TRAINING_STAGES[: TRAINING_STAGES.index("deploy")]
"""The jobs before deploy (which calls cd.yml), in order."""


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return loaded


@dataclass
class Runner:
    """Runs a workflow's ``run`` steps with GitHub's env, outputs and expressions."""

    env: dict[str, str]
    context: dict[str, str]
    """Values of ``inputs.*``, ``vars.*``, ``secrets.*``, ``github.*`` (missing: empty)."""
    tmp: Path
    job_outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, steps: Mapping[str, Mapping[str, str]]) -> str:
        """One operand of an expression: a literal, or a name in a context GitHub knows."""
        if name[:1] == "'" and name[-1:] == "'":
            return name[1:-1]
        if found := re.fullmatch(r"needs\.([\w-]+)\.outputs\.(\w+)", name):
            return self.job_outputs[found[1]][found[2]]
        if found := re.fullmatch(r"steps\.([\w-]+)\.outputs\.(\w+)", name):
            return steps.get(found[1], {}).get(found[2], "")
        root = name.split(".", 1)[0]
        assert root in ("inputs", "vars", "secrets", "github"), f"unknown expression {name!r}"
        return self.context.get(name, "")

    def expand(self, text: str, steps: Mapping[str, Mapping[str, str]]) -> str:
        """Replace each ``${{ a || b || 'c' }}`` by its first non-empty operand."""

        def evaluate(match: re.Match[str]) -> str:
            for operand in match[1].split("||"):
                if got := self.value(operand.strip(), steps):
                    return got
            return ""

        return EXPRESSION.sub(evaluate, text)

    def run_job(self, name: str, job: Mapping[str, Any], until_step: str | None = None) -> str:
        """The job's run steps in order, its outputs from what they wrote; its status.

        ``success``, or ``failure`` at the first step that exits non-zero (the
        steps after it do not run, as on GitHub).
        """
        steps: dict[str, dict[str, str]] = {}
        base = {
            **self.env,
            **{k: self.expand(str(v), steps) for k, v in job.get("env", {}).items()},
        }
        for step in job["steps"]:
            if "uses" in step or step["run"].strip() == SETUP:
                continue
            command = step["run"].strip()
            assert "\n" not in command, f"{name}: step {step.get('name')!r} is not one line"
            assert "${{" not in command, f"{name}: {step.get('name')!r} puts an expression in run"
            output = self.tmp / f"{name}-{len(self.ran)}.out"
            output.write_text("")
            env = {
                **base,
                **{k: self.expand(str(v), steps) for k, v in step.get("env", {}).items()},
                "GITHUB_OUTPUT": str(output),
            }
            done = subprocess.run(  # nosec B603 B607  # bash runs the workflow's step
                ["bash", "-eo", "pipefail", "-c", command],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            self.ran.append(f"{name}: {step.get('name', command)} -> exit {done.returncode}")
            if "id" in step:  # GitHub keeps what a step wrote, even when it then failed
                steps[step["id"]] = dict(
                    line.split("=", 1) for line in output.read_text().splitlines() if "=" in line
                )
            if done.returncode != 0:
                self.failures[name] = done.stderr[-3000:]
                break
            if until_step is not None and step.get("id") == until_step:
                break
        self.job_outputs[name] = {
            key: self.expand(str(value), steps) for key, value in job.get("outputs", {}).items()
        }
        return "failure" if name in self.failures else "success"


def test_the_train_workflow_runs_its_chain_to_the_bento(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = _load("train.yml")
    jobs = workflow["jobs"]
    for before, after in itertools.pairwise(CHAIN):
        assert before in jobs[after]["needs"], f"{after} must need {before}"
    assert jobs["deploy"]["needs"] == "promote"

    ws = new_workspace(tmp_path / "ws")
    # The in-process checks read this workspace's store; setenv, so that what MLflow
    # exports is undone afterwards (the steps' env drops the variable).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ws.data / 'mlflow' / 'mlflow.db'}")
    summary = tmp_path / "summary.md"
    env = {
        **{
            k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "GITHUB_OUTPUT")
        },
        "FEEDRANK_WORKSPACE": str(ws.root),  # where the runner's checkout keeps data/
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_RUN_ID": "4242",
        "GITHUB_SHA": "c0ffee1",
        "GITHUB_TRIGGERING_ACTOR": "model-owner",
    }
    context = {"inputs.preset": "tiny", "inputs.reason": "test of the chain"}
    runner = Runner(env, context, tmp_path)
    runner.env.update({k: runner.expand(str(v), {}) for k, v in workflow["env"].items()})
    assert runner.env["PRESET"] == "tiny" and runner.env["MLFLOW_TRACKING_URI"] == ""

    for name in CHAIN:
        assert runner.run_job(name, jobs[name]) == "success", runner.failures.get(name)
    register = runner.job_outputs["register"]
    assert register["decision"] == "pending"  # the gate passed; the owner decides
    version = runner.job_outputs["promote"]["version"]
    assert version == register["version"]

    client = model_registry.connect(ws)
    champion = model_registry.model_version(client, model_registry.CHAMPION)
    assert str(champion.version) == version
    assert champion.tags["approval.decision"] == "approved"
    assert champion.tags["approval.by"] == "model-owner"
    assert "run 4242" in champion.tags["approval.reason"]

    # deploy: train.yml calls cd.yml with the promoted version; its build runs to the Bento.
    deploy = jobs["deploy"]
    assert deploy["uses"] == "./.github/workflows/cd.yml"
    cd = Runner(
        runner.env,
        {"inputs.model_version": runner.expand(deploy["with"]["model_version"], {})},
        tmp_path,
        job_outputs=runner.job_outputs,
        ran=runner.ran,
    )
    assert cd.run_job("build", _load("cd.yml")["jobs"]["build"], until_step="bento") == "success"
    built = _bento_outputs(tmp_path)
    assert built["tag"] == "feedrank:c0ffee1" and built["model_version"] == version
    assert "Model version" in summary.read_text()

    # A refusal (exit 3) failing the register step, and so stopping the chain, is
    # checked on the step's own line (tests/unit/test_workflows.py) and the gate's
    # exit codes in tests/integration/test_promote_contract.py: retraining here to
    # see it again cost ~25 s of the suite's budget.
    print("\n".join(runner.ran))


def _bento_outputs(tmp_path: Path) -> dict[str, str]:
    """The GITHUB_OUTPUT the cd build step wrote (the last step file)."""
    last = max(tmp_path.glob("build-*.out"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return dict(line.split("=", 1) for line in last.read_text().splitlines())
