"""A new workspace folder gets the repository's feature repo; an existing one keeps its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.workspace import REPO_ROOT, Workspace

pytestmark = pytest.mark.unit


def test_a_new_folder_gets_a_copy_of_the_feature_repo(tmp_path: Path) -> None:
    ws = Workspace.new(tmp_path / "long")
    assert (ws.repo / "feature_store.yaml").read_bytes() == (
        REPO_ROOT / "feature_repo" / "feature_store.yaml"
    ).read_bytes()
    assert not list(ws.repo.rglob("__pycache__"))


def test_a_workspace_with_a_feature_repo_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "feature_repo").mkdir()
    (tmp_path / "feature_repo" / "feature_store.yaml").write_text("project: mine\n")
    ws = Workspace.new(tmp_path)
    assert (ws.repo / "feature_store.yaml").read_text() == "project: mine\n"
    assert [p.name for p in ws.repo.iterdir()] == ["feature_store.yaml"]
