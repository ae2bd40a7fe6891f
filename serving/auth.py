"""Who may call the service: bearer API keys with scopes, bound users and rate limits.

A key looks like ``frk_<id>_<secret>``: an 8-hex-digit id and 43 characters
of ``secrets.token_urlsafe(32)`` (256 random bits). The key file (YAML, named
by ``FEEDRANK_API_KEYS_FILE``; default ``<workspace>/data/serving/api_keys.yaml``,
mounted from a Kubernetes secret in a deployment) holds, per key, its id, a
name, the SHA-256 of the whole key, its scopes, optionally the one user it is
bound to, and optionally its own rate limit. The key itself is printed once
by ``feedrank keys create`` and stored nowhere. SHA-256, not a slow password
hash: a 256-bit random secret cannot be guessed from its hash, and argon2's
~50 ms per request would be three times the /rank budget (GitHub's and
Stripe's tokens are kept the same way). The presented key's hash is compared
with ``hmac.compare_digest`` (constant time), after a lookup by its id.

Scopes: ``rank`` (``POST /rank``), ``events`` (``POST /events``), ``admin``
(``GET /metrics`` and any other ``POST`` route). ``/livez``, ``/readyz``,
``/healthz``, the OpenAPI document and its UI stay open. A key bound to a
user (``user_id``) may only rank that user and post that user's events
(:func:`require_user`, called by the API methods on the validated request:
the check reads the same parsed body the service uses, so no second parser
can disagree with it); a key without one is a service-to-service caller (the
timeline mixer) and may name any user.

Rate limits come from the ``limits`` library (the one behind Flask-Limiter
and SlowAPI): a sliding-window counter per key, default
``FEEDRANK_RATE_LIMIT`` (``100/second``), in ``FEEDRANK_RATE_LIMIT_STORAGE``
(``memory://``: per worker process, so a pod allows workers x the limit; a
``redis://`` URI shares one count across every replica). Over the limit: 429
with ``Retry-After`` in whole seconds. If the shared storage fails (its
client times out after 50 ms and does not retry), the request is let through
uncounted and the failure logged: a limiter outage must not become an API
outage.

The key file is re-read when its modification time changes (checked at most
once a second), so ``feedrank keys revoke`` and a rotated Kubernetes secret
take effect without a restart. ``FEEDRANK_AUTH=off`` turns all of this off,
for benchmarks that measure its cost; the service logs a warning when it is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import yaml
from bentoml.exceptions import BentoMLException
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import InputError
from core.workspace import REPO_ROOT
from serving.redis_clients import client_options

Scope = Literal["rank", "events", "admin"]
SCOPES: tuple[Scope, ...] = ("rank", "events", "admin")
ROUTE_SCOPES: Mapping[tuple[str, str], Scope] = {
    ("POST", "/rank"): "rank",
    ("POST", "/events"): "events",
    ("GET", "/metrics"): "admin",
}
"""The scope each protected route needs; any other POST needs ``admin``."""
OPEN_GET = frozenset({"/livez", "/readyz", "/healthz", "/docs.json", "/schema.json", "/"})
"""GET routes anyone may call (probes, the OpenAPI document and its UI)."""
OPEN_GET_PREFIXES = ("/static_content/", "/docs")

KEYS_FILE_ENV = "FEEDRANK_API_KEYS_FILE"
AUTH_ENV = "FEEDRANK_AUTH"
RATE_LIMIT_ENV = "FEEDRANK_RATE_LIMIT"
RATE_LIMIT_STORAGE_ENV = "FEEDRANK_RATE_LIMIT_STORAGE"
DEFAULT_RATE_LIMIT = "100/second"
KEYS_FILE = Path("data") / "serving" / "api_keys.yaml"
"""The key file's place inside a workspace, when ``FEEDRANK_API_KEYS_FILE`` is unset."""
PRINCIPAL = "feedrank.principal"
"""The ASGI scope entry that carries the authenticated caller to the API methods."""
REFUSAL = "feedrank.refusal"
"""The ASGI scope entry where :func:`require_user` leaves its message: BentoML answers
a 403 raised in an API method with a bare "Authorization error", and the middleware
puts the message back."""
_KEY = re.compile(r"frk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")
_RELOAD_SECONDS = 1.0

log = logging.getLogger("feedrank.serving")

ASGIScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]


class KeyFileError(InputError):
    """The key file cannot be read or breaks a rule; the message names the file."""


class KeyEntry(BaseModel):
    """One key of the key file (the key's hash, never the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{8}$", description="The key's public id.")
    name: str = Field(min_length=1, max_length=100, description="Who holds it.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole key.")
    scopes: tuple[Scope, ...] = Field(min_length=1, description="rank, events, admin.")
    user_id: int | None = Field(None, ge=0, description="The only user it may act for.")
    rate_limit: str | None = Field(None, description="Its own limit, e.g. '20/second'.")

    @field_validator("rate_limit")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        if value is not None:
            parse(value)  # ValueError on a bad limit string
        return value


class KeyFile(BaseModel):
    """The whole key file: ``keys:`` and a list of :class:`KeyEntry`."""

    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    key_id: str
    name: str
    scopes: frozenset[str]
    user_id: int | None
    limit: RateLimitItem


def keys_file_path(workspace: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The key file: ``FEEDRANK_API_KEYS_FILE`` or the workspace's default place."""
    env = os.environ if environ is None else environ
    named = env.get(KEYS_FILE_ENV)
    return Path(named) if named else workspace / KEYS_FILE


