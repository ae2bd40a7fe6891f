"""The OpenAPI document the service publishes (``GET /docs.json``), made to tell the truth.

BentoML 1.4 builds the document from the API signatures
(``_bentoml_sdk.service.openapi.generate_spec``) and gets these things wrong
for this service, which clients and schemathesis then believe:

- every API declares 200, 400, 404 and 500 only, the 400 with BentoML's
  ``InvalidArgument`` body whose ``detail`` is a string, while a validation
  error's ``detail`` is pydantic's list of errors and the body guard's,
  authentication's and refusals' bodies are ``{"error": ...}``;
- the statuses that middleware and refusals add (401, 403, 409, 413, 415,
  429 with ``Retry-After``, 503, 504) are missing;
- a nullable field loses its ``null``: BentoML flattens pydantic's
  ``anyOf: [X, null]`` to its first member, so ``reason`` of ``/rank``
  reads as a string that is never null; an exclusive bound stays in
  JSON-schema form (``exclusiveMinimum: 0``), which OpenAPI 3.0 spells
  ``minimum: 0, exclusiveMinimum: true`` (schemathesis refused the document); and
- there is no security scheme (its ``OpenAPISpecification`` has no place
  for ``securitySchemes`` or ``security``).

BentoML has no hook to change the document; the ``/docs.json`` view
serializes ``Service.openapi_spec`` anew on every call. :class:`OpenAPIDocument`
is an ASGI middleware (``Service.add_asgi_middleware``, the supported way to
wrap the app) that rewrites that answer with :func:`truthful_spec`, a pure
function of the generated document, so BentoML's own part (paths, request
and response schemas, descriptions) stays as BentoML made it. The nullable
fields are read from the pydantic models themselves (:mod:`serving.schemas`),
so the document follows the models when they change.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from pydantic import BaseModel

from serving.body_guard import MAX_BODY_BYTES
from serving.schemas import Event, EventsResponse, RankedItem, RankRequest, RankResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DOCS_PATH = "/docs.json"
SECURITY_SCHEME = "bearerAuth"
_REF = "#/components/schemas/"
_JSON = "application/json"

ERROR_SCHEMA = "Error"
VALIDATION_ERROR_SCHEMA = "ValidationError"
VALIDATION_ERROR_ITEM_SCHEMA = "ValidationErrorItem"
COMPONENT_SCHEMAS: dict[str, dict[str, Any]] = {
    ERROR_SCHEMA: {
        "title": ERROR_SCHEMA,
        "description": "A refusal or failure with one message (auth, body guard, "
        "conflict, unavailable store, rate limit, timeout, server error).",
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "title": "Message"}},
        "additionalProperties": False,
    },
    VALIDATION_ERROR_ITEM_SCHEMA: {
        "title": VALIDATION_ERROR_ITEM_SCHEMA,
        "description": "One pydantic error: its type, where (field names and list "
        "indexes), and what is wrong.",
        "type": "object",
        "required": ["type", "loc", "msg"],
        "properties": {
            "type": {"type": "string", "description": "e.g. int_type, timestamp_out_of_window."},
            "loc": {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "description": 'Path to the bad value, e.g. ["root", 0, "action"].',
            },
            "msg": {"type": "string"},
            "url": {"type": "string", "description": "pydantic's page on the error type."},
        },
    },
    VALIDATION_ERROR_SCHEMA: {
        "title": VALIDATION_ERROR_SCHEMA,
        "description": "The request body broke the schema (BentoML's answer to a "
        "pydantic ValidationError, the event-time window's included).",
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "e.g. '1 validation error for ...'."},
            "detail": {"type": "array", "items": {"$ref": _REF + VALIDATION_ERROR_ITEM_SCHEMA}},
        },
        "additionalProperties": False,
    },
}
"""Error bodies, added to ``components.schemas``."""

BENTOML_ERROR_SCHEMAS = ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse")
"""BentoML's error components (``detail`` a string) and task status, dropped when unused."""

