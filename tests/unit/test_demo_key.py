"""The demo's API key: one at a time, owner-only on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.workspace import Workspace
from feedrank.demo import DEMO_KEY_FILE, DEMO_KEY_NAME, issue_demo_key
from serving.auth import KEYS_FILE_ENV, create_key, digest, keys_file_path, read_key_file


def test_each_demo_run_leaves_exactly_one_demo_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEYS_FILE_ENV, raising=False)
    ws = Workspace(tmp_path)
    (ws.data / "serving").mkdir(parents=True)
    keys = keys_file_path(ws.root)
    create_key(keys, DEMO_KEY_NAME, ["rank"])  # a second "demo" made by hand
    create_key(keys, "mixer", ["rank"])
    issue_demo_key(ws)
    issue_demo_key(ws)

    saved = ws.data / "serving" / DEMO_KEY_FILE
    entries = read_key_file(keys).keys
    demo = [k for k in entries if k.name == DEMO_KEY_NAME]
    assert len(demo) == 1 and [k.name for k in entries if k.name != DEMO_KEY_NAME] == ["mixer"]
    assert demo[0].sha256 == digest(saved.read_text().strip())
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
