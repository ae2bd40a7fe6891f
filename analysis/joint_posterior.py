"""The best scorer of the history: every hidden term fitted jointly, with the simulator's equations.

A scorer that knows how the world was generated (the truth's logit, its
effect sizes, the priors of every hidden term, how follows are drawn) and
nothing else: it sees only what a model sees, the impressions and labels
before the test day, the follow graph and the tweets' topics. It fits every
hidden term by maximum a posteriori on that history, all at once:

- each user's interests, a softmax over topics, under the Dirichlet
  prior (in softmax coordinates) and the follow graph's likelihood: half of
  the follows pick a topic by interest (the world config's share), the
  rest follow popularity alone (taken as the followees' overall topic share);
- each user's propensity per action, N(0, PROPENSITY_SD^2);
- each author's quality, N(0, 1);
- each seen pair's affinity noise, N(0, 1);
- each author's toxicity (``TOXIC_SHARE`` of authors), summed out exactly per author
  rather than fitted.

Authors' topic mixes are the posterior means of their tweets' topics under
their Dirichlet prior. Test rows are scored with the estimates plugged
in (unseen pairs get no noise) and the toxicity's posterior mixed over. A
plug-in MAP is not the full posterior predictive, so a model could in
principle do a little better; it is the figure to read a model's lift
against, where the partial oracles of :mod:`analysis.model_ceiling` still
know the interest, quality and toxicity exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core import tables
from core.actions import ActionSet
from core.workspace import Workspace
from simulation.truth import (
    _DEFAULT_EFFECT,  # pylint: disable=protected-access
    _EFFECTS,  # pylint: disable=protected-access
    _MEDIA,  # pylint: disable=protected-access
    AUTHOR_TOPIC_CONCENTRATION,
    INTEREST_CONCENTRATION,
    PAIR_NOISE_SD,
    PROPENSITY_SD,
    TOXIC_SHARE,
    position_bias,
)
from simulation.world import load_world_config

STEPS = 100
"""Adam steps: on the demo world the log posterior moved by 1e-5 of itself from step 100 to 300."""


@dataclass
class Rows:
    """The columns the truth's logit reads, as tensors."""

    users: torch.Tensor
    authors: torch.Tensor
    topics: torch.Tensor
    media: torch.Tensor
    age: torch.Tensor

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Rows:
        """From :func:`analysis.model_ceiling.load_impressions` rows."""
        return cls(
            users=torch.from_numpy(frame["user_id"].to_numpy(np.int64)),
            authors=torch.from_numpy(frame["author_id"].to_numpy(np.int64)),
            topics=torch.from_numpy(frame["topic"].to_numpy(np.int64)),
            media=torch.from_numpy(frame["media_type"].to_numpy(np.int64)),
            age=torch.from_numpy(np.clip(frame["age_days"].to_numpy(np.float64), 0.0, None)),
        )


def pair_keys(frame: pd.DataFrame) -> np.ndarray:
    """One int64 per (user, author) pair."""
    return frame["user_id"].to_numpy(np.int64) << 32 | frame["author_id"].to_numpy(np.int64)


@dataclass
class Observed:
    """The history's impressions: what the truth reads, the labels and the seen pairs."""

    rows: Rows
    labels: torch.Tensor  # (n, actions) float64
    bias: torch.Tensor  # (n, 1): the position bias the labels were sampled under
    codes: torch.Tensor  # (n,): each row's pair, an index into ``pairs``
    pairs: np.ndarray  # pair_keys of the seen pairs

    @classmethod
    def of(cls, history: pd.DataFrame, actions: ActionSet) -> Observed:
        """From :func:`analysis.model_ceiling.load_impressions` rows."""
        codes, pairs = pd.factorize(pair_keys(history))
        return cls(
            rows=Rows.of(history),
            labels=torch.from_numpy(history[list(actions.names)].to_numpy(np.float64)),
            bias=torch.from_numpy(position_bias(history["position"].to_numpy()))[:, None],
            codes=torch.from_numpy(codes),
            pairs=np.asarray(pairs),
        )


@dataclass
class Estimates:
    """The fitted hidden terms (toxicity is summed out, not fitted)."""

    interest_logits: torch.Tensor  # (users, topics): softmax gives the interests
    propensity: torch.Tensor  # (users, actions)
    quality: torch.Tensor  # (users,)
    noise: torch.Tensor  # (seen pairs,)

    @classmethod
    def zeros(cls, n_users: int, n_topics: int, n_actions: int, n_pairs: int) -> Estimates:
        """The priors' modes (uniform interests)."""
        return cls(
            *(
                torch.zeros(shape, dtype=torch.float64)
                for shape in ((n_users, n_topics), (n_users, n_actions), n_users, n_pairs)
            )
        )

    def tensors(self) -> list[torch.Tensor]:
        """Every fitted tensor."""
        return [self.interest_logits, self.propensity, self.quality, self.noise]


