"""The MLflow UI in headless Chromium: what a user sees of a training (issue 20, item 7).

A tiny model is trained into a copy of the tiny workspace's own MLflow store
(SQLite and local artifacts, as ``feedrank train`` does), then ``mlflow
server`` is started on that store, as the README's ``mlflow ui`` command
does, and Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/test.sh``) opens the pages a user would:

- the experiment: its runs table lists the training run by name, with its
  training set, and not MLflow's GenAI overview (traces, "No data available");
- the run: the epoch curve of ``val_loss`` (a line with one point per epoch)
  and one per head (``val_nce_<action>``) under Model metrics, system metrics,
  and the logged plots (calibration, ROC, lift) under Artifacts, the lift
  chart shown as an image;
- the registered model: the version holding ``@champion``.

MLflow 3.17's UI ignores the experiment's ``mlflow.experimentKind`` tag: its
"GenAI / Model training" switch (remembered per browser, GenAI in a new one)
decides, and ``?workflowType=machine_learning`` sets it from the link
(mlflow/mlflow#24498). The docs give that link; the plain one is kept here as
a strict xfail, so an MLflow that honours the tag again says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess  # nosec B404  # starts mlflow server with fixed argv
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core import model_registry
from core.actions import load_actions
from core.feast_store import FEATURE_SERVICE
from core.workspace import Workspace
from load.harness import free_port
from training import registry
from training.pipeline import run_training_pipeline
from training.train import TrainConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 20_000
"""Each explicit wait: the UI fetches and renders within a few seconds here."""
MODEL_TRAINING = "workflowType=machine_learning"
"""The link parameter that opens MLflow 3.17's UI in its model-training view."""
GENAI_OVERVIEW = "No data available for the selected time range"
"""What MLflow's GenAI overview shows for an experiment without traces."""


@dataclass(frozen=True)
class Ui:
    """A running MLflow server on a store holding one training."""

    url: str
    experiment_id: str
    run_id: str
    run_name: str
    version: str
    epochs: int
    dataset: str
    """How the runs table names the training set: ``training_set (<digest>)``."""


