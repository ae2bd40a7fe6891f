"""Feature pipelines and the bridge to the Feast repo: apply, online fill."""