class JointPosterior:
    """Every hidden term of the world, as free parameters of one log posterior."""

    def __init__(
        self,
        ws: Workspace,
        actions: ActionSet,
        history: pd.DataFrame,
        cut: int,
        shape: tuple[int, int],
    ) -> None:
        """Set up from ``history`` and the tweets posted before ``cut`` (Unix µs).

        ``shape`` is (users, topics) of the world.
        """
        n_users, n_topics = shape
        self.effects = torch.tensor(
            [_EFFECTS.get(a, _DEFAULT_EFFECT) for a in actions.names], dtype=torch.float64
        )
        self.media_effects = torch.tensor(
            [_MEDIA.get(a, (0.0,) * 4) for a in actions.names], dtype=torch.float64
        ).T
        tweets = tables.read_table(tables.TWEETS, ws.world)
        posted = tweets["created_at"].cast("int64").to_numpy() < cut
        counts = np.zeros((n_users, n_topics))
        np.add.at(
            counts,
            (tweets["author_id"].to_numpy()[posted], tweets["topic"].to_numpy()[posted]),
            1.0,
        )
        mix = (counts + AUTHOR_TOPIC_CONCENTRATION) / (
            counts.sum(1, keepdims=True) + AUTHOR_TOPIC_CONCENTRATION * n_topics
        )
        self.mix = torch.from_numpy(mix)
        follows = tables.read_table(tables.FOLLOWS, ws.world)
        followed = np.zeros((n_users, n_topics))
        np.add.at(followed, follows["user_id"].to_numpy(), mix[follows["author_id"].to_numpy()])
        self.followed = torch.from_numpy(followed)
        self.topical = load_world_config(ws.world).topical_follow_share
        self.seen = Observed.of(history, actions)
        self.estimates = Estimates.zeros(
            n_users, n_topics, len(actions.names), len(self.seen.pairs)
        )

    def logits(
        self, rows: Rows, noise: torch.Tensor, toxicity: float | torch.Tensor
    ) -> torch.Tensor:
        """The truth's logit (n, actions) at the current estimates, for a given toxicity."""
        est, n_topics = self.estimates, self.mix.shape[1]
        theta = torch.softmax(est.interest_logits, 1)
        interest = torch.log1p(theta[rows.users, rows.topics] * n_topics) - 0.7
        shared = (theta[rows.users] * self.mix[rows.authors]).sum(1)
        affinity = torch.log1p(shared * n_topics) - 0.7 + PAIR_NOISE_SD * noise
        e = self.effects
        return (
            e[:, 0]
            + e[:, 1] * interest[:, None]
            + e[:, 2] * affinity[:, None]
            + e[:, 3] * est.quality[rows.authors][:, None]
            + e[:, 4] * rows.age[:, None]
            + e[:, 5] * toxicity
            + self.media_effects[rows.media]
            + est.propensity[rows.users]
        )

    def author_log_likelihoods(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per author, the history's log likelihood if not toxic and if toxic."""
        seen, out = self.seen, []
        for toxicity in (0.0, 1.0):
            s = torch.sigmoid(self.logits(seen.rows, self.estimates.noise[seen.codes], toxicity))
            q = (seen.bias * s).clamp(1e-12, 1 - 1e-12)
            per_row = (seen.labels * torch.log(q) + (1 - seen.labels) * torch.log1p(-q)).sum(1)
            authors = torch.zeros_like(self.estimates.quality)
            out.append(authors.index_add(0, seen.rows.authors, per_row))
        return out[0], out[1]

    def log_posterior(self) -> torch.Tensor:
        """Log posterior of the estimates, toxicity summed out (up to a constant)."""
        clean, toxic = self.author_log_likelihoods()
        likelihood = torch.logaddexp(
            clean + np.log(1 - TOXIC_SHARE), toxic + np.log(TOXIC_SHARE)
        ).sum()
        est = self.estimates
        theta = torch.softmax(est.interest_logits, 1)
        popular = self.followed.sum(0) / self.followed.sum()  # the followees' topic share
        follows = (
            self.followed * torch.log(self.topical * theta + (1 - self.topical) * popular)
        ).sum()
        priors = (
            INTEREST_CONCENTRATION * torch.log(theta).sum()
            - (est.propensity**2).sum() / (2 * PROPENSITY_SD**2)
            - (est.quality**2).sum() / 2
            - (est.noise**2).sum() / 2
        )
        return likelihood + follows + priors

    def fit(self, steps: int = STEPS, lr: float = 0.05) -> float:
        """Maximise the log posterior with Adam; returns its final value."""
        params = self.estimates.tensors()
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = -self.log_posterior()
            loss.backward()
            optimizer.step()
        for p in params:
            p.requires_grad_(False)
        return -loss.item()

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """True-probability estimates (n, actions) of ``frame``'s rows, toxicity mixed over."""
        with torch.no_grad():
            clean, toxic = self.author_log_likelihoods()
            p_toxic = torch.sigmoid(toxic - clean + np.log(TOXIC_SHARE) - np.log(1 - TOXIC_SHARE))
            rows = Rows.of(frame)
            seen = torch.from_numpy(pd.Index(self.seen.pairs).get_indexer(pair_keys(frame)))
            noise = torch.where(seen >= 0, self.estimates.noise[seen.clamp(min=0)], 0.0)
            share = p_toxic[rows.authors][:, None]
            probs = share * torch.sigmoid(self.logits(rows, noise, 1.0)) + (
                1 - share
            ) * torch.sigmoid(self.logits(rows, noise, 0.0))
        return probs.numpy()


def estimate_jointly(
    ws: Workspace,
    actions: ActionSet,
    history: pd.DataFrame,
    rows: pd.DataFrame,
    shape: tuple[int, int],
    steps: int = STEPS,
) -> tuple[np.ndarray, dict[str, float]]:
    """Fit on ``history``, score ``rows`` (all later); returns the scores and the fit's figures.

    ``shape`` is (users, topics) of the world.
    """
    start = time.perf_counter()
    posterior = JointPosterior(ws, actions, history, int(rows["when"].min()), shape)
    log_posterior = posterior.fit(steps)
    return posterior.predict(rows), {
        "joint_log_posterior": log_posterior,
        "joint_steps": steps,
        "joint_seconds": time.perf_counter() - start,
    }
