"""Training throughput: the vectorised loop against a per-row Dataset + DataLoader.

Both paths train the same network with the same loss, optimiser, batch size,
precision (``TrainConfig.precision`` as ``feedrank train`` resolves it) and
data (the training days of a workspace's training set) in one run, so the
ratio is measured under the same machine load. The naive path is what a
tutorial writes: a ``Dataset`` whose ``__getitem__`` returns one row's
tensors, collated by a ``DataLoader``. The vectorised loop is also timed in
float32, so the share of the gain that bfloat16 brings is visible.

    python benchmarks/train_throughput.py --workspace /tmp/wsd --rows 200000

Ends with ``RESULT {json}``: train_rows_per_s, naive_rows_per_s, train_speedup,
precision, train_rows_per_s_float32.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch
from torch.utils.data import DataLoader, Dataset

from core.actions import load_actions
from core.feast_store import training_set_path
from core.model import RankerNet, negative_rates
from core.preprocessing import Batch, Preprocessor
from core.workspace import REPO_ROOT, Workspace
from training.dataset import load_splits
from training.train import (
    Dtype,
    TrainConfig,
    make_optimizer,
    resolve_precision,
    train_epoch,
    weighted_bce,
)


class RowDataset(Dataset):
    """One row per ``__getitem__``: the naive baseline."""

    def __init__(self, inputs: Batch, labels: torch.Tensor) -> None:
        self.inputs = inputs
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.inputs.numeric[i], self.inputs.categorical[i], self.labels[i]


def _naive_epoch(
    net: RankerNet,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    neg_weight: torch.Tensor,
    precision: Dtype,
) -> None:
    net.train()
    for numeric, categorical, labels in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            logits = net(numeric, categorical)
        loss = weighted_bce(logits.float(), labels, neg_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@click.command()
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT,
    show_default="the repository root",
    help="Workspace whose training set to read.",
)
@click.option(
    "--rows",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Training rows used (the first N of the training days).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Epochs timed per path (the best epoch of each is reported).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Rows per step, both paths.",
)
def main(workspace: Path, rows: int, epochs: int, batch_size: int) -> None:
    """Print rows/s of both training loops and their ratio."""
    config = TrainConfig(batch_size=batch_size)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    actions = load_actions()
    ws = Workspace(workspace)
    splits = load_splits(training_set_path(ws), config, actions)
    columns = {name: values[:rows] for name, values in splits.train.columns.items()}
    labels = torch.from_numpy(splits.train.labels[:rows])
    numeric = [f for f in splits.features if f not in config.exclude + config.categorical]
    pre = Preprocessor.fit(columns, numeric, list(config.categorical), config.clamp)
    inputs = pre.transform(columns)
    rates = negative_rates(labels.mean(dim=0).tolist(), config.target_rate)
    neg_weight = torch.tensor(rates)

    def fresh() -> tuple[RankerNet, torch.optim.Optimizer]:
        net = RankerNet(
            pre.numeric_width, pre.cardinalities, len(actions.names), config.model, rates
        )
        return net, make_optimizer(net.parameters(), config)

    precision = resolve_precision(config.precision)

    def vectorised(dtype: Dtype) -> list[float]:
        net, opt = fresh()
        generator = torch.Generator().manual_seed(config.seed)
        rates = []
        for _ in range(epochs):
            start = time.perf_counter()
            train_epoch(
                net, opt, inputs, labels, neg_weight, batch_size, generator, precision=dtype
            )
            rates.append(len(labels) / (time.perf_counter() - start))
        return rates

    fast = vectorised(precision)
    fast_float32 = vectorised("float32") if precision != "float32" else fast
    net, opt = fresh()
    loader = DataLoader(
        RowDataset(inputs, labels),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    naive = []
    for _ in range(epochs):
        start = time.perf_counter()
        _naive_epoch(net, opt, loader, neg_weight, precision)
        naive.append(len(labels) / (time.perf_counter() - start))
    result = {
        "rows": len(labels),
        "batch_size": batch_size,
        "train_rows_per_s": round(max(fast)),
        "naive_rows_per_s": round(max(naive)),
        "train_speedup": round(max(fast) / max(naive), 2),
        "precision": precision,
        "train_rows_per_s_float32": round(max(fast_float32)),
    }
    click.echo(f"vectorised, {precision}: {result['train_rows_per_s']:,} rows/s per epoch")
    click.echo(f"vectorised, float32: {result['train_rows_per_s_float32']:,} rows/s per epoch")
    click.echo(
        f"naive Dataset + DataLoader, {precision}: {result['naive_rows_per_s']:,} rows/s per epoch"
    )
    click.echo("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