_ERROR_BODY = {"content": {_JSON: {"schema": {"$ref": _REF + ERROR_SCHEMA}}}}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds until the key may call again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"description": "The bearer challenge.", "schema": {"type": "string"}}
}

RESPONSES: dict[int, dict[str, Any]] = {
    400: {
        "description": "Bad request: the body breaks the schema (a list of pydantic errors "
        "in `detail`, each naming the field) or is not acceptable JSON, or a multipart body "
        "has no boundary (`error` alone).",
        "content": {
            _JSON: {
                "schema": {
                    "anyOf": [
                        {"$ref": _REF + VALIDATION_ERROR_SCHEMA},
                        {"$ref": _REF + ERROR_SCHEMA},
                    ]
                }
            }
        },
    },
    401: {
        "description": "No API key, or an unknown or revoked one.",
        "headers": _WWW_AUTHENTICATE,
        **_ERROR_BODY,
    },
    403: {
        "description": "The key lacks the route's scope, or is bound to another user.",
        **_ERROR_BODY,
    },
    409: {
        "description": "An event_id already logged with other content; nothing of the "
        "batch was logged.",
        **_ERROR_BODY,
    },
    413: {
        "description": f"The request body is larger than the limit ({MAX_BODY_BYTES} bytes).",
        **_ERROR_BODY,
    },
    415: {
        "description": "A media type the public server refuses (application/vnd.bentoml+pickle).",
        **_ERROR_BODY,
    },
    429: {
        "description": "The key's rate limit is exceeded; retry after `Retry-After` seconds.",
        "headers": _RETRY_AFTER,
        **_ERROR_BODY,
    },
    500: {"description": "An unexpected server error (a bug: see the server log).", **_ERROR_BODY},
    503: {
        "description": "The online store is unavailable; the batch was not applied, "
        "retry it (event ids make the retry safe).",
        **_ERROR_BODY,
    },
    504: {
        "description": "Not answered within the server's timeout (BentoML's traffic.timeout).",
        **_ERROR_BODY,
    },
}
"""Every non-200 status the service answers with, and its body."""

API_STATUSES: dict[str, tuple[int, ...]] = {
    "/rank": (400, 401, 403, 413, 415, 429, 500, 504),
    "/events": (400, 401, 403, 409, 413, 415, 429, 500, 503, 504),
}
"""The non-200 statuses of each API route (``POST``)."""
ADMIN_STATUSES: dict[str, tuple[int, ...]] = {"/metrics": (401, 403, 429)}
"""Routes behind the ``admin`` scope (``GET``) and the statuses authentication adds."""
SCOPE_OF: dict[str, str] = {"/rank": "rank", "/events": "events", "/metrics": "admin"}

NULLABLE_MODELS: tuple[tuple[type[BaseModel], tuple[str, ...]], ...] = (
    (RankRequest, ("paths", "/rank", "post", "requestBody", "content", _JSON, "schema")),
    (RankResponse, ("paths", "/rank", "post", "responses", "200", "content", _JSON, "schema")),
    (EventsResponse, ("paths", "/events", "post", "responses", "200", "content", _JSON, "schema")),
    (Event, ("components", "schemas", "Event")),
    (RankedItem, ("components", "schemas", "RankedItem")),
)
"""Each model and where the document holds its schema."""


def _at(spec: Mapping[str, Any], path: Iterable[str]) -> dict[str, Any] | None:
    node: Any = spec
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) else None


def _nullable_fields(model: type[BaseModel]) -> list[str]:
    """The fields of ``model`` whose JSON schema admits null."""
    properties = model.model_json_schema().get("properties", {})
    return [
        name
        for name, prop in properties.items()
        if {"type": "null"} in prop.get("anyOf", ()) or prop.get("type") == "null"
    ]


