"""The joint-posterior scorer computes the simulator's logit, and its fit learns from history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.joint_posterior import JointPosterior, Rows
from analysis.model_ceiling import load_impressions, logit, truth
from core.actions import load_actions
from core.workspace import Workspace
from simulation.truth import PAIR_NOISE_SD, Latent, pair_affinity

pytestmark = pytest.mark.unit


def _posterior(ws: Workspace) -> tuple[JointPosterior, Latent, pd.DataFrame]:
    impressions = load_impressions(ws)
    latent = Latent.load(ws.truth / "latent.npz")
    cut = int(np.quantile(impressions["when"], 0.8))
    history = impressions[impressions["when"] < cut]
    posterior = JointPosterior(ws, load_actions(), history, cut, latent.interests.shape)
    return posterior, latent, history


def test_logit_at_the_true_values_is_the_truths(tiny_workspace: Workspace) -> None:
    posterior, latent, history = _posterior(tiny_workspace)
    users = history["user_id"].to_numpy()
    authors = history["author_id"].to_numpy()
    est = posterior.estimates
    est.interest_logits.copy_(torch.from_numpy(np.log(latent.interests)))
    est.propensity.copy_(torch.from_numpy(latent.propensity))
    est.quality.copy_(torch.from_numpy(latent.quality))
    posterior.mix = torch.from_numpy(latent.author_topics)
    noise = (
        pair_affinity(latent, users, authors) - pair_affinity(latent, users, authors, False)
    ) / PAIR_NOISE_SD
    toxicity = torch.from_numpy(latent.toxicity[authors])[:, None]

    got = posterior.logits(Rows.of(history), torch.from_numpy(noise), toxicity)

    # The truth's probabilities are float32: compare logits where they are not saturated.
    expected = logit(truth(latent, load_actions(), history))
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4 * np.abs(expected).max())


def test_fit_raises_the_posterior_and_recovers_author_quality(
    tiny_workspace: Workspace,
) -> None:
    posterior, latent, history = _posterior(tiny_workspace)
    before = float(posterior.log_posterior())

    after = posterior.fit(steps=30)

    assert after > before
    authors = np.unique(history["author_id"].to_numpy())
    seen = np.bincount(history["author_id"].to_numpy(), minlength=len(latent.quality))
    shown = authors[seen[authors] >= 50]
    estimate = posterior.estimates.quality.numpy()[shown]
    assert np.corrcoef(estimate, latent.quality[shown])[0, 1] > 0.5
