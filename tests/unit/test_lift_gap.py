"""The lift-gap benchmark gives each training row its own hidden term, and nothing else changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import lift_gap
from simulation.truth import draw_latent

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("term", ["interest", "quality", "toxicity"])
def test_hidden_term_column_follows_each_row(tmp_path: Path, term: str) -> None:
    rng = np.random.default_rng(0)
    latent = draw_latent(rng, n_users=50, n_topics=8, n_actions=6)
    users = rng.integers(0, 50, 200)
    authors = rng.integers(0, 50, 200)
    topics = rng.integers(0, 8, 200)
    source = tmp_path / "set.parquet"
    pq.write_table(
        pa.table({"user_id": users, "author_id": authors, "tweet_topic": topics}), source
    )

    out = lift_gap.with_hidden_term(source, latent, term, tmp_path / "with.parquet")

    table = pq.read_table(out)
    assert table.column_names == ["user_id", "author_id", "tweet_topic", f"true_{term}"]
    expected = {
        "interest": np.log1p(latent.interests[users, topics] * 8) - 0.7,
        "quality": latent.quality[authors],
        "toxicity": latent.toxicity[authors],
    }[term]
    np.testing.assert_allclose(table[f"true_{term}"].to_numpy(), expected, rtol=1e-6)
