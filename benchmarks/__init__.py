"""Performance benchmarks, each run by path (``.venv/bin/python benchmarks/<name>.py``).

Each ends with ``RESULT {json}``. They import the project as installed
packages (``load`` for the server harness) and nothing imports them.
"""
