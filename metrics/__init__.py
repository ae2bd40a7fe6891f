"""Metrics: weighted engagement per user, A/B analysis, replay and drift."""
