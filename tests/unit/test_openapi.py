"""openapi.yaml is a valid OpenAPI document that describes exactly the template's routes, with
the same input rules comfy_core enforces, and the function serves it (as generated JSON)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
import yaml

from comfy_core import validation
from devtools import openapi as generator
from tests.support.handlers import ROOT, event, invoke
from tests.support.sam import api_routes, load_template

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
DOCS_PAGES = {("GET", "/api/docs"), ("GET", "/api/docs/{asset}")}  # Swagger UI, open by design


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))


def template_routes() -> set[tuple[str, str]]:
    return {(method, path) for method, path, _ in api_routes(load_template())}


def spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item
            if method in HTTP_METHODS}


def test_spec_is_valid_openapi(spec: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(spec)


def test_spec_routes_are_exactly_the_template_routes(spec: dict[str, Any]) -> None:
    assert spec_routes(spec) == template_routes()


def test_served_json_is_generated_from_the_yaml(spec: dict[str, Any]) -> None:
    served = json.loads(generator.TARGET.read_text(encoding="utf-8"))
    assert served == spec, "functions/openapi/openapi.json is stale: run python -m devtools.openapi"
    assert generator.main(["--check"]) == 0


def test_handler_serves_the_document(spec: dict[str, Any]) -> None:
    status, body = invoke("openapi", event("openapi"))  # asserts Content-Type: application/json
    assert status == 200
    assert body == spec


def test_every_operation_requires_the_api_key_but_the_docs_pages(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["api_key"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    assert spec["security"] == [{"api_key": []}]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = set(operation["responses"])
            if (method.upper(), path) in DOCS_PAGES:  # a browser opening a page sends no key
                assert operation["security"] == [] and {"200", "429", "500"} <= responses, (method, path)
                continue
            assert "security" not in operation, (method, path)  # the global requirement applies
            responses = set(operation["responses"])
            assert responses & {"200", "201"} and {"403", "429", "500"} <= responses, (method, path)


def test_the_open_operations_are_the_template_s_open_routes(spec: dict[str, Any]) -> None:
    body = load_template()["Resources"]["ComfyApi"]["Properties"]["DefinitionBody"]
    open_in_template = {(method.upper(), path) for path, ops in body["paths"].items()
                        for method, op in ops.items() if op["security"] == []}
    open_in_spec = {(method.upper(), path) for path, item in spec["paths"].items()
                    for method, op in item.items() if op.get("security") == []}
    assert open_in_template == open_in_spec == DOCS_PAGES


def test_docs_assets_are_the_files_the_function_serves(spec: dict[str, Any]) -> None:
    from functions.docs import app

    (asset,) = spec["paths"]["/api/docs/{asset}"]["get"]["parameters"]
    assert set(asset["schema"]["enum"]) == set(app.ASSETS)


# -- the documented input rules are comfy_core's rules ------------------------------------------
def _schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    parameter = spec["components"]["parameters"][name]["schema"]
    # Resolve the one $ref a parameter may use, against the document's components.
    return {**parameter, "components": spec["components"]}


NAMES = ["a", "A9", "empty_save", "v1.5-x_y", "x" * 128, "x" * 129, "", ".hidden", "-x", "_x", "a..b",
         "a/b", "a b", "é", "a\n", "a.b.c", "a%2F"]
PROMPT_IDS = ["a", "6c0e5d7e-1111-4222-8333-944445555666", "A_b-9", "x" * 128, "x" * 129, "", "-a",
              "_a", "a.b", "a/b", "é", "a\n", "😀"]


def _valid(schema: dict[str, Any], value: str) -> bool:
    # jsonschema_rs (schemathesis's validator) follows ECMA-262: `$` is the end of the string.
    # Python's `re`, and so the `jsonschema` package, would also accept a trailing newline.
    return jsonschema_rs.Draft202012Validator(schema).is_valid(value)


@pytest.mark.parametrize("name", NAMES)
def test_workflow_name_rule_matches_validation(spec: dict[str, Any], name: str) -> None:
    assert _valid(_schema(spec, "WorkflowName"), name) == validation.is_workflow_name(name)


@pytest.mark.parametrize("prompt_id", PROMPT_IDS)
def test_prompt_id_rule_matches_validation(spec: dict[str, Any], prompt_id: str) -> None:
    expected = bool(prompt_id) and validation.PROMPT_ID.fullmatch(prompt_id) is not None
    assert _valid(_schema(spec, "PromptId"), prompt_id) == expected


def test_patterns_are_the_validation_regexes(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["WorkflowName"]["pattern"] == f"^{validation.WORKFLOW_NAME.pattern}$"
    prompt_id = spec["components"]["parameters"]["PromptId"]["schema"]
    assert prompt_id["pattern"] == f"^{validation.PROMPT_ID.pattern}$"
    assert re.compile(schemas["WorkflowName"]["not"]["pattern"]).search("a..b")


def test_simple_request_lists_exactly_the_patcher_keys(spec: dict[str, Any]) -> None:
    from comfy_core.workflows import inputs, patcher

    schemas = spec["components"]["schemas"]
    simple = set(schemas["SimpleRequest"]["properties"])
    assert simple == set(patcher.SIMPLE_KEYS | patcher.REQUEST_KEYS | set(inputs.SIMPLE_KEYS))
    not_node_ids = set(schemas["AdvancedRequest"]["propertyNames"]["not"]["enum"])
    assert not_node_ids == set(patcher.SIMPLE_KEYS) | set(inputs.SIMPLE_KEYS)
