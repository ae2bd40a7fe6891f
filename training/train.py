"""Train the engagement model on the Feast training set, split by time.

The splits come from :func:`training.dataset.load_splits` (by day, never
random across time); this module is the loop that fits on the training days
and early-stops on the validation days. Each member's epoch count chosen, it is
trained again from the same initial weights on the training and validation
days together (``TrainConfig.refit``): the validation day is the freshest
history, and the test day's features rest on the most of it (on the demo,
0.9883 -> 0.9908 and 0.9907 -> 0.9927 of ``joint_posterior``'s lift share,
seeds 7 and 10; ``docs/training.md``).

The loop keeps the whole split in memory as two tensors and batches by
slicing a seeded ``randperm`` (no per-row ``Dataset`` on the hot path; see
``benchmarks/train_throughput.py``). The learning rate decays along a cosine
to zero at ``max_epochs``: the validation loss of the rare heads is noisy
from epoch to epoch at a constant rate, and the decay settled it (share of
the oracle's lift @50 on the demo 0.760 -> 0.776, mean of 3 seeds).

Under ``torchrun`` (or Ray Train) the same entry point runs
DistributedDataParallel on a training set read in shards: each rank reads
its share of the rows (:class:`training.dataset.Shard`), the preprocessing,
the label rates and the validation curves are computed from every shard's
statistics, gathered, so every rank fits the same transform and takes the same
early-stopping decision; every rank takes the same number of steps, gradients
are averaged, and all ranks hold the same weights after each step.

``position`` is deliberately not a feature. The logging policy shuffled
candidates, so position is independent of the tweet and the model learns the
position-averaged probability ``p(x) * E[bias]``: the same constant factor for
every candidate, so rankings are unchanged, and predictions are calibrated
against the labels of the same logged rows. A position feature would need a
made-up serving value and would let the model explain away engagement with
the slot instead of the content.
"""

from __future__ import annotations

import copy
import hashlib
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from core.actions import ActionSet, load_actions
from core.feast_store import FEATURE_SERVICE
from core.model import ModelConfig, Ranker, RankerNet, negative_rates
from core.preprocessing import Batch, Gather, Preprocessor, alone
from training.dataset import Shard, Splits, file_sha256, load_splits

RANK_SEED_STRIDE = 1_000_003
"""Rank ``r`` shuffles with seed ``seed + member + r * RANK_SEED_STRIDE`` (rank 0: the seed)."""
Dtype = Literal["float32", "bfloat16"]
"""The dtype a forward pass runs in."""
Precision = Literal["auto", "float32", "bfloat16"]
"""A dtype, or ``auto`` (see :func:`resolve_precision`)."""


