"""The OpenAPI document tells the whole truth about error answers.

Routes document their own errors (`problem_responses`). The kit adds, on every operation, the
answers its middleware and handlers can give whatever the route does, and makes every error
answer `application/problem+json` with the `ProblemDocument` schema (FastAPI would document its
`HTTPValidationError` as `application/json`, which is not what the kit sends):

- 422 validation, 503 unavailable (shedding, pool exhausted, a downstream down);
- with a request body: 400 malformed JSON, 413 body over the cap;
- on an internal service, outside the open probe paths: 401/403 service credential;
- on the public app: 429 rate limited.

schemathesis checks the apps against this document (tests/fuzz), so it cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from servicekit.errors import PROBLEM_JSON, ProblemDocument

_REF = "#/components/schemas/ProblemDocument"
_DESCRIPTIONS = {
    "400": "Bad Request",
    "401": "Unauthorized",
    "403": "Forbidden",
    "413": "Payload Too Large",
    "422": "Unprocessable Content",
    "429": "Too Many Requests",
    "503": "Service Unavailable",
}
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _kit_statuses(
    path: str, operation: dict[str, Any], *, internal: bool, open_paths: frozenset[str]
) -> list[str]:
    statuses = ["422", "503"]
    if "requestBody" in operation:
        statuses += ["400", "413"]
    if internal and path not in open_paths:
        statuses += ["401", "403"]
    if not internal:
        statuses.append("429")
    return statuses


def document_problems(
    schema: dict[str, Any], *, internal: bool, open_paths: Iterable[str] = ()
) -> dict[str, Any]:
    """Add the kit's error answers to every operation of `schema` and make them problem+json."""
    opened = frozenset(open_paths)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status in _kit_statuses(path, operation, internal=internal, open_paths=opened):
                responses.setdefault(status, {"description": _DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status[:1] in ("4", "5"):
                    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": _REF}}}
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["ProblemDocument"] = ProblemDocument.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    # Nothing refers to FastAPI's own validation models any more.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def install_openapi(app: FastAPI, *, internal: bool, open_paths: Iterable[str] = ()) -> None:
    """Make `app.openapi()` return the document with `document_problems` applied (cached)."""
    opened = frozenset(open_paths)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = document_problems(schema, internal=internal, open_paths=opened)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def required_header(
    name: str, *, pattern: str, max_length: int, description: str = ""
) -> dict[str, Any]:
    """`openapi_extra` documenting a required header that a dependency reads and checks itself.

    For headers whose absence the contract answers with 400 (FastAPI's own `Header()` would
    answer 422, and documenting it as optional would lie about what the route accepts).
    """
    schema = {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": pattern}
    parameter = {"name": name, "in": "header", "required": True, "schema": schema}
    if description:
        parameter["description"] = description
    return {"parameters": [parameter]}
