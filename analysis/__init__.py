"""Analyses of the model and the plan, each run as ``python -m analysis.<name>``.

Research questions, not regression benchmarks: how close any model can get to
the oracle (``model_ceiling``, with the ``joint_posterior`` scorer), where the
missing lift is (``lift_gap``), and the capacity plan that ``capacity``
renders into docs/capacity.md from docs/figures.json. They sit above the CLI:
they import the stages and ``feedrank``, and nothing imports them.
"""
