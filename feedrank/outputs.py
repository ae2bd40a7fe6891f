"""Machine-readable outputs of a CI step: ``key=value`` lines in a file and ``$GITHUB_OUTPUT``.

Workflows read these, never a command's printed last line (issue 20).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def output_lines(values: Mapping[str, object], keys: Sequence[str]) -> str:
    """``key=value`` lines of ``keys``, one line each (newlines become spaces, None empty)."""
    lines = []
    for key in keys:
        value = values.get(key)
        text = "" if value is None else " ".join(str(value).splitlines())
        lines.append(f"{key}={text}\n")
    return "".join(lines)


def publish_outputs(text: str, outputs: Path | None) -> None:
    """Write ``text`` to ``outputs`` (if given) and append it to ``$GITHUB_OUTPUT`` (if set)."""
    if outputs is not None:
        outputs.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_text(text, encoding="utf-8")
    github_output = os.environ.get("GITHUB_OUTPUT")
    if github_output:
        with open(github_output, "a", encoding="utf-8") as out:
            out.write(text)
