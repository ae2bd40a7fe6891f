"""The closing ``RESULT {json}`` line that commands and stage entry points print.

Tests and scripts that drive the CLI (and ``python -m training`` under
torchrun) read a run's figures from its last line, so every writer formats
that line the same way; it lives in the foundation because a stage's own entry
point prints it as well as the ``feedrank`` commands.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def result_line(values: Mapping[str, Any]) -> str:
    """The ``RESULT {json}`` line the commands end with (keys in the given order)."""
    return "RESULT " + json.dumps(dict(values), sort_keys=False)
