"""A FeatureService's features never change: registered models read them by the service's name."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

from core.actions import load_actions
from core.workspace import REPO_ROOT

pytestmark = pytest.mark.unit

PINNED = {
    "ranker_v1": "7c720c8c0f83992c0338572c959dc31c430b044d82568900e761bf367990faeb",
    "ranker_v2": "19e85fdb02e31948ec65f85ed515b2d8c0df5ec100e36a0f5e8b31944c009813",
    "ranker_v3": "4fb51ced0b199d86556f0ee23dbd177bb8b418aa3b4ee24cef167abc3e27c8a8",
    "ranker_v4": "89fc791fb1dab294ef0a5d674cf538767a8f7d44c8cf0a7759e8cb5c6f1660da",
}
"""sha256 of each service's sorted ``view:feature`` names. A change here means models
registered on the service would read other features: add a new service instead."""


def _services(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    monkeypatch.syspath_prepend(str(Path(REPO_ROOT) / "feature_repo"))
    module = importlib.import_module("feature_services")
    return {
        name: sorted(
            f"{projection.name}:{feature.name}"
            for projection in getattr(module, name).feature_view_projections
            for feature in projection.features
        )
        for name in PINNED
    }


def _digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def test_every_service_reads_the_features_it_was_published_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, names in _services(monkeypatch).items():
        assert _digest(names) == PINNED[name], f"{name}'s features changed: {names}"


def test_v4_is_v3_with_the_all_history_counts_and_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _services(monkeypatch)
    added = set(services["ranker_v4"]) - set(services["ranker_v3"])
    actions = load_actions().names
    assert added == {
        f"{view}_stats:{view}_{name}"
        for view in ("user", "author")
        for name in ("impressions_all", *(f"{a}_rate_all" for a in actions))
    }
    assert set(services["ranker_v3"]) < set(services["ranker_v4"])
    for old in ("ranker_v1", "ranker_v2", "ranker_v3"):
        assert not [n for n in services[old] if n.endswith("_all")]