def _start_server(store: str, folder: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = folder / "mlflow-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # nosec B603  # fixed argv
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                store,
                "--default-artifact-root",
                (folder / "server-artifacts").as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=folder,
            # The store is named on the command line; nothing of the test's own.
            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop_server ends its workers with it
        )
    return proc, f"http://127.0.0.1:{port}", log


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"mlflow server not ready after 90 s:\n{log.read_text()[-3000:]}")


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(name="ui", scope="module")
def fixture_ui(tiny_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """A tiny training in a workspace copy's own store, and ``mlflow server`` on that store."""
    folder = tmp_path_factory.mktemp("mlflow-ui")
    ws = Workspace(folder / "ws")
    shutil.copytree(
        tiny_workspace.root, ws.root, ignore=shutil.ignore_patterns("mlflow", "__pycache__")
    )
    store = f"sqlite:///{(ws.data / 'mlflow' / 'mlflow.db').resolve()}"
    with pytest.MonkeyPatch.context() as env:  # undoes what mlflow.set_tracking_uri exports
        env.setenv("MLFLOW_TRACKING_URI", store)
        env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # samples in a short run
        # The store and the experiment exist before the server opens the store; the
        # server starts while the model trains.
        registry.experiment_id(model_registry.connect(ws), ws)
        proc, url, log = _start_server(store, folder)
        try:
            summary = run_training_pipeline(
                ws.root, TrainConfig(max_epochs=3, batch_size=1024, refit=False), progress=False
            )
        except BaseException:
            _stop_server(proc)
            raise
    try:
        assert summary["promotion"] == "promoted", summary
        client = MlflowClient(store, store)
        run = client.get_run(summary["run_id"])
        champion = client.get_model_version_by_alias(model_registry.MODEL_NAME, "champion")
        _wait_ready(proc, url, log)
        yield Ui(
            url=url,
            experiment_id=run.info.experiment_id,
            run_id=run.info.run_id,
            run_name=run.info.run_name,
            version=str(champion.version),
            epochs=int(summary["epochs"]),
            dataset=f"training_set ({run.inputs.dataset_inputs[0].dataset.digest})",
        )
    finally:
        _stop_server(proc)


@pytest.fixture(name="browser", scope="module")
def fixture_browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; missing, a skip (a failure with FEEDRANK_REQUIRE_SERVICES)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (./scripts/test.sh installs Debian's chromium)"
        if os.environ.get("FEEDRANK_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture(name="tab", scope="module")
def fixture_tab(browser: Browser) -> Iterator[Page]:
    """One tab of a new browser profile for the module: the app loads once, then each
    test moves within it (as a user clicking through does)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture(name="page")
def fixture_page(tab: Page, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """The module's tab; ``failure.png`` in the test's tmp_path when the test fails."""
    failed_before = request.session.testsfailed
    yield tab
    if request.session.testsfailed > failed_before:  # counted before teardown runs
        with contextlib.suppress(Exception):
            tab.screenshot(path=str(tmp_path / "failure.png"), full_page=True)


def _open(page: Page, ui: Ui, route: str) -> None:
    separator = "&" if "?" in route else "?"
    page.goto(f"{ui.url}/#{route}{separator}{MODEL_TRAINING}")


def _expect_runs_table(page: Page, ui: Ui) -> None:
    expect(page.get_by_role("link", name=ui.run_name, exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/#/experiments/{ui.experiment_id}/runs\?"))
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_text(GENAI_OVERVIEW)).to_have_count(0)


def test_the_experiment_opens_on_its_runs_table(page: Page, ui: Ui) -> None:
    _open(page, ui, f"/experiments/{ui.experiment_id}")
    _expect_runs_table(page, ui)
    # The run's dataset input, by name and digest (the grid's name column is a row of its own).
    expect(page.get_by_role("grid").get_by_text(ui.dataset, exact=True)).to_be_visible()
    expect(page.get_by_text("1 matching run")).to_be_visible()


@pytest.mark.xfail(
    raises=AssertionError,
    strict=True,
    reason="MLflow 3.17's UI ignores mlflow.experimentKind: a new browser opens every "
    "experiment on the GenAI overview (mlflow/mlflow#24498)",
)
def test_the_plain_experiment_link_opens_on_its_runs_table(page: Page, ui: Ui) -> None:
    if page.url.startswith(ui.url):  # a browser that has not been told a workflow yet
        page.evaluate("localStorage.clear()")
    page.goto(f"{ui.url}/#/experiments/{ui.experiment_id}")
    landed = page.get_by_role("link", name=ui.run_name, exact=True).or_(
        page.get_by_text(GENAI_OVERVIEW).first
    )
    expect(landed).to_be_visible()
    assert page.get_by_role("link", name=ui.run_name, exact=True).is_visible(), page.url


def test_the_run_shows_epoch_curves_system_metrics_and_plots(page: Page, ui: Ui) -> None:
    _open(page, ui, f"/experiments/{ui.experiment_id}/runs/{ui.run_id}/model-metrics")
    expect(page.get_by_role("heading", name=ui.run_name, exact=True)).to_be_visible()
    assert re.fullmatch(rf"{FEATURE_SERVICE}-\d{{8}}-\d{{6}}", ui.run_name)  # not MLflow's random
    search = page.get_by_placeholder("Search metric charts")
    search.fill("val_loss")
    expect(page.get_by_role("heading", name="val_loss", exact=True)).to_be_visible()
    # A line over the epochs (a metric logged once is a bar chart): one point per epoch.
    chart = page.locator(".js-plotly-plot")
    expect(chart).to_have_count(1)
    expect(chart.locator(".scatterlayer .point")).to_have_count(ui.epochs)
    expect(chart).to_contain_text("Step")
    actions = load_actions().names
    search.fill("val_nce_")
    for action in actions:
        expect(page.get_by_role("heading", name=f"val_nce_{action}", exact=True)).to_be_visible()
    # Per-head validation AUC, live per epoch too (the most common head: never NaN).
    search.fill(f"val_auc_{actions[0]}")
    expect(page.get_by_role("heading", name=f"val_auc_{actions[0]}", exact=True)).to_be_visible()
    expect(page.locator(".js-plotly-plot .scatterlayer .point")).to_have_count(ui.epochs)

    page.get_by_role("tab", name="System metrics").click()
    expect(page.get_by_text("cpu_utilization_percentage", exact=True)).to_be_visible()

    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("plots", exact=True).click()
    # What training/evaluate.py draws: calibration per head, ROC per head with positives, lift.
    for plot in [*(f"calibration_{a}.png" for a in actions), "roc_like.png", "lift.png"]:
        expect(page.get_by_text(plot, exact=True)).to_be_visible()
    page.get_by_text("lift.png", exact=True).click()
    expect(page.get_by_text("plots/lift.png", exact=True)).to_be_visible()
    image = page.locator("img[src^='blob:']").first
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100


def test_the_registered_model_shows_the_champion_version(page: Page, ui: Ui) -> None:
    _open(page, ui, f"/models/{model_registry.MODEL_NAME}")
    expect(page.get_by_role("heading", name=model_registry.MODEL_NAME, exact=True)).to_be_visible()
    alias = page.get_by_text(re.compile(r"^@\s*champion$"))  # an alias tag, not a tag's text
    expect(alias).to_have_count(1)
    row = page.get_by_role("row").filter(has=alias)
    expect(row).to_contain_text(f"Version {ui.version}")
