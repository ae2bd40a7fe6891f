"""The OpenAPI document the service publishes tells the truth (issue 17, item 6).

Two ways: the document itself (every status declared with its body,
``reason`` nullable, ``action`` an enum, the bearer security scheme), and
the running ``bentoml serve``: each refusal the service can be made to give
on purpose (400 both ways, 401, 403 both ways, 409, 413, 415, 429) is
declared for its route and its body matches the declaration, checked by
schemathesis against the served ``/docs.json``. The fuzz run in
``test_reliability.py`` checks the same for every answer it provokes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core.feast_store import Workspace
from load.harness import keys_file
from serving.auth import create_key
from serving.body_guard import MAX_BODY_BYTES
from serving.openapi import (
    API_STATUSES,
    BENTOML_ERROR_SCHEMAS,
    SECURITY_SCHEME,
    mark_nullable,
    truthful_spec,
)
from serving.schemas import ACTION_NAMES

pytestmark = [pytest.mark.integration]

JSON = "application/json"


@pytest.fixture(scope="module", name="generated")
def _generated_spec() -> dict[str, Any]:
    """The document as BentoML generates it for the service (before the rewrite)."""
    from serving.service import FeedRanker  # pylint: disable=import-outside-toplevel

    generated: dict[str, Any] = json.loads(json.dumps(FeedRanker.openapi_spec.asdict()))
    return generated  # as served: JSON, status keys strings


@pytest.fixture(scope="module", name="spec")
def _truthful(generated: dict[str, Any]) -> dict[str, Any]:
    return truthful_spec(generated)


def _body_schema(spec: dict[str, Any], route: str, status: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["paths"][route]["post"]["responses"][status]["content"][JSON][
        "schema"
    ]
    return schema


def test_bentoml_alone_declares_too_little(generated: dict[str, Any]) -> None:
    """What the rewrite is for; fails once BentoML declares these itself (drop the rewrite)."""
    responses = generated["paths"]["/events"]["post"]["responses"]
    assert not {"401", "409", "413", "429", "503"} & {str(s) for s in responses}
    reason = _body_schema(generated, "/rank", "200")["properties"]["reason"]
    assert not reason.get("nullable")
    assert "securitySchemes" not in generated.get("components", {})


def test_every_route_declares_each_status_it_answers_with_a_body(spec: dict[str, Any]) -> None:
    for route, statuses in API_STATUSES.items():
        responses = spec["paths"][route]["post"]["responses"]
        assert set(responses) == {"200", *(str(s) for s in statuses)}, route
        for status, response in responses.items():
            assert response["description"], (route, status)
            assert JSON in response.get("content", {}), (route, status)
    assert {"409", "503"} <= set(spec["paths"]["/events"]["post"]["responses"])
    assert "404" not in spec["paths"]["/rank"]["post"]["responses"]  # never answered


def test_the_400_body_is_a_pydantic_error_list_or_one_message(spec: dict[str, Any]) -> None:
    refs = {o["$ref"].rsplit("/", 1)[1] for o in _body_schema(spec, "/rank", "400")["anyOf"]}
    assert refs == {"ValidationError", "Error"}
    schemas = spec["components"]["schemas"]
    detail = schemas["ValidationError"]["properties"]["detail"]
    assert detail["type"] == "array"
    assert detail["items"]["$ref"].endswith("/ValidationErrorItem")
    assert schemas["ValidationErrorItem"]["properties"]["loc"]["type"] == "array"
    assert schemas["Error"]["required"] == ["error"]
    assert not set(BENTOML_ERROR_SCHEMAS) & set(schemas)  # detail: string, no longer referenced


def test_429_declares_retry_after_and_401_the_bearer_challenge(spec: dict[str, Any]) -> None:
    for route in API_STATUSES:
        responses = spec["paths"][route]["post"]["responses"]
        assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
        assert "WWW-Authenticate" in responses["401"]["headers"]


def test_reason_is_nullable_and_action_an_enum(spec: dict[str, Any]) -> None:
    reason = _body_schema(spec, "/rank", "200")["properties"]["reason"]
    assert reason == {**reason, "type": "string", "nullable": True}
    event = spec["components"]["schemas"]["Event"]["properties"]
    assert event["action"]["enum"] == list(ACTION_NAMES)
    assert event["dwell_seconds"]["nullable"] is True
    assert "anyOf" not in event["dwell_seconds"]  # OpenAPI 3.0 has no type null
    request = spec["paths"]["/rank"]["post"]["requestBody"]["content"][JSON]["schema"]
    assert request["properties"]["request_time"]["nullable"] is True
    assert request["properties"]["candidate_tweet_ids"]["nullable"] is True
    assert not request["properties"]["user_id"].get("nullable")
    # An exclusive bound in OpenAPI 3.0's boolean form (schemathesis refused the number form).
    propensity = event["propensity"]
    assert propensity == {**propensity, "minimum": 0, "exclusiveMinimum": True, "maximum": 1}
    assert propensity["nullable"] is True and event["request_id"]["nullable"] is True


def test_the_bearer_scheme_guards_the_api_and_metrics(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"][SECURITY_SCHEME]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for route, method in (("/rank", "post"), ("/events", "post"), ("/metrics", "get")):
        assert spec["paths"][route][method]["security"] == [{SECURITY_SCHEME: []}], route
    for route in ("/livez", "/readyz", "/healthz"):
        assert "security" not in spec["paths"][route]["get"], route


def test_the_rewrite_leaves_the_generated_document_alone(generated: dict[str, Any]) -> None:
    before = repr(generated)
    truthful_spec(generated)
    assert repr(generated) == before


def test_mark_nullable_turns_a_json_schema_null_into_openapi_30() -> None:
    schema = {
        "properties": {
            "a": {"anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}]},
            "b": {"type": "string"},
        }
    }
    mark_nullable(schema, ["a", "b", "missing"])
    assert schema["properties"]["a"] == {"type": "number", "minimum": 0, "nullable": True}
    assert schema["properties"]["b"] == {"type": "string", "nullable": True}


# --------------------------------------------------------------------------- the running service


@pytest.fixture(scope="module", name="served_spec")
def _served_spec(server_url: str) -> dict[str, Any]:
    served: dict[str, Any] = httpx.get(f"{server_url}/docs.json", timeout=30).json()
    return served


def test_the_served_document_is_the_rewritten_one(
    served_spec: dict[str, Any], spec: dict[str, Any]
) -> None:
    assert served_spec["components"]["securitySchemes"] == spec["components"]["securitySchemes"]
    for route in API_STATUSES:
        assert served_spec["paths"][route]["post"]["responses"].keys() == (
            spec["paths"][route]["post"]["responses"].keys()
        )
    assert _body_schema(served_spec, "/rank", "200")["properties"]["reason"]["nullable"] is True


@pytest.fixture(scope="module", name="conforms")
def _conformance(server_url: str) -> Callable[[str, httpx.Response], None]:
    """Asserts an answer's status is declared for its route and its body matches."""
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_url(f"{server_url}/docs.json", timeout=30)

    def check(route: str, response: httpx.Response) -> None:
        operation = schema[route]["POST"]
        declared = set(operation.definition.raw["responses"])
        assert str(response.status_code) in declared, (route, response.status_code, declared)
        assert response.headers["content-type"].startswith(JSON), response.headers
        operation.validate_response(response)  # raises on a body that breaks the declaration

    return check


