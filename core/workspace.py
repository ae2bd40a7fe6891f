"""Where one pipeline's files live.

A workspace is a folder holding ``feature_repo/`` (the declarative Feast repo)
and ``data/`` (what the stages write). The default is the repository root;
``feedrank demo`` and the tests start new ones with a copy of its feature repo.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The source tree: the default workspace, and the git commit a training run records."""

Profile = Literal["embedded", "production", "cluster"]
"""The Feast profile a workspace's store opens in: SQLite and files; Redis and a SQL registry;
or those two with Ray for the offline path (``feature_repo/feature_store.*.yaml``)."""


@dataclass(frozen=True)
class Workspace:
    """Where the feature repo and the data of one pipeline live."""

    root: Path

    @classmethod
    def new(cls, root: Path) -> Workspace:
        """The workspace at ``root``, given a copy of the repository's ``feature_repo/``
        if it has none (``feedrank demo --workspace DIR`` on a new folder)."""
        workspace = cls(root)
        if not workspace.repo.exists():
            shutil.copytree(
                REPO_ROOT / "feature_repo",
                workspace.repo,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        return workspace

    @property
    def repo(self) -> Path:
        """The Feast repo."""
        return self.root / "feature_repo"

    @property
    def data(self) -> Path:
        """Everything the stages write."""
        return self.root / "data"

    @property
    def world(self) -> Path:
        """The simulator's observable tables."""
        return self.data / "world"

    @property
    def truth(self) -> Path:
        """The simulator's hidden ground truth (evaluation only)."""
        return self.data / "truth"

    @property
    def features(self) -> Path:
        """Feature tables, the Feast offline store."""
        return self.data / "features"

    @property
    def datasets(self) -> Path:
        """Training sets."""
        return self.data / "datasets"
