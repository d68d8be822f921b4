"""The OpenAPI document (issue 11): a valid OpenAPI 3.1 document that documents exactly the
routes the app registers, each with its least role."""

from __future__ import annotations

from openapi_spec_validator import validate

from gaffer.common.template import TEMPLATE_FIELDS
from gaffer.controller.http.app import route_modules
from gaffer.controller.http.openapi import document

METHODS = ("get", "put", "post", "delete", "patch")

ELSEWHERE: dict[tuple[str, str], str] = {}
"""Documented routes that another module registers (another branch of issue 11, until merged)."""


def registered() -> dict[tuple[str, str], object]:
    return {(route.method, route.path): route for module in route_modules() for route in module.routes()}


def documented() -> dict[tuple[str, str], dict]:
    return {
        (method.upper(), path): operation
        for path, item in document()["paths"].items()
        for method, operation in item.items() if method in METHODS
    }


def test_the_document_is_valid_openapi_3_1():
    """openapi-spec-validator accepts the document as OpenAPI 3.1."""
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_registered_route_is_documented_and_every_documented_route_registered():
    """The document and the app's routes list the same method and path pairs (those of other
    modules not on this branch named in ELSEWHERE)."""
    routes = set(registered())
    docs = set(documented())
    assert routes - docs == set(), "registered but not documented"
    assert docs - routes - set(ELSEWHERE) == set(), "documented but not registered"
    assert routes & set(ELSEWHERE) == set(), "registered here now: drop them from ELSEWHERE"


def test_each_operation_states_the_role_of_its_route():
    """x-gaffer-role is the route's least role, and public routes need no token."""
    docs = documented()
    for key, route in registered().items():
        operation = docs[key]
        if route.public:
            assert operation["x-gaffer-role"] == "public" and operation["security"] == [], key
        else:
            assert operation["x-gaffer-role"] == route.role.label, key
            assert "security" not in operation, key


def test_every_operation_answers_problems_as_the_shared_problem_schema():
    """Every operation documents its errors as application/problem+json (a default at least),
    with one shared Problem schema."""
    doc = document()
    assert set(doc["components"]["schemas"]["Problem"]["required"]) >= {"type", "title", "status", "detail", "code"}
    for key, operation in documented().items():
        assert operation["responses"]["default"] == {"$ref": "#/components/responses/Problem"}, key
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer",
    }


def test_the_template_schema_names_every_template_field():
    """The TemplateSpec body lists exactly the fields a template has (a new field must be
    documented, or PUT would be documented to refuse it)."""
    spec = document()["components"]["schemas"]["TemplateSpec"]
    assert set(spec["properties"]) == set(TEMPLATE_FIELDS)
    assert spec["additionalProperties"] is False