def _key_usable(url: str, key: str) -> None:
    """Every worker re-reads a changed key file on its first request a second or more
    after its last look (serving/auth.py): past that second, the key works everywhere."""
    time.sleep(1.1)
    response = httpx.post(
        f"{url}/rank",
        json={"user_id": 0, "limit": 1},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code != 401, response.text


def test_each_refusal_is_declared_with_its_body(
    server_url: str,
    served_workspace: Workspace,
    auth: dict[str, str],
    world_end_iso: str,
    conforms: Callable[[str, httpx.Response], None],
) -> None:
    url = server_url

    def post(route: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{url}{route}", headers=headers, timeout=30, **kwargs)

    answers: dict[tuple[str, str], httpx.Response] = {
        ("/rank", "400 schema"): post("/rank", auth, json={"user_id": -1}),
        ("/events", "400 window"): post(
            "/events",
            auth,
            json=[
                {
                    "event_id": "openapi-future",
                    "user_id": 1,
                    "tweet_id": 1,
                    "action": "like",
                    "timestamp": "2200-01-01T00:00:00Z",
                }
            ],
        ),
        ("/events", "400 not json"): post(
            "/events", {**auth, "content-type": JSON}, content=b"not json"
        ),
        ("/rank", "401 no key"): post("/rank", json={"user_id": 1}),
        ("/events", "401 bad key"): post(
            "/events", {"Authorization": "Bearer frk_00000000_" + "a" * 43}, json=[]
        ),
        ("/events", "413"): post(
            "/events", {**auth, "content-type": JSON}, content=b"[" + b" " * MAX_BODY_BYTES + b"]"
        ),
        ("/rank", "415"): post(
            "/rank",
            {**auth, "content-type": "application/vnd.bentoml+pickle"},
            content=b"\x80\x04N.",
        ),
    }
    rank_only, _ = create_key(keys_file(served_workspace), "openapi-rank-only", ["rank"])
    bound, _ = create_key(keys_file(served_workspace), "openapi-bound", ["rank"], user_id=1)
    slow, _ = create_key(
        keys_file(served_workspace), "openapi-slow", ["rank"], rate_limit="1/minute"
    )
    _key_usable(url, slow)  # the last written: the others are in the file it reads
    answers[("/events", "403 scope")] = post(
        "/events", {"Authorization": f"Bearer {rank_only}"}, json=[]
    )
    answers[("/rank", "403 bound user")] = post(
        "/rank", {"Authorization": f"Bearer {bound}"}, json={"user_id": 2}
    )
    limited = [
        post("/rank", {"Authorization": f"Bearer {slow}"}, json={"user_id": 0, "limit": 1})
        for _ in range(4)  # per worker: 2 workers, so a third call at the latest is refused
    ]
    answers[("/rank", "429")] = next(r for r in limited if r.status_code == 429)
    event = {
        "event_id": f"openapi-conflict-{time.time_ns()}",
        "user_id": 1,
        "tweet_id": 17,  # a tweet of the world: unknown ones are not logged
        "action": "like",
        "timestamp": world_end_iso,
    }
    assert post("/events", auth, json=[event]).status_code == 200
    answers[("/events", "409")] = post("/events", auth, json=[{**event, "action": "reply"}])

    expected = {
        "400 schema": 400,
        "400 window": 400,
        "400 not json": 400,
        "401 no key": 401,
        "401 bad key": 401,
        "403 scope": 403,
        "403 bound user": 403,
        "409": 409,
        "413": 413,
        "415": 415,
        "429": 429,
    }
    for (route, name), response in answers.items():
        assert response.status_code == expected[name], (name, response.text)
        conforms(route, response)
        assert response.json()["error"], name
    assert isinstance(answers[("/rank", "400 schema")].json()["detail"], list)
    assert answers[("/events", "400 window")].json()["detail"][0]["loc"] == [0, "timestamp"]
    assert int(answers[("/rank", "429")].headers["retry-after"]) >= 1
    assert answers[("/rank", "401 no key")].headers["www-authenticate"].startswith("Bearer")
