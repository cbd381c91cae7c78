"""gateway/openapi.yaml: a valid OpenAPI 3 document of exactly the routes template.yaml
declares and the handlers register, with every request body equal to its pydantic model."""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_spec_validator import validate

from gateway import openapi
from gateway.models.api import CreateKey, CreateTenant, EmbeddingsRequest, RotateKey, UpdateTenant
from gateway.models.batches import CreateBatchRequest
from gateway.models.webhooks import CreateWebhook
from infra.local.template import load_template
from tests.routes import handler_routes

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {"InvokeFunction": "invoke", "BillingFunction": "billing", "ReportsFunction": "reports"}


# The console serves static files, not API operations: it is not in the OpenAPI document.
STATIC_FUNCTIONS = {"ConsoleFunction"}


def template_routes() -> set[tuple[str, str]]:
    routes = set()
    for name, resource in load_template()["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function" or name in STATIC_FUNCTIONS:
            continue
        for event in (resource["Properties"].get("Events") or {}).values():
            if event.get("Type") == "Api":
                routes.add((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    return routes


def test_document_is_valid_openapi_3():
    validate(openapi.document())
    assert openapi.document()["openapi"].startswith("3.")


def test_operations_equal_template_routes():
    # GIVEN the document and template.yaml WHEN their routes are compared THEN they are one set
    assert openapi.operations() == template_routes()


def test_operations_equal_handler_routes():
    registered = set().union(*(handler_routes(folder) for folder in FUNCTIONS.values()))
    assert openapi.operations() == registered


def test_every_operation_has_an_id_and_documents_its_errors():
    doc = openapi.document()
    ids = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in openapi.HTTP_METHODS:
                continue
            ids.append(operation["operationId"])
            responses = operation["responses"]
            assert any(code.startswith("2") for code in responses), (method, path)
            if operation.get("security") != []:
                assert {"401", "403"} <= set(responses), (method, path)
            for code, response in responses.items():
                if code.startswith(("4", "5")) and path != "/health":  # /health's 503 is its report
                    ref = response["$ref"]
                    schema = doc["components"]["responses"][ref.rsplit("/", 1)[1]]["content"]["application/json"]
                    assert schema["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, code)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("schema_name, model", [
    ("EmbeddingsRequest", EmbeddingsRequest),
    ("CreateTenant", CreateTenant),
    ("UpdateTenant", UpdateTenant),
    ("CreateKey", CreateKey),
    ("RotateKey", RotateKey),
    ("CreateWebhook", CreateWebhook),
    ("CreateBatch", CreateBatchRequest),
])
def test_request_schemas_name_exactly_the_models_fields(schema_name, model):
    schema = openapi.document()["components"]["schemas"][schema_name]
    assert set(schema["properties"]) == set(model.model_fields)
    assert set(schema.get("required", [])) == {n for n, f in model.model_fields.items() if f.is_required()}
    assert schema["additionalProperties"] is False  # the models forbid unknown fields


def test_paths_use_template_parameter_names():
    for path, item in openapi.document()["paths"].items():
        names = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        declared = set()
        for parameter in item.get("parameters", []):
            ref = parameter["$ref"].rsplit("/", 1)[1]
            declared.add(openapi.document()["components"]["parameters"][ref]["name"])
        assert names == declared, path