def digest(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_key_file(path: Path) -> KeyFile:
    """The key file, validated; a missing or broken file is a :class:`KeyFileError`."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: no API key file; create a key with `feedrank keys create` "
            f"(or set {KEYS_FILE_ENV})"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise KeyFileError(f"{path}: cannot read the API key file: {exc}") from None
    try:
        parsed = KeyFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise KeyFileError(f"{path}: {problems}") from None
    ids = [k.id for k in parsed.keys]
    if len(set(ids)) != len(ids):
        raise KeyFileError(f"{path}: keys: an id appears twice")
    return parsed


def _write_key_file(path: Path, keys: KeyFile) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(keys.model_dump(mode="json", exclude_none=True), out, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_key(
    path: Path,
    name: str,
    scopes: Iterable[Scope],
    user_id: int | None = None,
    rate_limit: str | None = None,
) -> tuple[str, KeyEntry]:
    """Add a new key to the key file (created if missing); returns the key, shown once."""
    existing = read_key_file(path) if path.exists() else KeyFile()
    key_id = secrets.token_hex(4)
    while any(k.id == key_id for k in existing.keys):
        key_id = secrets.token_hex(4)
    key = f"frk_{key_id}_{secrets.token_urlsafe(32)}"
    try:
        entry = KeyEntry(
            id=key_id,
            name=name,
            sha256=digest(key),
            scopes=tuple(dict.fromkeys(scopes)),
            user_id=user_id,
            rate_limit=rate_limit,
        )
    except ValidationError as exc:
        raise KeyFileError(
            "; ".join(f"{err['loc'][0]}: {err['msg']}" for err in exc.errors())
        ) from None
    _write_key_file(path, KeyFile(keys=[*existing.keys, entry]))
    return key, entry


def revoke_key(path: Path, key_id: str) -> KeyEntry:
    """Remove a key by id (or by name, when one key has it); returns what was removed."""
    existing = read_key_file(path)
    matches = [k for k in existing.keys if key_id in (k.id, k.name)]
    if len(matches) != 1:
        found = "no key" if not matches else f"{len(matches)} keys"
        raise KeyFileError(f"{path}: {found} with id or name {key_id!r}")
    _write_key_file(path, KeyFile(keys=[k for k in existing.keys if k is not matches[0]]))
    return matches[0]


class AuthConfig(BaseModel):
    """The service's authentication settings, from its environment."""

    model_config = ConfigDict(frozen=True)

    required: bool = True
    keys_file: Path
    rate_limit: str = DEFAULT_RATE_LIMIT
    rate_limit_storage: str = "memory://"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        """Read ``FEEDRANK_AUTH`` (``required`` or ``off``), the key file and the limits."""
        env = os.environ if environ is None else environ
        mode = env.get(AUTH_ENV, "required")
        if mode not in ("required", "off"):
            raise ValueError(f"{AUTH_ENV}: must be 'required' or 'off', not {mode!r}")
        rate_limit = env.get(RATE_LIMIT_ENV) or DEFAULT_RATE_LIMIT
        try:
            parse(rate_limit)
        except ValueError:
            raise ValueError(f"{RATE_LIMIT_ENV}: not a rate limit: {rate_limit!r}") from None
        workspace = Path(env.get("FEEDRANK_WORKSPACE") or REPO_ROOT)
        return cls(
            required=mode == "required",
            keys_file=keys_file_path(workspace, env),
            rate_limit=rate_limit,
            rate_limit_storage=env.get(RATE_LIMIT_STORAGE_ENV) or "memory://",
        )


class KeyRing:
    """The key file in memory: id -> (hash, principal); re-read when the file changes."""

    def __init__(self, path: Path, default_limit: str) -> None:
        self.path = path
        self.default_limit = parse(default_limit)
        self._keys: dict[str, tuple[str, Principal]] = {}
        self._mtime: int | None = None
        self._checked = 0.0
        self.reload()

    def reload(self) -> None:
        """Read the file (raises :class:`KeyFileError`; the previous keys stay on error)."""
        mtime = self.path.stat().st_mtime_ns if self.path.exists() else None
        parsed = read_key_file(self.path)
        self._keys = {
            k.id: (
                k.sha256,
                Principal(
                    k.id,
                    k.name,
                    frozenset(k.scopes),
                    k.user_id,
                    parse(k.rate_limit) if k.rate_limit else self.default_limit,
                ),
            )
            for k in parsed.keys
        }
        self._mtime = mtime

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _RELOAD_SECONDS:
            return
        self._checked = now
        try:
            if self.path.stat().st_mtime_ns != self._mtime:
                self.reload()
                log.info("API keys reloaded from %s (%d keys)", self.path, len(self._keys))
        except (OSError, KeyFileError) as exc:
            log.error("API keys not reloaded, keeping the previous ones: %s", exc)

    def authenticate(self, key: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        self._refresh()
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        stored = self._keys.get(match.group(1))
        if stored is None:
            return None
        return stored[1] if hmac.compare_digest(digest(key), stored[0]) else None


def _bearer(scope: ASGIScope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else None
    return None


async def _refuse(
    send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiKeyAuth:
    """ASGI middleware: 401 without a valid key, 403 without the route's scope, 429 over
    the key's rate limit; the principal goes to the app in ``scope[PRINCIPAL]``."""

    def __init__(self, app: ASGIApp, config: AuthConfig | None = None) -> None:
        self.app = app
        self.config = config or AuthConfig.from_env()
        self.keys = (
            KeyRing(self.config.keys_file, self.config.rate_limit) if self.config.required else None
        )
        storage = self.config.rate_limit_storage
        # A shared Redis under the service's policy (serving/redis_clients.py):
        # fast timeouts, no retries, so an outage lets requests through at once.
        options = client_options() if storage.startswith("redis") else {}
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(storage, **options))
        if not self.config.required:
            log.warning("%s=off: every caller is trusted, no rate limits", AUTH_ENV)

    @staticmethod
    def needed_scope(method: str, path: str) -> Scope | None:
        """The scope a request needs (None: open). Unlisted routes need ``admin``."""
        scope = ROUTE_SCOPES.get((method, path))
        if scope is not None:
            return scope
        if method in ("GET", "HEAD") and (path in OPEN_GET or path.startswith(OPEN_GET_PREFIXES)):
            return None
        return "admin"

    def _over_limit(self, principal: Principal) -> float | None:
        """Seconds until the key may call again, or None when under its limit."""
        try:
            if self.limiter.hit(principal.limit, principal.key_id):
                return None
            stats = self.limiter.get_window_stats(principal.limit, principal.key_id)
        except Exception:  # pylint: disable=broad-exception-caught  # a limiter outage lets through
            log.exception("rate limit storage failed; request let through")
            return None
        return max(1.0, stats.reset_time - time.time())

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if self.keys is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = self.needed_scope(scope["method"], scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        key = _bearer(scope)
        if not key:
            await _refuse(
                send,
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                [(b"www-authenticate", b'Bearer realm="feedrank"')],
            )
            return
        principal = self.keys.authenticate(key)
        if principal is None:
            await _refuse(
                send,
                401,
                "invalid or revoked API key",
                [(b"www-authenticate", b'Bearer realm="feedrank", error="invalid_token"')],
            )
            return
        if needed not in principal.scopes:
            await _refuse(
                send, 403, f"API key {principal.key_id} lacks the '{needed}' scope for this route"
            )
            return
        wait = self._over_limit(principal)
        if wait is not None:
            await _refuse(
                send,
                429,
                f"rate limit of API key {principal.key_id} exceeded ({principal.limit})",
                [(b"retry-after", str(math.ceil(wait)).encode())],
            )
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, _with_refusal_message(scope, send))


def _with_refusal_message(scope: ASGIScope, send: Send) -> Send:
    """``send``, except that a 403 answer carrying a :data:`REFUSAL` gets it as its body."""
    refused = False

    async def sending(message: Message) -> None:
        nonlocal refused
        if refused:
            return  # BentoML's own body of the refusal, replaced
        if message["type"] == "http.response.start" and message["status"] == 403:
            refusal = scope.get(REFUSAL)
            if refusal is not None:
                refused = True
                await _refuse(send, 403, refusal)
                return
        await send(message)

    return sending


def request_scope(ctx: Any) -> MutableMapping[str, Any]:
    """The ASGI scope of the request ``ctx`` (a ``bentoml.Context``) serves; empty when
    the API method is called in-process, outside any request."""
    try:
        return ctx.request.scope  # type: ignore[no-any-return]
    except LookupError:
        return {}


def require_user(scope: MutableMapping[str, Any], user_ids: Iterable[int]) -> None:
    """Refuse (403) a key bound to one user acting for another.

    ``scope`` is the request's ASGI scope (:func:`request_scope`); without a
    principal in it (authentication off, or an in-process call) there is
    nothing to check.
    """
    principal: Principal | None = scope.get(PRINCIPAL)
    if principal is None or principal.user_id is None:
        return
    others = sorted({u for u in user_ids if u != principal.user_id})
    if others:
        message = (
            f"API key {principal.key_id} is bound to user {principal.user_id} "
            f"and may not act for user {others[0]}"
        )
        scope[REFUSAL] = message
        raise BentoMLException(message, error_code=HTTPStatus.FORBIDDEN)
