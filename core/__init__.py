"""The foundation every stage stands on: the shared vocabulary and the ranking policy.

Actions and their weights, table schemas, the workspace, the Feast store and
its storage layout, the ranker (model, preprocessing) and the policy that turns
its scores into a feed. It imports no stage: simulation, features, training,
serving and metrics import it, and hand off to each other through artifacts.
"""