class TrainConfig(BaseModel):
    """Everything that decides a training run (logged in full as run parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(7, description="Seed of initialisation and batch order.")
    max_epochs: int = Field(
        6, ge=1, description="Upper bound on epochs (the cosine schedule ends here)."
    )
    patience: int = Field(3, ge=1, description="Epochs without validation gain before stopping.")
    ensemble: int = Field(
        3,
        ge=1,
        description="Members of the deep ensemble: the network trained with seeds seed, "
        "seed+1, ...; the model averages their probabilities (1: a single network).",
    )
    refit: bool = Field(
        True,
        description="After early stopping, train each member again from its initial weights on "
        "the training and validation days, for its best epoch count: the model learns from the "
        "freshest day, which validation otherwise keeps out (the test days stay held out).",
    )
    batch_size: int = Field(2048, ge=1, description="Rows per optimiser step (over all ranks).")
    learning_rate: float = Field(2e-3, gt=0, description="AdamW peak learning rate.")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine",
        description="Learning rate over the run: constant, or cosine decay to 0 at max_epochs.",
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    val_days: int = Field(1, ge=1, description="Days before the test days used for validation.")
    test_days: int = Field(1, ge=1, description="Last days held out for testing.")
    target_rate: float = Field(
        0.02,
        gt=0,
        le=1,
        description="Actions rarer than this get negatives down-weighted to about this rate.",
    )
    precision: Precision = Field(
        "auto",
        description="Forward pass dtype: float32, bfloat16 autocast (weights, loss and "
        "optimiser stay float32), or auto: bfloat16 where the CPU computes it natively.",
    )
    threads: int = Field(
        1,
        ge=1,
        description="Intra-op CPU threads per process. One is fastest for this small MLP "
        "(measured 3x faster than two on a busy 2-core machine); scale out with torchrun ranks.",
    )
    clamp: float = Field(5.0, gt=0, description="Clamp of standardised numeric features.")
    categorical: tuple[str, ...] = Field(
        ("tweet_topic", "tweet_media_type"), description="Features embedded as categories."
    )
    hashed_ids: tuple[Literal["user_id", "author_id"], ...] = Field(
        (),
        description="Ids embedded through hash buckets, so the model learns each user's or "
        "author's own offsets. Off: on the demo world they overfit (docs/training.md).",
    )
    id_buckets: int = Field(
        16_384, ge=1, description="Hash buckets per hashed id (rows of its embedding)."
    )
    exclude: tuple[str, ...] = Field(
        ("tweet_created_s",),
        description="Features not fed to the model (raw timestamps: the age feature carries it).",
    )
    model: ModelConfig = Field(
        default_factory=lambda: ModelConfig.model_validate({}), description="Network shape."
    )


@dataclass
class TrainResult:  # pylint: disable=too-many-instance-attributes  # the run and each rank's share
    """A trained model and how it got there."""

    ranker: Ranker
    history: list[dict[str, float]]
    """The validated epochs, every member's, in order."""
    refit_history: list[dict[str, float]]
    """The refit epochs (``TrainConfig.refit``), every member's, in order."""
    best_epochs: list[int]
    seconds: float
    data_sha256: str
    splits: Splits
    weights_sha256: list[str] = field(default_factory=list)
    """Every rank's digest of the weights, in rank order."""
    shard_rows: list[int] = field(default_factory=list)
    """The training rows each rank read, in rank order."""
    peak_rss_mb: list[float] = field(default_factory=list)
    """Each rank's peak resident memory when training ended (MB), in rank order."""
    precision: Dtype = "float32"


def weighted_bce(
    logits: torch.Tensor, labels: torch.Tensor, neg_weight: torch.Tensor
) -> torch.Tensor:
    """Sum over heads of the negative-weighted mean binary cross-entropy.

    A negative of head ``a`` counts ``neg_weight[a]``; each head's loss is
    normalised by its total weight, so down-weighting acts as downsampling.
    """
    weights = labels + (1.0 - labels) * neg_weight
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return ((loss * weights).sum(dim=0) / weights.sum(dim=0)).sum()


def normalized_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-head log loss divided by the entropy of the head's base rate (lower is better).

    Used for early stopping because it weighs every head alike: the raw log
    loss of a 0.05 % action is tiny and would never move the sum.
    """
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = -(labels * np.log(p) + (1 - labels) * np.log1p(-p)).mean(axis=0)
    base = np.clip(labels.mean(axis=0), 1e-7, 1 - 1e-7)
    entropy = -(base * np.log(base) + (1 - base) * np.log1p(-base))
    return loss / entropy


def head_curves(probs: np.ndarray, labels: np.ndarray, actions: ActionSet) -> dict[str, float]:
    """Validation AUC and log loss per head: the epoch curves of the MLflow run."""
    out: dict[str, float] = {}
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    for j, name in enumerate(actions.names):
        y = labels[:, j]
        out[f"val_auc_{name}"] = (
            float(roc_auc_score(y, p[:, j])) if 0 < y.sum() < len(y) else float("nan")
        )
        out[f"val_log_loss_{name}"] = float(
            -np.mean(y * np.log(p[:, j]) + (1 - y) * np.log1p(-p[:, j]))
        )
    return out


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def weights_sha256(net: nn.Module) -> str:
    """A digest of the parameters' bytes: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _gatherer(world: int) -> Gather:
    """Every rank's value of an object, in rank order (one process: its own)."""
    if world == 1:
        return alone

    def gather(value: Any) -> list[Any]:
        values: list[Any] = [None] * world
        dist.all_gather_object(values, value)
        return values

    return gather


