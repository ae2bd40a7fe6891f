"""The multi-task engagement model: one calibrated probability per action.

Heads follow :func:`core.actions.load_actions` order, so a new action in
``actions.yaml`` gets a head without a code change. Two bottoms are offered:
a shared-bottom MLP with a tower per action, and a multi-gate mixture of
experts (MMoE, Ma et al. 2018), where each action mixes shared experts with its
own gate, which helps when tasks disagree (hide/report versus like).

Rare actions are trained with their negatives down-weighted by a rate ``r``
(per-task negative downsampling in expectation, without throwing rows away,
which a multi-task batch cannot do per task). The network then estimates
``q = p / (p + r (1 - p))``; the calibration correction of Twitter's recap
ranker, ``p = q r / (1 - q + q r)``, is the same as adding ``log r`` to the
logit, which :meth:`RankerNet.calibrated_logits` does.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from core.preprocessing import Batch, Preprocessor

WEIGHTS_FILE = "weights.pt"
PREPROCESSOR_FILE = "preprocessor.json"
MODEL_FILE = "model.json"


class ModelConfig(BaseModel):
    """Shape of the network."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["shared_bottom", "mmoe"] = Field(
        "shared_bottom", description="Shared MLP bottom, or a multi-gate mixture of experts."
    )
    bottom: tuple[int, ...] = Field((128, 64), description="Widths of the shared bottom MLP.")
    experts: int = Field(4, ge=1, description="MMoE: number of experts (each a bottom MLP).")
    tower: tuple[int, ...] = Field((32,), description="Widths of each action's tower.")
    embedding_dim: int = Field(16, ge=1, description="Width of each categorical embedding.")
    id_embedding_dim: int = Field(
        4, ge=1, description="Width of each hashed id embedding (a user's or author's own offsets)."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")


def _mlp(width_in: int, widths: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(width_in, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width_in = width
    return nn.Sequential(*layers)


class Towers(nn.Module):
    """One MLP per action, computed for all actions at once.

    Equivalent to a list of per-action ``nn.Sequential`` towers, but a layer is
    one matmul over a (heads, in, out) weight instead of ``heads`` small ones:
    the first layer on a shared input is a single wide matmul and the final
    1-wide layer an elementwise product and sum (``bmm`` on such thin shapes
    was the slowest op of a training step).
    """

    def __init__(self, n_heads: int, width_in: int, widths: Sequence[int]) -> None:
        super().__init__()
        sizes = [width_in, *widths, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            weight = torch.empty(n_heads, fan_in, fan_out).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.empty(n_heads, fan_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in) shared or (batch, heads, in) per-head inputs -> (batch, heads) logits."""
        for k in range(len(self.weights) - 1):
            heads, fan_in, fan_out = self.weights[k].shape
            if x.dim() == 2:
                wide = self.weights[k].permute(1, 0, 2).reshape(fan_in, heads * fan_out)
                x = (x @ wide).view(-1, heads, fan_out)
            else:
                x = torch.einsum("bhi,hio->bho", x, self.weights[k])
            x = torch.relu(x + self.biases[k])
        last = self.weights[-1].squeeze(2)  # (heads, in)
        out = x @ last.T if x.dim() == 2 else (x * last).sum(dim=2)
        return out + self.biases[-1].squeeze(1)


class RankerNet(nn.Module):
    """Embeddings + shared bottom (or MMoE) + one tower and logit per action."""

    log_negative_rate: torch.Tensor

    def __init__(
        self,
        numeric_width: int,
        cardinalities: Sequence[int],
        n_heads: int,
        config: ModelConfig,
        neg_rates: Sequence[float] | None = None,
        hashed: Sequence[bool] = (),
    ) -> None:
        super().__init__()
        self.config = config
        hashed = tuple(hashed) or (False,) * len(cardinalities)
        dims = [config.id_embedding_dim if h else config.embedding_dim for h in hashed]
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, dim) for card, dim in zip(cardinalities, dims, strict=True)
        )
        width_in = numeric_width + sum(dims)
        bottom_out = config.bottom[-1] if config.bottom else width_in
        n_experts = config.experts if config.architecture == "mmoe" else 1
        self.experts = nn.ModuleList(
            _mlp(width_in, config.bottom, config.dropout) for _ in range(n_experts)
        )
        self.gates = nn.ModuleList(
            nn.Linear(width_in, n_experts) for _ in range(n_heads if n_experts > 1 else 0)
        )
        self.towers = Towers(n_heads, bottom_out, config.tower)
        rates = torch.ones(n_heads) if neg_rates is None else torch.tensor(neg_rates)
        self.register_buffer("log_negative_rate", torch.log(rates.to(torch.float32)))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Logits of the training (negative-downsampled) distribution, shape (n, heads)."""
        parts = [numeric] + [emb(categorical[:, j]) for j, emb in enumerate(self.embeddings)]
        x = torch.cat(parts, dim=1)
        if not self.gates:
            return self.towers(self.experts[0](x))
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=1)
        mixes = torch.stack([torch.softmax(gate(x), dim=1) for gate in self.gates], dim=1)
        return self.towers(torch.einsum("bhe,bei->bhi", mixes, expert_out))

    def calibrated_logits(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Logits of the true distribution: the downsampling correction ``+ log r``."""
        return self(numeric, categorical) + self.log_negative_rate


def negative_rates(base_rates: Sequence[float], target_rate: float) -> list[float]:
    """Per-action weight of a negative: ``min(1, base_rate / target_rate)``.

    Actions rarer than ``target_rate`` see their negatives down-weighted until
    positives make up about ``target_rate`` of the weighted rows; common actions
    keep weight 1 (no correction).
    """
    return [min(1.0, max(rate, 1e-6) / target_rate) for rate in base_rates]


@dataclass
class Ranker:
    """A fitted model with everything it needs to score named features.

    ``nets`` are the members of a deep ensemble (Lakshminarayanan et al. 2017):
    the same network trained from different seeds, their calibrated
    probabilities averaged. On the demo world three members lift the share of
    ``joint_posterior``'s lift from 0.984 to 0.9885 (``docs/training.md``).
    """

    preprocessor: Preprocessor
    nets: tuple[RankerNet, ...]
    actions: tuple[str, ...]
    feature_service: str

    @torch.no_grad()
    def predict_batch(self, batch: Batch, chunk: int = 65_536) -> np.ndarray:
        """Calibrated probabilities (n, n_actions) for preprocessed inputs, members averaged."""
        if len(batch) == 0:
            return np.zeros((0, len(self.actions)), dtype=np.float32)
        parts = (
            [batch]  # serving's case: no slicing
            if len(batch) <= chunk
            else [batch.index(slice(lo, lo + chunk)) for lo in range(0, len(batch), chunk)]
        )
        for net in self.nets:
            net.eval()
        out = [
            torch.stack(
                [
                    torch.sigmoid(net.calibrated_logits(part.numeric, part.categorical))
                    for net in self.nets
                ]
            ).mean(dim=0)
            for part in parts
        ]
        return torch.cat(out).numpy()

    def predict_proba(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated P(action) per row, columns in ``self.actions`` order.

        Args:
            columns: feature name to values (e.g. a feature-store response); extra keys ignored.
        """
        return self.predict_batch(self.preprocessor.transform(columns))

    def save(self, folder: Path) -> None:
        """Write the model as JSON + a weights-only state dict (no pickled objects)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.preprocessor.save(folder / PREPROCESSOR_FILE)
        first = self.nets[0]
        meta = {
            "actions": list(self.actions),
            "feature_service": self.feature_service,
            "config": first.config.model_dump(mode="json"),
            "negative_rates": [math.exp(v) for v in first.log_negative_rate.tolist()],
            "members": len(self.nets),
        }
        (folder / MODEL_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        for member, net in enumerate(self.nets):
            torch.save(net.state_dict(), folder / weights_file(member))

    @classmethod
    def load(cls, folder: Path) -> Ranker:
        """Read what :meth:`save` wrote (``torch.load(weights_only=True)``)."""
        meta = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
        preprocessor = Preprocessor.load(folder / PREPROCESSOR_FILE)
        nets = []
        for member in range(meta.get("members", 1)):  # models saved before ensembles: one
            net = RankerNet(
                preprocessor.numeric_width,
                preprocessor.cardinalities,
                len(meta["actions"]),
                ModelConfig.model_validate(meta["config"]),
                meta["negative_rates"],
                preprocessor.hashed,
            )
            net.load_state_dict(torch.load(folder / weights_file(member), weights_only=True))
            nets.append(net.eval())
        return cls(preprocessor, tuple(nets), tuple(meta["actions"]), meta["feature_service"])


def weights_file(member: int) -> str:
    """The weights of ensemble member ``member`` (member 0 keeps the single model's name)."""
    return WEIGHTS_FILE if member == 0 else f"weights-{member}.pt"
