"""The floor plan holds: import-linter's contracts pass on the tree and fail on a broken copy.

The contracts live in pyproject.toml (``[tool.importlinter]``) and
scripts/lint.sh runs them too; these tests show that they can fail, on a
copy of the packages with one upward import or one import loop added.
"""

from __future__ import annotations

import shutil
import subprocess  # nosec B404
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages: list[str] = config["tool"]["importlinter"]["root_packages"]
    return packages


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts its working directory first on sys.path, so a copy's
    # packages are the ones analysed, not the installed ones.
    return subprocess.run(  # nosec B603
        [LINT_IMPORTS, "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    for package in _packages():
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return copy


def test_the_tree_keeps_its_contracts() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "core" / "upward.py").write_text("import serving.service\n", encoding="utf-8")
    done = _lint(copy)
    assert done.returncode != 0
    assert "core.upward -> serving.service" in done.stdout


def test_a_stage_importing_a_sibling_breaks_the_layers(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "serving" / "sideways.py").write_text("import training.train\n", encoding="utf-8")
    done = _lint(copy)
    assert done.returncode != 0
    assert "serving.sideways -> training.train" in done.stdout


def test_an_import_loop_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "core" / "loop_a.py").write_text("import core.loop_b\n", encoding="utf-8")
    (copy / "core" / "loop_b.py").write_text("import core.loop_a\n", encoding="utf-8")
    done = _lint(copy)
    assert done.returncode != 0
    assert "No import loops" in done.stdout
    assert "BROKEN" in done.stdout
