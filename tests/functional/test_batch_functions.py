"""The Batch API through the functions that serve it, as Lambda runs them: the invoke
function takes a multipart upload and creates the batch, the batch worker's schedule answers
it, the invoke function serves the output file. Files in S3 (moto's server over HTTP, the
same boto3 calls as AWS), so every S3 and KMS call is checked against the two roles in
template.yaml (tests/iam); test_artifact.py runs the same through the artifact that ships."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from tests.functional.conftest import EVENTS
from tests.lambdas import context_for, handler_for

BOUNDARY = "maasboundary7MA4YWxkTrZu0gW"
TEMPLATE = json.loads(next(p for p in EVENTS if p.name == "own_keys.json").read_text())
LINES = [{"custom_id": "a", "method": "POST", "url": "/v1/embeddings",
          "body": {"model": "all-MiniLM-L6-v2", "input": "the first line"}},
         {"custom_id": "b", "method": "POST", "url": "/v1/embeddings",
          "body": {"model": "all-MiniLM-L6-v2", "input": ["two", "inputs"]}}]


def api_event(method: str, path: str, *, body: str | None = None, content_type: str | None = None) -> dict[str, Any]:
    """The recorded tenant event (its example key), as API Gateway would send this request."""
    event = copy.deepcopy(TEMPLATE)
    event.update({"httpMethod": method, "path": path, "resource": path, "body": body, "isBase64Encoded": False})
    event["requestContext"] = {**event["requestContext"], "httpMethod": method, "resourcePath": path,
                               "path": "/dev" + path, "requestId": f"req-{method}-{path}"}
    if content_type:
        event["headers"] = {**event["headers"], "Content-Type": content_type}
        event["multiValueHeaders"] = {**event["multiValueHeaders"], "Content-Type": [content_type]}
    return event


def multipart(lines: list[dict[str, Any]]) -> str:
    content = "".join(json.dumps(line) + "\n" for line in lines)
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n{content}\r\n--{BOUNDARY}--\r\n")


def run_a_batch(invoke: Callable[..., dict[str, Any]], worker: Callable[..., dict[str, Any]]) -> None:
    """Upload, create, work, read: what a tenant's OpenAI client and the schedule do."""
    uploaded = invoke(api_event("POST", "/v1/files", body=multipart(LINES),
                                content_type=f"multipart/form-data; boundary={BOUNDARY}"), context_for("invoke"))
    assert uploaded["statusCode"] == 200, uploaded["body"]
    file_id = json.loads(uploaded["body"])["id"]
    created = invoke(api_event("POST", "/v1/batches", body=json.dumps(
        {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"})), context_for("invoke"))
    assert created["statusCode"] == 200, created["body"]
    batch_id = json.loads(created["body"])["id"]

    scheduled = json.loads(next(p for p in EVENTS if p.parent.name == "batch_worker").read_text())
    assert worker(scheduled, context_for("batch_worker"))["passes"] >= 1

    read = invoke(api_event("GET", f"/v1/batches/{batch_id}"), context_for("invoke"))
    batch = json.loads(read["body"])
    assert (batch["status"], batch["request_counts"]) == ("completed", {"total": 2, "completed": 2, "failed": 0})
    content = invoke(api_event("GET", f"/v1/files/{batch['output_file_id']}/content"), context_for("invoke"))
    assert content["statusCode"] == 200 and content["multiValueHeaders"]["Content-Type"] == ["application/jsonl"]
    answers = {a["custom_id"]: a["response"] for a in map(json.loads, content["body"].splitlines())}
    assert [len(answers[c]["body"]["data"]) for c in ("a", "b")] == [1, 2]
    assert all(len(d["embedding"]) == 384 for a in answers.values() for d in a["body"]["data"])
    deleted = invoke(api_event("DELETE", f"/v1/files/{file_id}"), context_for("invoke"))
    assert json.loads(deleted["body"]) == {"id": file_id, "object": "file", "deleted": True}
    gone = invoke(api_event("GET", f"/v1/files/{file_id}"), context_for("invoke"))
    assert gone["statusCode"] == 404


def test_a_batch_through_the_functions_with_its_files_in_s3(seeded, files_in_s3):  # type: ignore[no-untyped-def]
    run_a_batch(handler_for("invoke"), handler_for("batch_worker"))


def test_a_bad_upload_is_a_400_naming_its_line(seeded, files_in_s3):  # type: ignore[no-untyped-def]
    invoke = handler_for("invoke")
    bad = invoke(api_event("POST", "/v1/files", body=multipart([LINES[0], {"custom_id": "x"}]),
                           content_type=f"multipart/form-data; boundary={BOUNDARY}"), context_for("invoke"))
    assert bad["statusCode"] == 400 and "Line 2" in json.loads(bad["body"])["error"]["message"]
    not_form = invoke(api_event("POST", "/v1/files", body="{}", content_type="application/json"), context_for("invoke"))
    assert not_form["statusCode"] == 400 and json.loads(not_form["body"])["error"]["param"] == "Content-Type"