def mark_nullable(schema: dict[str, Any], fields: Iterable[str]) -> None:
    """OpenAPI 3.0 ``nullable: true`` on ``fields`` of an object schema, replacing a
    JSON-schema ``anyOf: [X, {"type": "null"}]`` (which 3.0 does not know) by ``X``."""
    properties = schema.get("properties", {})
    for name in fields:
        prop = properties.get(name)
        if prop is None:
            continue
        options = [o for o in prop.get("anyOf", ()) if o != {"type": "null"}]
        if "anyOf" in prop and len(options) == 1:
            del prop["anyOf"]
            prop.update(options[0])
        prop["nullable"] = True


def exclusive_bounds_as_3_0(node: Any) -> None:
    """OpenAPI 3.0 exclusive bounds, in place: pydantic's JSON-schema ``exclusiveMinimum: 0``
    (a number) becomes ``minimum: 0, exclusiveMinimum: true`` (3.0's boolean form)."""
    if isinstance(node, dict):
        for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            value = node.get(bound)
            if isinstance(value, int | float) and not isinstance(value, bool):
                node[limit] = value
                node[bound] = True
        for child in node.values():
            exclusive_bounds_as_3_0(child)
    elif isinstance(node, list):
        for child in node:
            exclusive_bounds_as_3_0(child)


def _referenced(spec: Mapping[str, Any]) -> set[str]:
    """Names of the component schemas some ``$ref`` points to."""
    found: set[str] = set()
    stack: list[Any] = [spec["paths"], *spec.get("components", {}).get("schemas", {}).values()]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_REF):
                found.add(ref[len(_REF) :])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def truthful_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The service's OpenAPI document with every status, body, nullable field and
    the bearer security scheme declared (a new dict; ``spec`` is unchanged).

    ``spec`` is the document as served (``/docs.json``) or as
    ``Service.openapi_spec.asdict()`` returns it (integer status keys).
    """
    out: dict[str, Any] = json.loads(json.dumps(spec))  # a copy, with the keys as served
    components = out.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(copy.deepcopy(COMPONENT_SCHEMAS))
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "frk_<8 hex id>_<43-character secret>",
        "description": "An API key of `feedrank keys create`. Scopes: rank (POST /rank), "
        "events (POST /events), admin (GET /metrics).",
    }
    for route, statuses in API_STATUSES.items():
        operation = _at(out, ("paths", route, "post"))
        if operation is None:
            continue
        ok = operation.get("responses", {}).get("200")
        operation["responses"] = {
            "200": ok,
            **{str(s): copy.deepcopy(RESPONSES[s]) for s in statuses},
        }
        operation["security"] = [{SECURITY_SCHEME: []}]
        operation["x-feedrank-scope"] = SCOPE_OF[route]
    for route, statuses in ADMIN_STATUSES.items():
        operation = _at(out, ("paths", route, "get"))
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        responses.update({str(s): copy.deepcopy(RESPONSES[s]) for s in statuses})
        operation["security"] = [{SECURITY_SCHEME: []}]
        operation["x-feedrank-scope"] = SCOPE_OF[route]
    for model, path in NULLABLE_MODELS:
        schema = _at(out, path)
        if schema is not None:
            mark_nullable(schema, _nullable_fields(model))
    exclusive_bounds_as_3_0(out)
    used = _referenced(out)
    for name in BENTOML_ERROR_SCHEMAS:
        if name not in used:
            schemas.pop(name, None)
    return out


class OpenAPIDocument:  # pylint: disable=too-few-public-methods  # an ASGI middleware
    """ASGI middleware: rewrites BentoML's ``GET /docs.json`` answer with :func:`truthful_spec`.

    Every other request passes untouched. An answer that is not a 200 JSON
    object (BentoML failed to build the document) is passed on as it is.
    """

    def __init__(self, app: ASGIApp, path: str = DOCS_PATH) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def collect(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, collect)
        if start is None:
            return
        body = b"".join(chunks)
        if start.get("status") == 200:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and "paths" in parsed:
                body = json.dumps(truthful_spec(parsed)).encode()
        headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
