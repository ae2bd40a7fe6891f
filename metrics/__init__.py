"""Metrics: the engagement actions and weights, weighted engagement per user, A/B analysis."""
