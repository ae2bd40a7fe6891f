"""Drift monitoring: the world after its users changed interests is flagged, unshifted it is not."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from core.feast_store import training_set_path
from core.workspace import Workspace
from feedrank.commands.monitor import DRIFT_EXIT_CODES, monitor
from feedrank.pipeline import build_foundation
from metrics.drift import psi
from simulation.config import world_config
from tests.conftest import new_workspace

pytestmark = pytest.mark.integration


def _world(root: Path, **overrides: object) -> Workspace:
    ws = new_workspace(root)
    build_foundation(ws, world_config("tiny", **overrides), fill=False)
    return ws


def _drift(reference: Workspace, current: Workspace, settings: Path) -> tuple[int, str]:
    done = CliRunner().invoke(
        monitor,
        [
            "drift",
            "--workspace",
            str(reference.root),
            "--current",
            str(training_set_path(current)),
            "--config",
            str(settings),
        ],
    )
    return done.exit_code, done.output


def test_shifted_interests_drift_and_the_unshifted_world_does_not(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    same = _world(tmp_path / "same")
    shifted = _world(tmp_path / "shifted", interest_shift=0.8)
    settings = tmp_path / "drift.yaml"
    settings.write_text("min_users: 250\n")  # the tiny world has 300 users
    code, output = _drift(tiny_workspace, same, settings)
    assert code == DRIFT_EXIT_CODES["quiet"], output
    assert "no drift (" in output
    code, output = _drift(tiny_workspace, shifted, settings)
    assert code == DRIFT_EXIT_CODES["drift"], output
    alarm = output.strip().splitlines()[-1]
    assert alarm.startswith("drift: ")
    assert "user_like_rate_7d" in alarm  # users who lost interest engage less


def test_served_samples_are_read_and_bad_ones_named(
    tiny_workspace: Workspace, tmp_path: Path
) -> None:
    samples = tmp_path / "feature_samples"
    samples.mkdir()
    good = '{"request_us": 1, "user_id": 1, "rows": [{"user_like_rate_7d": 0.1}]}'
    (samples / "2026-01-11-1.jsonl").write_text(f"{good}\nnot json\n")
    done = CliRunner().invoke(
        monitor, ["drift", "--workspace", str(tiny_workspace.root), "--current", str(samples)]
    )
    assert done.exit_code == 1
    assert "2026-01-11-1.jsonl:2: not a feature-sample record" in done.output
    (samples / "2026-01-11-1.jsonl").write_text('{"rows": []}\n')
    done = CliRunner().invoke(monitor, ["drift", "--current", str(samples)])
    assert "2026-01-11-1.jsonl:1: feature-sample record without 'request_us'" in done.output


@pytest.mark.unit
def test_psi_is_zero_for_the_same_sample_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=20_000)
    assert psi(base, base) == pytest.approx(0.0, abs=1e-9)
    assert psi(base, rng.normal(size=20_000)) < 0.01
    assert psi(base, rng.normal(0.5, 1, size=20_000)) > 0.2
    half_missing = np.where(rng.random(20_000) < 0.5, np.nan, base)
    assert psi(base, half_missing) > 0.2
