"""The hidden ground truth: who likes what, and the true engagement probabilities.

Nothing a model reads comes from here directly. The latent state is saved apart
from the observable tables (``truth/``) so that evaluation can ask the oracle
"what was the true probability of each action for this user, tweet and time?"
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from core import tables
from core.actions import ActionSet

MEDIA_TYPES = ("text", "image", "video", "link")

# Hidden noise no feature can observe directly: a user's own bias per action
# and a persistent per-pair affinity. Features estimate both only from the
# user's history, so the larger they are, the further any model stays from
# the oracle however good it is.
PROPENSITY_SD = 0.5
PAIR_NOISE_SD = 0.6

# Priors of the other hidden terms: Dirichlet concentrations of a user's
# interests and of an author's topic mix, and the share of toxic authors.
INTEREST_CONCENTRATION = 0.3
AUTHOR_TOPIC_CONCENTRATION = 0.15
TOXIC_SHARE = 0.03

# Per-action effect sizes of the ground truth, in the order of the columns:
# base logit, user-topic interest, user-author affinity, author quality,
# freshness (per day of age), author toxicity. Positive actions rise with
# interest and quality; hide and report rise with toxicity and with
# disinterest. Actions missing here (a new action in actions.yaml) get a
# rare, interest-driven default so the simulator never breaks on a new head.
_EFFECTS: dict[str, tuple[float, float, float, float, float, float]] = {
    "like": (-3.3, 0.9, 0.9, 0.5, -0.6, -1.0),
    "reply": (-5.6, 1.0, 1.3, 0.4, -0.9, -0.5),
    "retweet": (-4.8, 0.8, 0.7, 0.8, -0.7, -1.0),
    "long_dwell": (-2.9, 0.7, 0.6, 0.5, -0.3, -0.5),
    "hide": (-5.8, -0.9, -0.6, -0.4, 0.0, 2.2),
    "report": (-8.0, -0.6, -0.4, -0.3, 0.0, 3.4),
}
_DEFAULT_EFFECT = (-5.0, 0.8, 0.8, 0.4, -0.5, -0.5)
# Media effect per action (columns: text, image, video, link).
_MEDIA: dict[str, tuple[float, float, float, float]] = {
    "like": (0.0, 0.35, 0.25, -0.3),
    "reply": (0.2, 0.0, -0.2, -0.2),
    "retweet": (0.0, 0.3, 0.4, 0.1),
    "long_dwell": (-0.3, 0.1, 0.7, 0.3),
    "hide": (0.0, 0.0, 0.1, 0.4),
    "report": (0.0, 0.1, 0.2, 0.3),
}


def position_bias(position: np.ndarray) -> np.ndarray:
    """Probability that a user examines the tweet in slot ``position`` (0-based)."""
    return (1.0 + np.asarray(position, dtype=np.float64) / 5.0) ** -0.7


@dataclass(frozen=True)
class Latent:
    """The world's hidden state (arrays indexed by user id; authors are users)."""

    interests: np.ndarray  # (n_users, n_topics): each row sums to 1
    author_topics: np.ndarray  # (n_users, n_topics): an author's topic mix
    quality: np.ndarray  # (n_users,): author quality, standard normal
    toxicity: np.ndarray  # (n_users,): 1 for the few toxic authors, else 0
    propensity: np.ndarray  # (n_users, n_actions): a user's own bias per action
    pair_salt: np.ndarray  # (1,): salt of the user-author affinity noise

    def save(self, path: Path) -> None:
        """Save as an uncompressed .npz (loaded back without pickle)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f.name: getattr(self, f.name) for f in fields(self)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Latent:
        """Load what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})


def draw_latent(rng: np.random.Generator, n_users: int, n_topics: int, n_actions: int) -> Latent:
    """Draw the hidden state of a world."""
    return Latent(
        interests=rng.dirichlet(np.full(n_topics, INTEREST_CONCENTRATION), size=n_users),
        author_topics=rng.dirichlet(np.full(n_topics, AUTHOR_TOPIC_CONCENTRATION), size=n_users),
        quality=rng.standard_normal(n_users),
        toxicity=(rng.random(n_users) < TOXIC_SHARE).astype(np.float64),
        propensity=rng.normal(0.0, PROPENSITY_SD, size=(n_users, n_actions)),
        pair_salt=rng.integers(0, 2**62, size=1, dtype=np.int64),
    )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A stateless 64-bit mix: the same pair always gets the same noise."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def topic_interest(latent: Latent, users: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """The user's interest in the tweet's topic, as it enters every action's logit."""
    n_topics = latent.interests.shape[1]
    return np.log1p(latent.interests[users, topics] * n_topics) - 0.7


