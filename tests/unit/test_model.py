"""Model tests: overfit one batch, calibration after down-weighting, behavioural directions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from core.actions import load_actions
from core.feast_store import training_set_path
from core.model import ModelConfig, Ranker, RankerNet
from core.preprocessing import Preprocessor
from core.workspace import Workspace
from training.train import TrainConfig, TrainResult, train, train_epoch, weighted_bce

pytestmark = pytest.mark.unit

FAST = TrainConfig(max_epochs=6, batch_size=512, learning_rate=5e-3, ensemble=1)


def _net(width: int, heads: int, rates: list[float] | None = None, arch: str = "shared_bottom"):
    return RankerNet(width, [5], heads, ModelConfig(architecture=arch), rates)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["shared_bottom", "mmoe"])
def test_overfits_one_batch(arch: str) -> None:
    torch.manual_seed(0)
    numeric, cats = torch.randn(64, 8), torch.randint(0, 5, (64, 1))
    labels = (torch.rand(64, 6) < 0.3).float()
    net = _net(8, 6, arch=arch)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(500):
        loss = weighted_bce(net(numeric, cats), labels, torch.ones(6))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.05 * 6
    accuracy = ((net(numeric, cats) > 0).float() == labels).float().mean()
    assert accuracy > 0.99


def test_downweighted_negatives_are_calibrated_after_correction() -> None:
    torch.manual_seed(0)
    n = 60_000
    x = torch.randn(n, 1)
    p_true = torch.sigmoid(-5.0 + 1.0 * x[:, 0])
    labels = (torch.rand(n) < p_true).float().unsqueeze(1)
    rate = 0.05
    net = RankerNet(1, [], 1, ModelConfig(bottom=(16,), tower=()), [rate])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0)
    cats = torch.zeros(n, 0, dtype=torch.long)
    for _ in range(400):
        loss = weighted_bce(net(x, cats), labels, torch.tensor([rate]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        raw = torch.sigmoid(net(x, cats)).mean().item()
        corrected = torch.sigmoid(net.calibrated_logits(x, cats)).mean().item()
    base = labels.mean().item()
    assert raw > 3 * base  # uncorrected: the down-weighted distribution
    assert corrected == pytest.approx(base, rel=0.15)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    columns = {"a": np.arange(10.0), "t": np.arange(10.0) % 3}
    pre = Preprocessor.fit(columns, ["a"], ["t"])
    net = RankerNet(pre.numeric_width, pre.cardinalities, 2, ModelConfig(), [1.0, 0.1])
    ranker = Ranker(pre, (net,), ("x", "y"), "svc")
    ranker.save(tmp_path / "m")
    again = Ranker.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(columns), ranker.predict_proba(columns))
    assert again.feature_service == "svc"


def test_ensemble_averages_its_members_and_round_trips(tmp_path: Path) -> None:
    columns = {"a": np.arange(10.0), "t": np.arange(10.0) % 3}
    pre = Preprocessor.fit(columns, ["a"], ["t"])
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(RankerNet(pre.numeric_width, pre.cardinalities, 2, ModelConfig(), [1.0, 0.1]))
    ranker = Ranker(pre, tuple(nets), ("x", "y"), "svc")
    alone = [Ranker(pre, (net,), ("x", "y"), "svc").predict_proba(columns) for net in nets]
    assert not np.allclose(alone[0], alone[1])
    np.testing.assert_allclose(ranker.predict_proba(columns), (alone[0] + alone[1]) / 2, rtol=1e-6)
    ranker.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").glob("weights*.pt")} == {"weights.pt", "weights-1.pt"}
    again = Ranker.load(tmp_path / "m")
    assert len(again.nets) == 2
    np.testing.assert_array_equal(again.predict_proba(columns), ranker.predict_proba(columns))


def test_a_model_saved_before_ensembles_loads_as_one_net(tmp_path: Path) -> None:
    columns = {"a": np.arange(10.0), "t": np.arange(10.0) % 3}
    pre = Preprocessor.fit(columns, ["a"], ["t"])
    net = RankerNet(pre.numeric_width, pre.cardinalities, 2, ModelConfig(), [1.0, 0.1])
    Ranker(pre, (net,), ("x", "y"), "svc").save(tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["members"]
    del meta["config"]["id_embedding_dim"]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    assert len(Ranker.load(tmp_path / "m").nets) == 1


@pytest.mark.slow
def test_ensemble_members_train_from_their_own_seeds(tiny_workspace: Workspace) -> None:
    result = train(
        training_set_path(tiny_workspace),
        FAST.model_copy(update={"ensemble": 2, "max_epochs": 2}),
        progress=False,
    )
    nets = result.ranker.nets
    assert len(nets) == 2 and len(result.best_epochs) == 2
    assert not torch.equal(nets[0].towers.weights[0], nets[1].towers.weights[0])
    assert [row["member"] for row in result.history] == [0, 0, 1, 1]
    assert [row["step"] for row in result.history] == [1, 2, 3, 4]


@pytest.mark.slow
def test_refit_trains_each_member_again_on_the_training_and_validation_days(
    tiny_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = FAST.model_copy(update={"ensemble": 2, "max_epochs": 2})
    validated = train(
        training_set_path(tiny_workspace),
        config.model_copy(update={"refit": False}),
        progress=False,
    )
    epoch_rows: list[int] = []
    starts: list[torch.Tensor] = []  # a weight of the net as each epoch begins

    def counted(*args: object, **kwargs: object) -> float:
        epoch_rows.append(len(args[3]))  # type: ignore[arg-type]  # the epoch's labels
        starts.append(args[0].towers.weights[0].detach().clone())  # type: ignore[attr-defined]
        return train_epoch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("training.train.train_epoch", counted)
    refitted = train(training_set_path(tiny_workspace), config, progress=False)
    # The validated epochs are the same run, then each member trains again for its best count.
    assert refitted.history == [
        {**row, "train_rows_per_s": new["train_rows_per_s"]}
        for row, new in zip(validated.history, refitted.history, strict=True)
    ]
    assert refitted.best_epochs == validated.best_epochs
    assert [row["refit_member"] for row in refitted.refit_history] == [
        m for m, best in enumerate(refitted.best_epochs) for _ in range(best)
    ]
    assert not validated.refit_history
    splits = refitted.splits
    train_rows, both = len(splits.train), len(splits.train) + len(splits.val)
    expected = []  # max_epochs 2 < patience: every member runs both validated epochs
    for best in refitted.best_epochs:
        expected += [train_rows] * config.max_epochs + [both] * best
    assert epoch_rows == expected
    # Each member's refit starts from the weights its validated fit started from.
    first = 0
    for best in refitted.best_epochs:
        assert torch.equal(starts[first], starts[first + config.max_epochs])
        assert not torch.equal(starts[first], starts[first + config.max_epochs - 1])
        first += config.max_epochs + best
    for old, new in zip(validated.ranker.nets, refitted.ranker.nets, strict=True):
        assert not torch.equal(old.towers.weights[0], new.towers.weights[0])


@pytest.fixture(name="tiny_model", scope="module")
def fixture_tiny_model(tiny_workspace: Workspace) -> TrainResult:
    return train(training_set_path(tiny_workspace), FAST, progress=False)


def _mean_prob(result: TrainResult, feature: str, quantile: float, head: str) -> float:
    columns = dict(result.splits.train.columns)
    value = np.nanquantile(columns[feature], quantile)
    columns[feature] = np.full(len(result.splits.train), value)
    probs = result.ranker.predict_proba(columns)
    return float(probs[:, result.ranker.actions.index(head)].mean())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("feature", "head"),
    [("ua_positive_rate", "like"), ("author_hide_rate_7d", "hide")],
)
def test_more_of_a_feature_raises_its_action(
    tiny_model: TrainResult, feature: str, head: str
) -> None:
    assert _mean_prob(tiny_model, feature, 0.95, head) > _mean_prob(tiny_model, feature, 0.05, head)


@pytest.mark.slow
def test_author_report_rate_raises_p_report(tiny_workspace: Workspace, tmp_path: Path) -> None:
    """The tiny world has a handful of reports; relabel them from a known rule to test direction.

    ``report`` is drawn with a logit rising in the author's report rate, so a
    pipeline that lost or flipped the feature (preprocessing, down-weighting
    correction) fails.
    """
    table = pq.read_table(training_set_path(tiny_workspace))
    rate = table["author_report_rate_7d"].to_numpy(zero_copy_only=False).astype(float)
    z = np.nan_to_num((np.log1p(rate) - np.nanmean(np.log1p(rate))) / np.nanstd(np.log1p(rate)))
    rng = np.random.default_rng(0)
    report = rng.random(len(z)) < 1 / (1 + np.exp(-(-4.0 + 1.5 * z)))
    column = table.schema.get_field_index("report")
    table = table.set_column(column, "report", pa.array(report))
    path = tmp_path / "training_set.parquet"
    pq.write_table(table, path)
    result = train(path, FAST, load_actions(), progress=False)
    high = _mean_prob(result, "author_report_rate_7d", 0.95, "report")
    low = _mean_prob(result, "author_report_rate_7d", 0.05, "report")
    assert high > 1.1 * low


@pytest.mark.slow
def test_training_is_deterministic(tiny_workspace: Workspace, tiny_model: TrainResult) -> None:
    again = train(training_set_path(tiny_workspace), FAST, progress=False)
    assert again.weights_sha256 == tiny_model.weights_sha256
    assert again.best_epochs == tiny_model.best_epochs
