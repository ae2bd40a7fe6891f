"""MLflow: a training run, the registered model and its aliases, promotion, a real server.

The local store tests use the workspace's own SQLite backend; the server tests
start ``mlflow server`` as a subprocess (SQLite backend, and PostgreSQL when
it is up) and talk to it over the REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from core import model_registry
from core.feast_store import FEATURE_SERVICE, training_set_path
from core.workspace import REPO_ROOT, Workspace
from feedrank.commands.train import evaluate as evaluate_command
from feedrank.commands.train import promote as promote_command
from training import registry
from training.pipeline import run_training_pipeline
from training.train import TrainConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK = TrainConfig(max_epochs=2, batch_size=1024)


@pytest.fixture(autouse=True)
def _no_github_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """``feedrank promote`` writes to a runner's files: not to CI's own while it runs these."""
    for name in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)


def _copy(tiny: Workspace, root: Path) -> Workspace:
    shutil.copytree(tiny.root, root, ignore=shutil.ignore_patterns("mlflow", "__pycache__"))
    return Workspace(root)


@pytest.fixture(name="trained", scope="module")
def fixture_trained(
    tiny_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Workspace, dict]]:
    """A workspace copy with one run registered and promoted (no champion before)."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    ws = _copy(tiny_workspace, tmp_path_factory.mktemp("mlflow") / "ws")
    with pytest.MonkeyPatch.context() as env:  # a short run still gets system samples
        env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
        summary = run_training_pipeline(ws.root, QUICK, progress=False)
    yield ws, summary
    # model_registry.connect exports the store it points MLflow at: undo that too.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def test_run_logs_params_metrics_plots_and_lineage(trained: tuple[Workspace, dict]) -> None:
    ws, summary = trained
    client = MlflowClient(model_registry.tracking_uri(ws))
    assert model_registry.tracking_uri(ws).startswith("sqlite:///")
    assert (ws.data / "mlflow" / "mlflow.db").exists()
    run = client.get_run(summary["run_id"])
    assert run.data.params["batch_size"] == "1024"
    assert run.data.params["model.architecture"] == "shared_bottom"
    assert run.data.tags["feature_service"] == FEATURE_SERVICE
    assert len(run.data.tags["data_sha256"]) == 64
    assert {"auc_like", "oracle_lift_share_at_50", "ece_report"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == summary["epochs"]
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"calibration_like.png", "roc_like.png", "lift.png"} <= plots
    features = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/features.json")
    assert features["feature_service"] == FEATURE_SERVICE
    assert "ua_positive_rate" in features["features"]
    assert "tweet_created_s" not in features["features"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith((ws.data / "mlflow" / "artifacts").as_uri())


def test_the_run_is_what_mlflow_users_expect(trained: tuple[Workspace, dict]) -> None:
    """A model-training experiment, epochs logged live, system metrics, the training set."""
    ws, summary = trained
    client = MlflowClient(model_registry.tracking_uri(ws))
    run = client.get_run(summary["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[registry.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # Open for the whole training, epochs logged as they finished (not back-filled at the end).
    assert run.info.end_time - run.info.start_time >= summary["train_seconds"] * 1000 * 0.9
    epochs = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in epochs] == list(range(1, summary["epochs"] + 1))
    refit = client.get_metric_history(run.info.run_id, "refit_train_loss")
    assert summary["refit_epochs"] == sum(summary["best_epochs"]) > 0
    assert [m.step for m in refit] == list(range(1, summary["refit_epochs"] + 1))
    assert run.info.start_time <= epochs[0].timestamp < epochs[-1].timestamp
    assert any(key.startswith("system/cpu") for key in run.data.metrics), sorted(run.data.metrics)
    (logged,) = run.inputs.dataset_inputs
    tags = {t.key: t.value for t in logged.tags}
    assert tags["mlflow.data.context"] == "training"
    assert tags["feature_service"] == FEATURE_SERVICE
    assert tags["sha256"] == run.data.tags["data_sha256"]
    assert tags["first_day"] < tags["last_day"] and int(tags["rows"]) > 0
    assert logged.dataset.name == "training_set"
    assert training_set_path(ws).name in logged.dataset.source


def test_registered_with_aliases_and_first_promotion(trained: tuple[Workspace, dict]) -> None:
    ws, summary = trained
    client = MlflowClient(model_registry.tracking_uri(ws))
    version = client.get_model_version_by_alias(model_registry.MODEL_NAME, "challenger")
    assert str(version.version) == summary["version"]
    assert version.run_id == summary["run_id"]
    champion = client.get_model_version_by_alias(model_registry.MODEL_NAME, "champion")
    assert str(champion.version) == summary["version"]
    assert champion.tags["promotion.decision"] == "promoted"
    assert champion.tags["promotion.reason"] == "no champion yet"


def test_pyfunc_and_bare_ranker_agree_on_named_features(trained: tuple[Workspace, dict]) -> None:
    ws, _ = trained
    ranker = model_registry.load_ranker(ws, "champion")
    model_registry.connect(ws)
    model = mlflow.pyfunc.load_model(f"models:/{model_registry.MODEL_NAME}@champion")
    example = model.input_example
    assert list(example.columns) == list(ranker.preprocessor.feature_names)
    shuffled = example[list(reversed(example.columns))]
    out = model.predict(shuffled)
    assert list(out.columns) == [f"p_{a}" for a in ranker.actions]
    np.testing.assert_allclose(out.to_numpy(), ranker.predict_proba(example.to_dict("series")))
    assert model.metadata.signature is not None


def test_evaluate_command_ends_with_result(trained: tuple[Workspace, dict]) -> None:
    ws, _ = trained
    result = CliRunner().invoke(evaluate_command, ["--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT {")
    assert '"oracle_lift_share_at_50"' in last and '"ece_max"' in last


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(model_registry.MODEL_NAME, "champion").version)


def test_gate_refuses_an_equal_challenger_then_approval_flow(
    trained: tuple[Workspace, dict],
) -> None:
    ws, first = trained
    second = run_training_pipeline(ws.root, QUICK, promote=False, progress=False)
    assert second["version"] != first["version"]
    refused = registry.promote(ws)
    assert refused["decision"] == "refused"  # same seed and data: identical, not better
    client = MlflowClient(model_registry.tracking_uri(ws))
    tags = client.get_model_version(model_registry.MODEL_NAME, second["version"]).tags
    assert tags["promotion.decision"] == "refused" and "does not beat" in tags["promotion.reason"]
    assert _champion(client) == first["version"]
    # With the off-policy check too: the same model's interval holds the champion's estimate.
    args = ["--workspace", str(ws.root), "--require-approval", "--min-gain", "-1", "--offpolicy"]
    pending = CliRunner().invoke(promote_command, args)
    assert pending.exit_code == 4, pending.output
    tags = client.get_model_version(model_registry.MODEL_NAME, second["version"]).tags
    assert tags["promotion.offpolicy"].startswith("off-policy dr: challenger ")
    assert tags["promotion.offpolicy"] in tags["promotion.reason"]
    assert _champion(client) == first["version"]
    result = CliRunner().invoke(
        promote_command, ["--workspace", str(ws.root), "--approve", second["version"]]
    )
    assert result.exit_code == 0, result.output
    assert _champion(client) == second["version"]
    again = CliRunner().invoke(
        promote_command, ["--workspace", str(ws.root), "--approve", second["version"]]
    )
    assert again.exit_code == 1
    assert again.output.count("\n") == 1 and "no pending promotion" in again.output


def test_expired_approval_is_refused_and_tagged(trained: tuple[Workspace, dict]) -> None:
    ws, _ = trained
    third = run_training_pipeline(ws.root, QUICK, promote=False, progress=False)
    registry.promote(ws, require_approval=True, min_gain=-1.0)
    time.sleep(0.1)
    with pytest.raises(registry.PromotionError, match="expired"):
        registry.approve(ws, third["version"], ttl_hours=1e-6)
    client = MlflowClient(model_registry.tracking_uri(ws))
    tags = client.get_model_version(model_registry.MODEL_NAME, third["version"]).tags
    assert tags["promotion.decision"] == "expired"


def test_commands_fail_in_one_line_without_a_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(evaluate_command, ["--workspace", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Traceback" not in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlflow_server(backend: str, artifacts: Path) -> Iterator[str]:
    port = _free_port()
    log = artifacts.parent / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--default-artifact-root",
            artifacts.as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not answer within 90 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _train_against(url: str, tiny: Workspace, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    ws = _copy(tiny, root)
    summary = run_training_pipeline(ws.root, QUICK, progress=False)
    api = f"{url}/api/2.0/mlflow"
    run = requests.get(f"{api}/runs/get", params={"run_id": summary["run_id"]}, timeout=10).json()
    assert run["run"]["info"]["status"] == "FINISHED"
    metrics = {m["key"] for m in run["run"]["data"]["metrics"]}
    assert "oracle_lift_share_at_50" in metrics
    model = requests.get(
        f"{api}/registered-models/get", params={"name": model_registry.MODEL_NAME}, timeout=10
    ).json()["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    assert str(aliases["challenger"]) == summary["version"]
    assert "champion" in aliases
    assert not (ws.data / "mlflow").exists()  # nothing written to the local store
    assert model_registry.load_ranker(ws, "challenger").actions


def test_mlflow_server_postgres_rest_api(
    postgres_service: None,
    tiny_workspace: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The production backend: an MLflow server on the local PostgreSQL ``test`` database.

    Training over the REST API is tested on this backend only; ``mlflow server`` on
    SQLite is what tests/e2e/test_mlflow_ui.py opens in the browser.
    """
    del postgres_service
    backend = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    monkeypatch.setattr(model_registry, "MODEL_NAME", f"feed-ranker-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(registry, "EXPERIMENT", f"feed-ranker-{uuid.uuid4().hex[:8]}")
    for url in _mlflow_server(backend, tmp_path / "artifacts"):
        _train_against(url, tiny_workspace, tmp_path / "ws", monkeypatch)


def test_replay_compares_policies_and_logs_to_the_model_run(
    trained: tuple[Workspace, dict],
) -> None:
    ws, _ = trained
    done = CliRunner().invoke(
        evaluate_command, ["replay", "--workspace", str(ws.root), "--draws", "40"]
    )
    assert done.exit_code == 0, done.output
    table = pd.read_csv(ws.data / "replay" / "replay.csv").set_index("policy")
    assert list(table.index) == ["chrono", "model", "model+explore", "oracle"]
    assert table.loc["chrono", "minus_chrono"] == 0.0
    assert (table.ci_low <= table.minus_chrono).all() and (
        table.minus_chrono <= table.ci_high
    ).all()
    assert (
        table.loc["oracle", "weighted_engagement_per_user"]
        > table.loc["chrono", "weighted_engagement_per_user"]
    )
    assert (table.users == table.users.iloc[0]).all()  # every policy replays the same users
    result = json.loads(done.output.strip().splitlines()[-1].removeprefix("RESULT "))
    assert set(result) == {
        "model_minus_chrono",
        "model_minus_chrono_ci_low",
        "model_minus_chrono_ci_high",
        "oracle_minus_model",
    }
    client = model_registry.connect(ws)
    # Other tests of this module may have moved the champion: the replay goes to its run.
    run_id = client.get_model_version_by_alias(
        model_registry.MODEL_NAME, model_registry.CHAMPION
    ).run_id
    logged = {a.path for a in client.list_artifacts(run_id, "replay")}
    assert logged == {"replay/replay.csv", "replay/replay.png"}
    assert "replay_model_minus_chrono" in client.get_run(run_id).data.metrics


def test_offpolicy_estimates_candidates_and_logs_to_the_model_run(
    trained: tuple[Workspace, dict], tmp_path: Path
) -> None:
    ws, _ = trained
    weights = tmp_path / "replies_first.yaml"
    spec = yaml.safe_load((REPO_ROOT / "core" / "actions.yaml").read_text())
    spec["actions"]["reply"]["weight"] = 50.0
    weights.write_text(yaml.safe_dump(spec))
    args = ["offpolicy", "--workspace", str(ws.root), "--limit", "2", "--days", "2"]
    args += ["--mc-draws", "100", "--candidate", "champion", "--candidate", "chrono"]
    done = CliRunner().invoke(evaluate_command, [*args, "--candidate", str(weights)])
    assert done.exit_code == 0, done.output
    table = pd.read_csv(ws.data / "offpolicy" / "offpolicy.csv")
    assert sorted(set(table.policy)) == ["champion", "chrono", "weights:replies_first"]
    assert set(table.estimator) == {"ips", "snips", "dr"}
    assert ((table.ci_low <= table.estimate) & (table.estimate <= table.ci_high)).all()
    result = json.loads(done.output.strip().splitlines()[-1].removeprefix("RESULT "))
    assert result["ope_policies"] == 3 and 0 <= result["ope_ci_covers_truth"] <= 3
    assert set(result["chrono"]) == {"ope_estimate", "ope_ci_low", "ope_ci_high", "true_value"}
    client = model_registry.connect(ws)
    run_id = client.get_model_version_by_alias(
        model_registry.MODEL_NAME, model_registry.CHAMPION
    ).run_id
    logged = {a.path for a in client.list_artifacts(run_id, "offpolicy")}
    assert logged == {"offpolicy/offpolicy.csv", "offpolicy/offpolicy.png"}
    assert "offpolicy_ope_ci_covers_truth" in client.get_run(run_id).data.metrics

    bad = tmp_path / "bad.yaml"
    bad.write_text("long_dwell_seconds: 10\nactions:\n  like: {weight: 1, description: x}\n")
    refused = CliRunner().invoke(evaluate_command, [*args, "--candidate", str(bad)])
    assert refused.exit_code == 1 and "bad.yaml" in refused.output
    assert "Traceback" not in refused.output


def test_drift_monitor_compares_model_scores(
    trained: tuple[Workspace, dict], tmp_path: Path
) -> None:
    from feedrank.commands.monitor import monitor  # pylint: disable=import-outside-toplevel

    ws, _ = trained
    dataset = training_set_path(ws)
    settings = tmp_path / "drift.yaml"
    settings.write_text("min_users: 250\n")  # the tiny world has 300 users
    args = ["drift", "--workspace", str(ws.root), "--current", str(dataset)]
    done = CliRunner().invoke(monitor, [*args, "--model", "champion", "--config", str(settings)])
    assert done.exit_code == 0, done.output
    assert "model_score 0.0000" in " ".join(done.output.split())
