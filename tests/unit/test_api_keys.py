"""API keys: the key file, the key ring and the ASGI middleware (serving/auth.py).

The middleware wraps a two-route Starlette app here; tests/integration/test_auth.py
runs the same rules against a real ``bentoml serve``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.auth import (
    PRINCIPAL,
    ApiKeyAuth,
    AuthConfig,
    KeyFileError,
    KeyRing,
    create_key,
    read_key_file,
    require_user,
    revoke_key,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "api_keys.yaml"


def test_created_key_is_stored_hashed_and_private(key_file: Path) -> None:
    key, entry = create_key(key_file, "mixer", ["rank", "events"])
    text = key_file.read_text()
    assert key.startswith(f"frk_{entry.id}_")
    assert key not in text and key.split("_", 2)[2] not in text
    assert entry.sha256 in text
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert read_key_file(key_file).keys == [entry]


def test_revoke_by_name_removes_only_that_key(key_file: Path) -> None:
    _, keep = create_key(key_file, "keep", ["rank"])
    _, gone = create_key(key_file, "gone", ["rank"])
    assert revoke_key(key_file, "gone") == gone
    assert read_key_file(key_file).keys == [keep]
    with pytest.raises(KeyFileError, match="no key with id or name 'gone'"):
        revoke_key(key_file, "gone")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("keys:\n- {id: zz, name: a, sha256: x, scopes: [rank]}\n", "keys.0.id"),
        ("keys: [{id: 0000000a, name: a, sha256: " + "a" * 64 + ", scopes: [root]}]\n", "scopes"),
        ("keys: [{id: 0000000a, name: a, sha256: " + "a" * 64 + ", scopes: []}]\n", "scopes"),
        ("keys: [{id: 0000000a, name: a, sha256: " + "a" * 64 + ", scopes: [rank], x: 1}]\n", "x"),
        ("keys: [\n", "cannot read"),
    ],
)
def test_broken_key_file_names_file_and_rule(key_file: Path, text: str, rule: str) -> None:
    key_file.parent.mkdir(parents=True)
    key_file.write_text(text)
    with pytest.raises(KeyFileError, match=rule) as err:
        read_key_file(key_file)
    assert str(key_file) in str(err.value)


def test_missing_key_file_says_how_to_create_one(key_file: Path) -> None:
    with pytest.raises(KeyFileError, match="feedrank keys create"):
        read_key_file(key_file)


def test_bad_rate_limit_is_refused(key_file: Path) -> None:
    with pytest.raises(KeyFileError, match="rate_limit"):
        create_key(key_file, "x", ["rank"], rate_limit="lots")
    with pytest.raises(ValueError, match="FEEDRANK_RATE_LIMIT"):
        AuthConfig.from_env({"FEEDRANK_RATE_LIMIT": "fast", "FEEDRANK_WORKSPACE": "/tmp"})
    with pytest.raises(ValueError, match="FEEDRANK_AUTH"):
        AuthConfig.from_env({"FEEDRANK_AUTH": "maybe", "FEEDRANK_WORKSPACE": "/tmp"})


def test_key_ring_authenticates_only_the_exact_key(key_file: Path) -> None:
    key, entry = create_key(key_file, "mixer", ["rank"], user_id=7)
    ring = KeyRing(key_file, "10/second")
    principal = ring.authenticate(key)
    assert principal is not None
    assert (principal.key_id, principal.user_id, principal.scopes) == (entry.id, 7, {"rank"})
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert ring.authenticate(tampered) is None
    assert ring.authenticate("frk_00000000_" + "a" * 43) is None
    assert ring.authenticate("not a key") is None


def test_key_ring_sees_a_revocation_without_restart(key_file: Path) -> None:
    key, entry = create_key(key_file, "soon-gone", ["rank"])
    create_key(key_file, "other", ["rank"])
    ring = KeyRing(key_file, "10/second")
    assert ring.authenticate(key) is not None
    time.sleep(0.01)  # a new mtime
    revoke_key(key_file, entry.id)
    time.sleep(1.05)  # the ring looks at the file at most once a second
    assert ring.authenticate(key) is None


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/rank", "rank"),
        ("POST", "/events", "events"),
        ("GET", "/metrics", "admin"),
        ("POST", "/reload", "admin"),
        ("GET", "/livez", None),
        ("GET", "/readyz", None),
        ("GET", "/docs.json", None),
        ("GET", "/static_content/index.css", None),
        ("GET", "/anything-else", "admin"),
    ],
)
def test_route_scopes(method: str, path: str, scope: str | None) -> None:
    assert ApiKeyAuth.needed_scope(method, path) == scope


def _app(key_file: Path, required: bool = True) -> TestClient:
    async def rank(request: Request) -> JSONResponse:
        principal = request.scope.get(PRINCIPAL)
        return JSONResponse({"key": principal.key_id if principal else None})

    async def livez(_: Request) -> JSONResponse:
        return JSONResponse({})

    async def other_user(request: Request) -> JSONResponse:
        try:
            require_user(request.scope, [8])
        except BentoMLException:  # as BentoML answers it
            return JSONResponse({"error": "Authorization error"}, status_code=403)
        return JSONResponse({})

    app = Starlette(
        routes=[
            Route("/rank", rank, methods=["POST"]),
            Route("/events", other_user, methods=["POST"]),
            Route("/livez", livez),
        ]
    )
    config = AuthConfig(required=required, keys_file=key_file, rate_limit="3/minute")
    return TestClient(ApiKeyAuth(app, config))


def test_middleware_401_403_429_and_open_probes(key_file: Path) -> None:
    ranker, entry = create_key(key_file, "ranker", ["rank"])
    writer, _ = create_key(key_file, "writer", ["events"])
    client = _app(key_file)

    missing = client.post("/rank")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["error"]
    assert client.post("/rank", headers={"Authorization": "Basic abc"}).status_code == 401
    bad = client.post("/rank", headers={"Authorization": f"Bearer {ranker}x"})
    assert (bad.status_code, bad.json()["error"]) == (401, "invalid or revoked API key")

    wrong = client.post("/rank", headers={"Authorization": f"Bearer {writer}"})
    assert wrong.status_code == 403
    assert "'rank' scope" in wrong.json()["error"]

    assert client.get("/livez").status_code == 200
    answers = [
        client.post("/rank", headers={"Authorization": f"Bearer {ranker}"}) for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].json() == {"key": entry.id}
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60


def test_middleware_off_lets_everyone_through(key_file: Path) -> None:
    assert _app(key_file, required=False).post("/rank").json() == {"key": None}


def test_bound_key_may_act_only_for_its_user(key_file: Path) -> None:
    key, _ = create_key(key_file, "user-7", ["rank", "events"], user_id=7)
    principal = KeyRing(key_file, "10/second").authenticate(key)
    require_user({PRINCIPAL: principal}, [7, 7])
    with pytest.raises(BentoMLException, match="bound to user 7 and may not act for user 8") as err:
        require_user({PRINCIPAL: principal}, [7, 8])
    assert err.value.error_code == 403
    require_user({}, [8])  # no principal: auth off or an in-process call


def test_a_bound_users_refusal_keeps_its_message_through_the_middleware(key_file: Path) -> None:
    key, entry = create_key(key_file, "user-7", ["events"], user_id=7)
    answer = _app(key_file).post("/events", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 403
    assert answer.json() == {
        "error": f"API key {entry.id} is bound to user 7 and may not act for user 8"
    }