def pair_affinity(
    latent: Latent, users: np.ndarray, authors: np.ndarray, pair_noise: bool = True
) -> np.ndarray:
    """User-author affinity: shared interests plus a persistent per-pair noise.

    ``pair_noise=False`` leaves the noise out (a partial oracle, for model ceilings).
    """
    n_topics = latent.interests.shape[1]
    shared = np.einsum("ij,ij->i", latent.interests[users], latent.author_topics[authors])
    if not pair_noise:
        return np.log1p(shared * n_topics) - 0.7
    key = users.astype(np.uint64) * np.uint64(1 << 32) + authors.astype(np.uint64)
    h = _splitmix64(key ^ latent.pair_salt.astype(np.uint64)[0])
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    u2 = ((_splitmix64(h) >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    noise = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return np.log1p(shared * n_topics) - 0.7 + PAIR_NOISE_SD * noise


def true_probabilities(
    latent: Latent,
    actions: ActionSet,
    users: np.ndarray,
    authors: np.ndarray,
    topics: np.ndarray,
    media: np.ndarray,
    age_days: np.ndarray,
    pair_noise: bool = True,
) -> np.ndarray:
    """True P(action) for each (user, tweet) at slot 0, shape (n, n_actions), float32.

    Position bias is applied separately (:func:`position_bias`), so the oracle
    ranks by what a user would do if they examined the tweet. ``pair_noise=False``
    drops the per-pair affinity noise (see :func:`pair_affinity`).
    """
    interest = topic_interest(latent, users, topics)
    affinity = pair_affinity(latent, users, authors, pair_noise)
    quality = latent.quality[authors]
    toxicity = latent.toxicity[authors]
    age = np.clip(age_days, 0.0, None)
    out = np.empty((len(users), len(actions.names)), dtype=np.float32)
    for j, name in enumerate(actions.names):
        base, b_int, b_aff, b_q, b_age, b_tox = _EFFECTS.get(name, _DEFAULT_EFFECT)
        logit = (
            base
            + b_int * interest
            + b_aff * affinity
            + b_q * quality
            + b_age * age
            + b_tox * toxicity
            + np.asarray(_MEDIA.get(name, (0.0,) * 4))[media]
            + latent.propensity[users, j]
        )
        out[:, j] = 1.0 / (1.0 + np.exp(-logit))
    return out


def sample_outcomes(
    rng: np.random.Generator,
    probabilities: np.ndarray,
    positions: np.ndarray,
    actions: ActionSet,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the actions of examined impressions and the seconds spent viewing.

    Returns:
        (outcomes bool (n, n_actions), dwell_seconds float32 (n,)).
    """
    examined = probabilities * position_bias(positions)[:, None]
    outcomes = rng.random(probabilities.shape) < examined
    threshold = actions.long_dwell_seconds
    short = rng.uniform(0.3, threshold, size=len(positions))
    if "long_dwell" in actions.names:
        long_dwell = outcomes[:, actions.names.index("long_dwell")]
        dwell = np.where(long_dwell, threshold + rng.exponential(25.0, len(positions)), short)
    else:
        dwell = short
    return outcomes, dwell.astype(np.float32)


def read_oracle(truth: Path, impression_ids: np.ndarray, actions: ActionSet) -> np.ndarray:
    """True position-free probabilities (n, n_actions) of the given impressions.

    Args:
        truth: the workspace's truth folder (``Workspace.truth``).
    """
    table = pq.read_table(truth / tables.ORACLE.file_name)
    frame = table.select(["impression_id", *(f"p_{a}" for a in actions.names)]).to_pandas()
    rows = pd.Index(frame["impression_id"]).get_indexer(impression_ids)
    if (rows < 0).any():
        raise ValueError(f"{truth}: oracle has no row for some test impressions")
    return frame.iloc[rows, 1:].to_numpy(np.float64)
