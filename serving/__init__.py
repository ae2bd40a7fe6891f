"""Serving: the BentoML ranked-feed service."""
