"""The Bento carries the same packages the project declares, and the service it names exists."""

import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_bento_packages_are_the_project_dependencies() -> None:
    bento = yaml.safe_load((ROOT / "serving" / "bentofile.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert bento["python"]["packages"] == project["dependencies"]


def test_bento_names_the_service_and_includes_its_code() -> None:
    bento = yaml.safe_load((ROOT / "serving" / "bentofile.yaml").read_text())
    module, _, name = bento["service"].partition(":")
    assert (ROOT / Path(*module.split("."))).with_suffix(".py").exists()
    assert f"class {name}" in (ROOT / "serving" / "service.py").read_text()
    for package in ("core", "feedrank", "features", "training", "serving", "metrics", "simulation"):
        assert f"{package}/**/*.py" in bento["include"]
    assert "core/*.yaml" in bento["include"]  # the actions and their weights
    assert bento["models"] == ["feed-ranker:latest"]
