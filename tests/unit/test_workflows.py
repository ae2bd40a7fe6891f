"""Structure of the GitHub Actions workflows: what actionlint and the schema cannot know.

actionlint and check-jsonschema (scripts/lint.sh) check that the files are
valid workflows; these tests check that they are *these* workflows: CI runs the
developers' test script, continuous training is a chain that stops at the
first failure, and production waits for a human.
"""

from __future__ import annotations

import itertools
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from feedrank.commands.bento import BENTO_OUTPUTS
from feedrank.commands.train import PROMOTE_EXIT_CODES, PROMOTE_OUTPUTS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))
TRAINING_STAGES = [
    "data",
    "features",
    "validate",
    "dataset",
    "train",
    "evaluate",
    "register",
    "approval",
    "promote",
    "deploy",
]


@cache
def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def jobs(name: str) -> dict[str, dict[str, Any]]:
    return load(name)["jobs"]


def needs(job: dict[str, Any]) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(job) if "run" in step]


def environment_name(job: dict[str, Any]) -> str | None:
    value = job.get("environment")
    return value.get("name") if isinstance(value, dict) else value


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in steps(job) if str(step.get("uses", "")).startswith(f"{action}@")]


def walk(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_the_three_workflows_exist() -> None:
    assert {path.name for path in WORKFLOW_FILES} >= {"ci.yml", "cd.yml", "train.yml"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_parses_with_triggers_and_jobs(path: Path) -> None:
    workflow = load(path.name)
    assert workflow["on"], f"{path.name} has no trigger"
    assert workflow["jobs"], f"{path.name} has no jobs"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_continue_on_error(path: Path) -> None:
    assert "continue-on-error" not in path.read_text(encoding="utf-8")
    assert all(key != "continue-on-error" for key, _ in walk(load(path.name)))


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_permissions_are_declared_and_minimal_at_the_top(path: Path) -> None:
    permissions = load(path.name)["permissions"]
    assert permissions == {"contents": "read"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_version(path: Path) -> None:
    for key, value in walk(load(path.name)):
        if key == "uses" and not value.startswith("./"):
            assert re.search(r"@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$", value), (
                f"unpinned action: {value}"
            )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_untrusted_input_never_reaches_a_shell_directly(path: Path) -> None:
    """inputs.* and github.event.* go through env:, never into run: text (script injection)."""
    for key, value in walk(load(path.name)):
        if key == "run" and isinstance(value, str):
            assert not re.search(r"\$\{\{\s*(inputs|github\.event)\.", value), value


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_static_cloud_keys(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "aws-access-key-id" not in text
    assert "aws-secret-access-key" not in text
    assert "AWS_SECRET_ACCESS_KEY" not in text


# ---------------------------------------------------------------- ci.yml


def test_ci_runs_the_developers_test_script_exactly() -> None:
    test = jobs("ci.yml")["test"]
    assert [run.strip() for run in runs(test)] == ["./scripts/test.sh"]
    # .ci/run, the README's command and CI: one script.
    assert "./scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert (ROOT / "scripts" / "test.sh").exists()


def test_ci_triggers_on_push_and_pull_request_and_cancels_superseded_runs() -> None:
    workflow = load("ci.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in workflow["concurrency"]["group"]


def test_ci_matrix_covers_the_supported_pythons() -> None:
    test = jobs("ci.yml")["test"]
    assert test["strategy"]["matrix"]["python-version"] == ["3.11", "3.12"]
    setup = one_step(test, "actions/setup-python")
    assert setup["with"]["python-version"] == "${{ matrix.python-version }}"
    assert setup["with"]["cache"] == "pip"


def test_ci_environment_requires_services_and_cpu_torch() -> None:
    env = jobs("ci.yml")["test"]["env"]
    assert env["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert str(env["FEEDRANK_REQUIRE_SERVICES"]) == "1"


def test_ci_service_containers_on_default_ports() -> None:
    services = jobs("ci.yml")["test"]["services"]
    assert "6379:6379" in services["redis"]["ports"]
    assert "5432:5432" in services["postgres"]["ports"]
    assert services["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert services["postgres"]["env"]["POSTGRES_DB"] == "test"
    for service in services.values():
        assert "--health-cmd" in service["options"], "CI must wait for the service to be healthy"


def test_ci_uploads_coverage_to_codecov() -> None:
    upload = one_step(jobs("ci.yml")["test"], "codecov/codecov-action")
    assert upload["with"]["token"] == "${{ secrets.CODECOV_TOKEN }}"
    assert upload["with"]["files"] == "coverage.xml"
    assert "--cov-report=xml" in (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")


def test_ci_checks_terraform_format_and_validates_the_root_module() -> None:
    terraform = jobs("ci.yml")["terraform"]
    assert uses(terraform, "hashicorp/setup-terraform")
    commands = " ".join(runs(terraform))
    assert "terraform fmt -check -recursive" in commands
    # Every environment runs the one root module, so validating it covers them all.
    assert "terraform -chdir=terraform/stack init -backend=false" in commands
    assert "terraform -chdir=terraform/stack validate" in commands


def one_step(job: dict[str, Any], action: str) -> dict[str, Any]:
    found = uses(job, action)
    assert len(found) == 1, f"expected one {action} step, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------- cd.yml


def test_cd_triggers_on_main_tags_and_from_continuous_training() -> None:
    triggers = load("cd.yml")["on"]
    assert triggers["push"]["branches"] == ["main"]
    assert triggers["push"]["tags"] == ["v*"]
    assert "model_version" in triggers["workflow_call"]["inputs"]


def test_cd_builds_the_bento_from_the_serving_bentofile_and_pushes_by_git_sha() -> None:
    build = jobs("cd.yml")["build"]
    commands = "\n".join(runs(build))
    bento = next(step for step in steps(build) if step.get("id") == "bento")
    assert bento["run"].strip().startswith(".venv/bin/feedrank bento build ")
    assert "\n" not in bento["run"].strip()  # one line: tests/integration/test_cd_build.py runs it
    consumed = set(re.findall(r"steps\.bento\.outputs\.(\w+)", str(build)))
    assert consumed and consumed <= set(BENTO_OUTPUTS)
    push = next(step for step in steps(build) if step.get("id") == "push")
    assert push["run"].strip().startswith("./scripts/cd/publish_image.sh ")
    assert "\n" not in push["run"].strip()  # one line: tests/integration/test_cd_build.py runs it
    script = (ROOT / "scripts" / "cd" / "publish_image.sh").read_text()
    assert '"$BIN/bentoml" containerize "$bento_tag" --image-tag "$image"' in script
    assert 'image="$repository:$GITHUB_SHA"' in script and 'docker push "$image"' in script
    assert "publish_image.sh" in commands
    assert build["permissions"]["packages"] == "write"
    login = one_step(build, "docker/login-action")
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"


@pytest.mark.parametrize("job_name", ["deploy-staging", "deploy-production"])
def test_cd_deploys_with_oidc_terraform_and_a_smoke_test(job_name: str) -> None:
    job = jobs("cd.yml")[job_name]
    assert job["permissions"]["id-token"] == "write"
    credentials = one_step(job, "aws-actions/configure-aws-credentials")
    assert credentials["with"]["role-to-assume"].startswith("${{ vars.")
    environment = job_name.removeprefix("deploy-")
    commands = "\n".join(runs(job))
    assert job["env"]["TF_DIR"] == "terraform/stack"
    assert job["env"]["TF_ENV"] == environment
    # -chdir makes these paths relative to TF_DIR.
    assert '-backend-config="../environments/$TF_ENV.backend.hcl"' in commands
    assert '-var-file="../environments/$TF_ENV.tfvars"' in commands
    for suffix in (".backend.hcl", ".tfvars"):
        assert (ROOT / "terraform" / "environments" / f"{environment}{suffix}").is_file()
    assert "plan -input=false -out=tfplan" in commands
    assert '-var "image_digest=$IMAGE_DIGEST"' in commands
    assert "apply -input=false tfplan" in commands
    assert job["env"]["IMAGE_DIGEST"] == "${{ needs.build.outputs.image_digest }}"
    assert "./scripts/cd/deploy_smoke.sh" in runs(job)  # tests/integration/test_smoke_rank.py
    smoke = (ROOT / "scripts" / "cd" / "deploy_smoke.sh").read_text()
    assert '"$ROOT/scripts/cd/smoke_rank.sh" http://127.0.0.1:8080' in smoke
    assert all("\n" not in run.strip() for run in runs(job))
    assert job["concurrency"]["cancel-in-progress"] is False


def test_cd_production_waits_for_staging_and_a_human() -> None:
    production = jobs("cd.yml")["deploy-production"]
    assert environment_name(production) == "production"
    assert "deploy-staging" in needs(production)
    assert environment_name(jobs("cd.yml")["deploy-staging"]) == "staging"


# ---------------------------------------------------------------- train.yml


def test_train_triggers_daily_by_hand_and_on_drift() -> None:
    triggers = load("train.yml")["on"]
    assert triggers["schedule"][0]["cron"]
    assert {"preset", "reason"} <= set(triggers["workflow_dispatch"]["inputs"])
    assert triggers["repository_dispatch"]["types"] == ["drift-detected"]


def test_train_stages_form_a_chain() -> None:
    stages = {name: job for name, job in jobs("train.yml").items() if name != "notify"}
    assert list(stages) == TRAINING_STAGES
    assert needs(stages[TRAINING_STAGES[0]]) == []
    for previous, stage in itertools.pairwise(TRAINING_STAGES):
        assert needs(stages[stage]) == [previous], f"{stage} must need exactly {previous}"
        assert "if" not in stages[stage], f"{stage} must not run after a failed {previous}"


def test_train_stages_run_the_pipeline_commands_in_order() -> None:
    train = jobs("train.yml")
    expected = {
        "data": ["feedrank data generate"],
        "features": [
            "feedrank features build",
            "feedrank features apply",
            "feedrank features materialize",
        ],
        "validate": ["feedrank features validate"],
        "dataset": ["feedrank dataset build"],
        "train": ["feedrank train"],
        "evaluate": ["feedrank evaluate"],
        "register": ["feedrank promote --require-approval"],
        "promote": ["feedrank promote --approve"],
    }
    for stage, commands in expected.items():
        text = "\n".join(runs(train[stage]))
        positions = [text.find(command) for command in commands]
        assert -1 not in positions, f"{stage} misses one of {commands}"
        assert positions == sorted(positions), f"{stage} runs {commands} out of order"


def test_train_every_stage_sets_up_with_bootstrap_before_running_feedrank() -> None:
    assert load("train.yml")["env"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    for name, job in jobs("train.yml").items():
        commands = runs(job)
        feedrank = [index for index, run in enumerate(commands) if "feedrank " in run]
        if not feedrank:
            continue
        bootstrap = [index for index, run in enumerate(commands) if "./scripts/bootstrap.sh" in run]
        assert bootstrap and bootstrap[0] < feedrank[0], (
            f"{name} runs feedrank before ./scripts/bootstrap.sh"
        )


def test_train_stages_hand_over_artifacts() -> None:
    train = jobs("train.yml")
    # validate reads the features' artifact and writes none; dataset reads the same one.
    features = one_step(train["features"], "actions/upload-artifact")["with"]["name"]
    assert one_step(train["validate"], "actions/download-artifact")["with"]["name"] == features
    assert not [s for s in steps(train["validate"]) if "upload-artifact" in s.get("uses", "")]
    with_artifacts = [
        s for s in TRAINING_STAGES[: TRAINING_STAGES.index("register") + 1] if s != "validate"
    ]
    for previous, stage in zip(with_artifacts, [*with_artifacts[1:], "promote"], strict=True):
        uploaded = one_step(train[previous], "actions/upload-artifact")["with"]["name"]
        downloaded = one_step(train[stage], "actions/download-artifact")["with"]["name"]
        assert downloaded == uploaded, (
            f"{stage} downloads {downloaded}, {previous} uploaded {uploaded}"
        )


def test_train_waits_for_the_owner_before_promoting() -> None:
    train = jobs("train.yml")
    assert environment_name(train["approval"]) == "model-approval"
    assert environment_name(train["promote"]) is None
    version = train["promote"]["steps"][-1]["env"]["VERSION"]
    assert version == "${{ needs.approval.outputs.version }}"
    assert train["approval"]["outputs"]["version"] == "${{ needs.register.outputs.version }}"


def test_train_deploys_through_cd() -> None:
    deploy = jobs("train.yml")["deploy"]
    assert deploy["uses"] == "./.github/workflows/cd.yml"
    assert deploy["with"]["model_version"] == "${{ needs.promote.outputs.version }}"
    assert deploy["permissions"]["packages"] == "write"
    assert deploy["permissions"]["id-token"] == "write"


def test_train_failure_opens_an_issue_naming_the_stage() -> None:
    notify = jobs("train.yml")["notify"]
    assert notify["if"] == "failure()"
    assert needs(notify) == TRAINING_STAGES
    assert notify["permissions"] == {"issues": "write"}
    script = one_step(notify, "actions/github-script")["with"]["script"]
    assert "issues.create" in script and "issues.createComment" in script
    assert "failed at stage: ${stage}" in script


# ------------------------------------------------- train.yml and feedrank promote's contract

TOLERATED_EXIT = re.compile(r"\|\|\s*\[\s*\$\?\s+-eq\s+(\d+)\s*\]")
STEP_OUTPUT = re.compile(r"^\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}$")


def promote_step(job: dict[str, Any], command: str) -> dict[str, Any]:
    """The one step of ``job`` that runs ``command``: a one-line call with an id."""
    found = [step for step in steps(job) if command in step.get("run", "")]
    assert len(found) == 1, f"expected one step running {command}, found {len(found)}"
    step = found[0]
    run = step["run"].strip()
    assert "\n" not in run, f"{command} must be a one-line call, not a script: {run!r}"
    assert run.startswith(f".venv/bin/{command}"), run
    for parsed in ("tail", "RESULT", "GITHUB_OUTPUT", "| tee", "jq"):
        assert parsed not in run, f"the outputs come from $GITHUB_OUTPUT, not {parsed}: {run}"
    assert step.get("id"), f"the step running {command} needs an id to read its outputs"
    return step


def outputs_of(job: dict[str, Any], step_id: str) -> dict[str, str]:
    """The job's outputs, each of which must be a contract key of step ``step_id``."""
    out = {}
    for name, expression in job["outputs"].items():
        match = STEP_OUTPUT.match(expression)
        assert match, f"output {name} = {expression} is not a step output"
        assert match.group(1) == step_id, f"output {name} reads step {match.group(1)}"
        assert match.group(2) in PROMOTE_OUTPUTS, f"{match.group(2)} is not a promote output"
        out[name] = match.group(2)
    return out


def test_train_register_gates_with_the_promote_contract() -> None:
    register = jobs("train.yml")["register"]
    step = promote_step(register, "feedrank promote --require-approval")
    assert step["name"] == "feedrank promote --require-approval"
    # Waiting for approval is this step's success; a gate refusal (3) or a user
    # error (1) fails the job and stops the chain.
    tolerated = {int(code) for code in TOLERATED_EXIT.findall(step["run"])}
    assert tolerated == {PROMOTE_EXIT_CODES["pending"]}
    assert "|| true" not in step["run"] and "set +e" not in step["run"]
    assert outputs_of(register, step["id"]) == {"version": "version", "decision": "decision"}


def test_train_promote_approves_with_the_promote_contract() -> None:
    train = jobs("train.yml")
    promote = train["promote"]
    step = promote_step(promote, "feedrank promote --approve")
    assert step["run"].startswith('.venv/bin/feedrank promote --approve "$VERSION" --reason ')
    assert not TOLERATED_EXIT.search(step["run"]), "an approval has one success: exit 0"
    assert outputs_of(promote, step["id"]) == {"version": "version"}
    assert PROMOTE_EXIT_CODES["promoted"] == 0


def test_train_reads_only_outputs_that_jobs_declare() -> None:
    train = jobs("train.yml")
    text = (WORKFLOWS / "train.yml").read_text(encoding="utf-8")
    for job, key in re.findall(r"needs\.([\w-]+)\.outputs\.([\w-]+)", text):
        assert key in train[job].get("outputs", {}), f"{job} has no output {key}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_run_step_is_one_line_calling_what_the_repo_has(path: Path) -> None:
    """A step is one call; the scripts it names exist and are executable."""
    for name, job in load(path.name)["jobs"].items():
        for step in job.get("steps", []):
            if "run" not in step:
                continue
            command = step["run"].strip()
            assert "\n" not in command, f"{path.name} {name}: {step.get('name')} is not one line"
            for script in re.findall(r"\./scripts/[\w/.-]+", command):
                assert os.access(ROOT / script, os.X_OK), f"{path.name} {name}: {script} missing"
