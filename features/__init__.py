"""Batch feature pipelines and the bridge to the Feast feature repo (apply, materialize, online fill)."""