def label_rates(labels: np.ndarray, gather: Gather = alone) -> np.ndarray:
    """Each head's positive rate over every shard of the training split.

    The shards' label counts are summed exactly; the rate is float32, as numpy's
    ``labels.mean(axis=0)`` of the whole split gives it while its float32 sums
    are exact (fewer than 2**24 rows; beyond, this is the more exact of the two).
    """
    shards = gather((labels.sum(axis=0, dtype=np.float64), len(labels)))
    return (sum(s for s, _ in shards) / sum(n for _, n in shards)).astype(np.float32)


def resolve_precision(precision: Precision) -> Dtype:
    """``auto`` becomes bfloat16 on CPUs with native bfloat16 (AVX-512 BF16 or AMX), else float32.

    Measured here (AVX-512 BF16): 1.1-1.4x the rows/s of float32 at the same lift
    share (``benchmarks/train_throughput.py``; matmuls alone 2.5x); without native
    support bfloat16 would be emulated, so float32 is kept.
    """
    if precision != "auto":
        return precision
    # pylint: disable-next=protected-access  # torch's own CPU capability probes
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native else "float32"


def make_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the config's rate and decay, fused: one kernel updates every parameter
    (the update alone, 2026-12-02's machine: 0.45 ms a step one tensor at a time, 0.13 fused)."""
    return torch.optim.AdamW(
        params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Batch,
    labels: torch.Tensor,
    neg_weight: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    steps: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    precision: Dtype = "float32",
) -> float:
    """One pass over shuffled batches; returns the mean training loss.

    ``steps`` caps the batches: every rank of a distributed run takes the same
    count, so that each joins every gradient all-reduce (the shards differ by
    a row at most; the larger ones leave a few rows out of this epoch's draw).
    The rows are gathered once per epoch, so each batch is a contiguous slice
    (a gather per batch cost 11% of a step). ``precision="bfloat16"`` runs the
    forward under CPU autocast (matmuls in bfloat16, weights, loss and
    optimiser in float32).
    """
    model.train()
    rows = torch.randperm(len(labels), generator=generator)
    if steps is not None:
        rows = rows[: steps * batch_size]
    if rows.numel() == 0:
        return 0.0
    shuffled, shuffled_labels = inputs.index(rows), labels.index_select(0, rows)
    total, taken = 0.0, 0
    for lo in range(0, len(rows), batch_size):
        part = shuffled.index(slice(lo, lo + batch_size))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            logits = model(part.numeric, part.categorical)
        loss = weighted_bce(logits.float(), shuffled_labels[lo : lo + batch_size], neg_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        taken += 1
        if on_step:
            on_step(len(part), total / taken)
    return total / max(taken, 1)


@dataclass(frozen=True)
class _Rows:
    """What one rank trains on: its shard's inputs and labels, with every shard's row
    count (``rows``) and the batches every rank takes per epoch (``steps``)."""

    x: Batch
    y: torch.Tensor
    rows: int
    steps: int

    @classmethod
    def of(cls, x: Batch, y: np.ndarray, batch: int, gather: Gather) -> _Rows:
        """This rank's rows; the steps are the smallest shard's batch count."""
        shard_rows = gather(len(y))
        steps = min(-(-rows // batch) for rows in shard_rows)
        return cls(x, torch.from_numpy(y), sum(shard_rows), steps)


@dataclass(frozen=True)
class _Run:  # pylint: disable=too-many-instance-attributes  # one call's fixed inputs
    """What every ensemble member of one :func:`train` call trains and validates on.

    ``train`` is this rank's shard of the training days; ``val`` is this rank's
    inputs and every shard's labels, in rank order.
    """

    config: TrainConfig
    actions: ActionSet
    train: _Rows
    val: tuple[Batch, np.ndarray]
    neg_weight: torch.Tensor
    precision: Dtype
    rank: int
    world: int
    gather: Gather
    progress: bool
    on_epoch: Callable[[dict[str, float]], None] | None


class _Epochs:
    """The epochs of one member on one set of rows: its optimiser, schedule and batch order.

    The cosine schedule spans ``max_epochs`` of these rows, so a refit that
    stops at a member's best epoch ends at the learning rate that epoch ended at.
    """

    def __init__(self, run: _Run, net: RankerNet, member: int, data: _Rows, name: str) -> None:
        config = run.config
        self.run, self.data = run, data
        self.model: nn.Module = nn.parallel.DistributedDataParallel(net) if run.world > 1 else net
        self.optimizer = make_optimizer(self.model.parameters(), config)
        steps_per_epoch = data.rows // config.batch_size + 1
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, config.max_epochs * steps_per_epoch
            )
            if config.schedule == "cosine"
            else None
        )
        # Each rank its own order: drawn from one seed, the ranks would take the same
        # positions of their shards, and rows r and r + 1 of the file (mostly one
        # visit's impressions) would share every batch.
        self.generator = torch.Generator().manual_seed(
            config.seed + member + RANK_SEED_STRIDE * run.rank
        )
        member_label = f"member {member + 1}/{config.ensemble} " if config.ensemble > 1 else ""
        self.label = f"{name}{member_label}"

    def step(self, epoch: int, of: int) -> tuple[float, float]:
        """Train one epoch; returns its mean loss and its rows per second (every rank's)."""
        run = self.run
        progress_bar = tqdm(
            total=self.data.rows,
            desc=f"{self.label}epoch {epoch}/{of}",
            unit="row",
            unit_scale=True,
            leave=False,
            disable=not run.progress or run.rank != 0,
        )

        def on_step(rows: int, loss: float) -> None:
            progress_bar.update(rows * run.world)
            progress_bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        start = time.perf_counter()
        loss = train_epoch(
            self.model,
            self.optimizer,
            self.data.x,
            self.data.y,
            run.neg_weight,
            run.config.batch_size // run.world,
            self.generator,
            self.data.steps,
            on_step,
            self.scheduler,
            run.precision,
        )
        seconds = time.perf_counter() - start
        progress_bar.close()
        return loss, self.data.rows / seconds


def _fit_member(run: _Run, ranker: Ranker, member: int, history: list[dict[str, float]]) -> int:
    """Train one member (seed ``config.seed + member``), the one net of ``ranker``,
    early-stopped on validation.

    Appends its epochs to ``history`` (``step`` counts epochs over all members,
    the MLflow step) and leaves the net at its best epoch, which it returns.
    """
    config, actions, (net,) = run.config, run.actions, ranker.nets
    epochs = _Epochs(run, net, member, run.train, "")
    val_x, val_y = run.val
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(net.state_dict())
    for epoch in range(1, config.max_epochs + 1):
        train_loss, rows_per_s = epochs.step(epoch, config.max_epochs)
        val_probs = np.concatenate(run.gather(ranker.predict_batch(val_x)))
        val_nce = normalized_entropy(val_probs, val_y)
        history.append(
            {
                "member": member,
                "epoch": epoch,
                "step": len(history) + 1,
                "train_loss": train_loss,
                "val_loss": float(val_nce.mean()),
                **{f"val_nce_{a}": float(v) for a, v in zip(actions.names, val_nce, strict=True)},
                **head_curves(val_probs, val_y, actions),
                "train_rows_per_s": rows_per_s,
            }
        )
        if run.on_epoch is not None:
            run.on_epoch(history[-1])
        if history[-1]["val_loss"] < best_loss - 1e-5:
            best_loss, best_epoch = history[-1]["val_loss"], epoch
            best_state = copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    net.load_state_dict(best_state)
    return best_epoch


def _refit_member(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    run: _Run,
    rows: _Rows,
    net: RankerNet,
    member: int,
    epochs: int,
    history: list[dict[str, float]],
) -> None:
    """Train ``net`` (member ``member``'s initial weights) on ``rows`` for ``epochs``.

    Appends each epoch to ``history`` as ``refit_train_loss`` and
    ``refit_rows_per_s`` (``step`` counts the refit epochs over all members).
    """
    refit = _Epochs(run, net, member, rows, "refit ")
    for epoch in range(1, epochs + 1):
        loss, rows_per_s = refit.step(epoch, epochs)
        history.append(
            {
                "refit_member": member,
                "epoch": epoch,
                "step": len(history) + 1,
                "refit_train_loss": loss,
                "refit_rows_per_s": rows_per_s,
            }
        )
        if run.on_epoch is not None:
            run.on_epoch(history[-1])


def train(
    dataset: Path,
    config: TrainConfig | None = None,
    actions: ActionSet | None = None,
    progress: bool = True,
    feature_service: str = FEATURE_SERVICE,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fit preprocessing and the network on the training days, early-stopped on validation.

    Args:
        dataset: the training-set parquet written by :mod:`training.dataset`.
        config: the run's settings (default :class:`TrainConfig`).
        actions: the heads (default ``core/actions.yaml``).
        progress: show a tqdm bar with the live loss (rank 0 only).
        feature_service: recorded with the model so serving reads the same features.
        on_epoch: called with each epoch's row of the history as it finishes
            (the MLflow run logs it live).
    """
    config = config or TrainConfig()
    actions = actions or load_actions()
    start = time.perf_counter()
    rank, world = _distributed()
    gather = _gatherer(world)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    precision = resolve_precision(config.precision)
    splits = load_splits(dataset, config, actions, Shard(rank, world))
    numeric = [f for f in splits.features if f not in config.exclude + config.categorical]
    categorical = [f for f in config.categorical if f in splits.features]
    pre = Preprocessor.fit(
        splits.train.inputs,
        numeric,
        categorical,
        config.clamp,
        hashed={name: config.id_buckets for name in config.hashed_ids},
        gather=gather,
    )
    rates = negative_rates(label_rates(splits.train.labels, gather).tolist(), config.target_rate)
    shard_rows = gather(len(splits.train))
    batch = config.batch_size // world
    # The validation rows follow the training rows, so a refit on both reads one tensor.
    n_train = len(splits.train)
    inputs = Batch.concat(pre.transform(splits.train.inputs), pre.transform(splits.val.inputs))
    labels = np.concatenate([splits.train.labels, splits.val.labels])
    train_x, val_x = inputs.index(slice(0, n_train)), inputs.index(slice(n_train, None))
    run = _Run(
        config=config,
        actions=actions,
        train=_Rows.of(train_x, labels[:n_train], batch, gather),
        val=(val_x, np.concatenate(gather(splits.val.labels))),
        neg_weight=torch.tensor(rates, dtype=torch.float32),
        precision=precision,
        rank=rank,
        world=world,
        gather=gather,
        progress=progress,
        on_epoch=on_epoch,
    )
    refit = _Rows.of(inputs, labels, batch, gather) if config.refit else None
    nets: list[RankerNet] = []
    history: list[dict[str, float]] = []
    refit_history: list[dict[str, float]] = []
    best_epochs: list[int] = []
    for member in range(config.ensemble):
        torch.manual_seed(config.seed + member)
        net = RankerNet(
            pre.numeric_width,
            pre.cardinalities,
            len(actions.names),
            config.model,
            rates,
            pre.hashed,
        )
        initial = copy.deepcopy(net.state_dict())
        one_net = Ranker(pre, (net,), actions.names, feature_service)  # validates this member
        best_epochs.append(_fit_member(run, one_net, member, history))
        if refit is not None:
            net.load_state_dict(initial)
            _refit_member(run, refit, net, member, best_epochs[-1], refit_history)
        nets.append(net)
    return TrainResult(
        ranker=Ranker(pre, tuple(nets), actions.names, feature_service),
        history=history,
        refit_history=refit_history,
        best_epochs=best_epochs,
        seconds=time.perf_counter() - start,
        data_sha256=file_sha256(dataset),
        splits=splits,
        weights_sha256=gather(weights_sha256(nn.ModuleList(nets))),
        shard_rows=shard_rows,
        peak_rss_mb=gather(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)),
        precision=precision,
    )
