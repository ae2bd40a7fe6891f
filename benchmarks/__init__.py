"""Benchmark scripts (run each as a script; see its docstring); shared parts in harness.py."""
